"""The batched engine behind :class:`WorldEnv` and :class:`WorldVectorEnv`: B worlds stepped together.

One :meth:`World.step`, as data flows (ARCHITECTURE.md, "One step")::

    actions ──controls.apply (B at once)──> c2w_t           (blocked moves keep the position)
    c2w_t ──memory.render (one kernel call)──> warp rgb, depth, mask
    dynamics "model":  world_model.step(warp, c2w_t)  (one batched call)  -> frame
             "warp":   the warp itself, holes left black
             "oracle": scene.render_batch per scene                     -> frame
    frame ──memory.fuse (one kernel call)──> memory
    c2w_t, frame ──task (per stream)──> obs, reward, terminated, truncated, info

Collisions come from the scene's occupancy map where it has one (the agent
is a cylinder of ``scene.agent_radius``); otherwise from the last frame's
depth (what entered the memory at the current pose): the move is blocked when
a point between knee and head height lies within the agent radius of the
straight path.

Every random choice comes from one ``numpy.random.Generator`` per stream
(the env's ``np_random``) and one ``torch.Generator`` for the model's noise,
seeded from those at reset; on CPU the same seed gives bit-identical episodes.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldenv.controls import Controls, heading_frame, make_controls
from worldenv.envs.tasks import Frame, Task, make_task, task_class

__all__ = ["WorldConfig", "World", "DYNAMICS", "load_scene_cached", "resolve_device"]

DYNAMICS = ("model", "warp", "oracle")
PROCEDURAL = ("rooms", "street")
STAGES = ("controls", "collide", "render", "model", "oracle", "fuse", "task")

_SCENE_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
SCENE_CACHE_SIZE = 16


def load_scene_cached(spec: str, seed: int, options: dict[str, Any] | None = None) -> Any:
    """``worldenv.scenes.load_scene`` with a small LRU cache keyed by (spec, seed, options).

    Building a procedural scene takes seconds; episodes that draw the same
    seed share one (scenes are immutable after construction).
    """
    from worldenv.scenes import load_scene

    key = (spec, int(seed), tuple(sorted((options or {}).items())))
    if key in _SCENE_CACHE:
        _SCENE_CACHE.move_to_end(key)
        return _SCENE_CACHE[key]
    scene = load_scene(spec, seed=int(seed), **(options or {}))
    _SCENE_CACHE[key] = scene
    while len(_SCENE_CACHE) > SCENE_CACHE_SIZE:
        _SCENE_CACHE.popitem(last=False)
    return scene


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class WorldConfig:
    """Everything that fixes an environment (the env's constructor arguments).

    Attributes:
        task: Task name (``pointnav``, ``imagenav``, ``explore``, ``replay``, ``free``) or a Task subclass.
        task_options: Arguments of the task's constructor.
        scene: A spec for ``load_scene`` or a built ``Scene``; None for the task's default.
            Procedural specs (``rooms``, ``street``) draw a new scene per episode from the reset seed.
        scene_options: Options of ``load_scene`` (the family's config fields).
        scene_pool: Procedural scenes: draw the scene seed from ``[0, scene_pool)``; None draws from 2**31 seeds
            (a new world every episode, at a few seconds per build).
        dynamics: ``"model"``, ``"warp"`` or ``"oracle"``.
        controls: ``"discrete"``, ``"continuous"``, ``"pose"`` or a Controls; None for the task's default.
        controls_options: Overrides of the controls' config.
        obs_size: Side of the square observations in pixels.
        fov_deg: Horizontal field of view of the camera (scenes with ground truth).
        checkpoint: World model: ``"default"``, a checkpoint path, or a ``WorldModel`` instance.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        depth: Add a ``depth`` observation (H, W, 1) float32 metres.
        pose: Add a ``pose`` observation: the camera-to-world (4, 4) float32.
        max_episode_steps: Truncate episodes after this many steps; None for the task's default.
        memory_capacity: Points per stream in the spatial memory.
        voxel_size: Memory voxel edge in metres.
        memory_update: How the model's frames enter the memory: ``"holes"`` (only pixels the warp
            left empty: surfaces keep their first observation, see
            :meth:`~worldenv.memory.SpatialMemory.fuse_generated`) or ``"all"`` (every pixel).
        collisions: Block moves into obstacles (not for pose controls or open-loop replay).
        depth_max: Bound of the depth observation in metres (values beyond are clipped).
        timings: Put ``timings`` (milliseconds per stage of the step) in ``info``. Off by default because
            wall-clock values differ run to run, and Gymnasium's checker requires identical infos for
            identical seeds; :attr:`World.timings` always holds the last step's.
    """

    task: str | type[Task] = "free"
    task_options: dict[str, Any] = field(default_factory=dict)
    scene: Any = None
    scene_options: dict[str, Any] = field(default_factory=dict)
    scene_pool: int | None = None
    dynamics: str = "model"
    controls: str | Controls | None = None
    controls_options: dict[str, Any] = field(default_factory=dict)
    obs_size: int = 128
    fov_deg: float = 90.0
    checkpoint: Any = "default"
    device: str | torch.device = "auto"
    depth: bool = False
    pose: bool = False
    max_episode_steps: int | None = None
    memory_capacity: int = 2**19
    voxel_size: float = 0.02
    memory_update: str = "holes"
    collisions: bool = True
    depth_max: float = 100.0
    timings: bool = False

    def __post_init__(self) -> None:
        cls = task_class(self.task)
        if self.scene is None:
            self.scene = cls.default_scene
        if not isinstance(self.scene, str) and not hasattr(self.scene, "render_batch"):
            raise TypeError(f"Expect `scene` to be a spec string or a Scene, actually: {type(self.scene).__name__}")
        from worldenv.memory import MEMORY_UPDATES

        if self.memory_update not in MEMORY_UPDATES:
            raise ValueError(f"Expect `memory_update` to be one of {MEMORY_UPDATES}, actually: {self.memory_update!r}")
        if self.dynamics not in DYNAMICS:
            raise ValueError(f"Expect `dynamics` to be one of {DYNAMICS}, actually: {self.dynamics!r}")
        if isinstance(self.obs_size, bool) or not isinstance(self.obs_size, (int, np.integer)) or not 8 <= self.obs_size <= 2048:
            raise ValueError(f"Expect `obs_size` to be an int in [8, 2048], actually: {self.obs_size!r}")
        self.obs_size = int(self.obs_size)
        if not 1.0 <= float(self.fov_deg) <= 170.0:
            raise ValueError(f"Expect `fov_deg` in [1, 170], actually: {self.fov_deg}")
        if self.max_episode_steps is None:
            self.max_episode_steps = cls.max_episode_steps
        if isinstance(self.max_episode_steps, bool) or not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1:
            raise ValueError(f"Expect `max_episode_steps` to be positive, actually: {self.max_episode_steps}")
        if self.scene_pool is not None and (not isinstance(self.scene_pool, int) or self.scene_pool < 1):
            raise ValueError(f"Expect `scene_pool` to be a positive int or None, actually: {self.scene_pool!r}")
        if self.controls is None:
            self.controls = cls.default_controls
            self.controls_options = {**cls.default_controls_options, **self.controls_options}

    @property
    def size(self) -> tuple[int, int]:
        return (self.obs_size, self.obs_size)


def _load_model(checkpoint: Any, device: torch.device, size: tuple[int, int]) -> Any:
    from worldenv.model import WorldModel

    if isinstance(checkpoint, WorldModel):
        model = checkpoint.to(device).eval()
    else:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"Expect `checkpoint` to be 'default', a path or a WorldModel, actually: {type(checkpoint).__name__}")
        try:
            model = WorldModel.from_pretrained(checkpoint, device=device)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{e}\nNo world model checkpoint {os.fspath(checkpoint)!r}: pass `checkpoint=<path>`, or use "
                "dynamics='oracle' or 'warp', which need no model."
            ) from e
    have = (model.config.height, model.config.width)
    if have != size:
        raise ValueError(f"Expect `obs_size` {size[0]} to match the world model's frame size, actually: the model makes {have}")
    return model


class World:
    """B environment streams stepped together (batch first; the single env is B = 1).

    Args:
        config: The environment's configuration.
        num_envs: B.

    Attributes:
        observation_space: One stream's observation Dict.
        action_space: One stream's action space.
        frames: ``(B, H, W, 3)`` uint8, the last frame of every stream.
    """

    def __init__(self, config: WorldConfig, num_envs: int = 1) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"Expect `num_envs` to be a positive int, actually: {num_envs!r}")
        self.config = c = config
        self.num_envs = B = num_envs
        self.device = resolve_device(c.device)
        self.tasks: list[Task] = [make_task(c.task, c.task_options) for _ in range(B)]
        self.controls = make_controls(c.controls, **c.controls_options)
        from worldenv.controls import PoseControls

        self.open_loop = getattr(self.tasks[0], "mode", "") == "open_loop"
        self.collisions = c.collisions and not isinstance(self.controls, PoseControls) and not self.open_loop
        H, W = c.size
        obs: dict[str, spaces.Space[Any]] = {"rgb": spaces.Box(0, 255, (H, W, 3), np.uint8)}
        if c.depth:
            obs["depth"] = spaces.Box(0.0, c.depth_max, (H, W, 1), np.float32)
        if c.pose:
            obs["pose"] = spaces.Box(-1e6, 1e6, (4, 4), np.float32)
        obs.update(self.tasks[0].observation_spaces(c.size))
        for t in self.tasks[1:]:
            t.observation_spaces(c.size)
        self.observation_space = spaces.Dict(obs)
        self.action_space = self.controls.action_space
        self.model = _load_model(c.checkpoint, self.device, c.size) if c.dynamics == "model" else None
        from worldenv.memory import SpatialMemory

        self.memory = SpatialMemory(B, capacity=c.memory_capacity, voxel_size=c.voxel_size, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.scenes: list[Any] = [None] * B
        self.scene_seeds = np.full(B, -1, np.int64)
        self.c2w = np.tile(np.eye(4), (B, 1, 1))
        self.K = np.tile(np.eye(3), (B, 1, 1))
        self.frames = np.zeros((B, H, W, 3), np.uint8)
        self.depths = np.zeros((B, H, W), np.float32)
        self.steps = np.zeros(B, np.int64)
        self.ready = np.zeros(B, bool)
        self.timings = dict.fromkeys(STAGES, 0.0)
        self._views: dict[int, list[Any]] = {}

    # ------------------------------------------------------------------ scenes

    def _scene_for(self, rng: np.random.Generator) -> tuple[Any, int]:
        spec = self.config.scene
        if not isinstance(spec, str):
            return spec, int(getattr(spec, "seed", 0))
        family = spec.partition(":")[0]
        if family in PROCEDURAL:
            pool = self.config.scene_pool or 2**31
            seed = int(rng.integers(pool))
        else:
            seed = 0
        return load_scene_cached(spec, seed, self.config.scene_options), seed

    def _start_view(self, scene: Any, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb, depth, c2w, K)`` of the episode's first frame at (or, for captures, nearest to) ``c2w``."""
        size = self.config.size
        if scene.has_oracle:
            K = scene.default_intrinsics(size, self.config.fov_deg)
            rgb, depth = scene.render(c2w, K, size)
            return rgb, depth, c2w, K
        views = self._views.get(id(scene))
        if views is None:
            views = self._views[id(scene)] = scene.reference_views(size)
        pos = np.stack([v.c2w[:3, 3] for v in views])
        v = views[int(np.argmin(np.linalg.norm(pos - c2w[:3, 3], axis=1)))]
        return v.rgb, v.depth, v.c2w.copy(), v.K.copy()

    # ------------------------------------------------------------------ episodes

    def reset(
        self, rngs: list[np.random.Generator], mask: np.ndarray | None = None, reseed: bool = True
    ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Start new episodes in the streams of ``mask`` (all when None).

        Every reset stream draws, in this order, a seed for the model's noise,
        its scene, and its task's start, so that a stream of the vector env
        consumes its generator exactly as a single env does.

        Args:
            rngs: One generator per stream (B); only those of reset streams are used.
            mask: ``(B,)`` bool, streams to reset.
            reseed: Reseed the model's noise generator with the first reset stream's draw.

        Returns:
            Batched observations of all streams and one info dict per stream (empty for the others).
        """
        B = self.num_envs
        m = np.ones(B, bool) if mask is None else np.asarray(mask, bool)
        if m.shape != (B,):
            raise ValueError(f"Expect `mask` to have shape ({B},), actually: {m.shape}")
        idx = np.flatnonzero(m)
        noise_seeds = [int(rngs[b].integers(2**63 - 1)) for b in idx]
        if reseed and noise_seeds:
            self.generator.manual_seed(noise_seeds[0])
        for b in idx:
            scene, seed = self._scene_for(rngs[b])
            if self.config.dynamics == "oracle" and not scene.has_oracle:
                raise ValueError(
                    f"Expect a scene with ground truth for dynamics='oracle', actually: {scene!r} has none "
                    "(use dynamics='model' or 'warp')"
                )
            self.scenes[b], self.scene_seeds[b] = scene, seed
            start = self.tasks[b].reset(scene, rngs[b])
            rgb, depth, c2w, K = self._start_view(scene, start)
            self.frames[b], self.depths[b] = rgb, depth
            self.c2w[b], self.K[b] = c2w, K
            self.steps[b] = 0
        mt = torch.from_numpy(m).to(self.device)
        full = bool(m.all())
        rgb_t = torch.from_numpy(self.frames).to(self.device)
        depth_t = torch.from_numpy(self.depths).to(self.device)
        c2w_t = torch.from_numpy(self.c2w).to(self.device)
        K_t = torch.from_numpy(self.K).to(self.device)
        self.memory.reset(None if full else mt)
        self.memory.fuse(rgb_t, depth_t, c2w_t, K_t, None if full else mt)
        self.memory.set_anchor(depth_t, c2w_t, K_t, None if full else mt)
        if self.model is not None:
            first = self.model.num_streams != B
            self.model.reset(rgb_t, depth_t, c2w_t, K_t, None if (full or first) else mt)
        self.ready[idx] = True
        infos: list[dict[str, Any]] = [{} for _ in range(B)]
        for b in idx:
            f = Frame(self.c2w[b], self.K[b], self.frames[b], self.depths[b])
            self.tasks[b].begin(f)
            infos[b] = self._info(b, collided=False, metrics=self.tasks[b].metrics())
        return self._observe(), infos

    def _observe(self) -> dict[str, np.ndarray]:
        c = self.config
        obs: dict[str, list[np.ndarray] | np.ndarray] = {"rgb": self.frames.copy()}
        if c.depth:
            obs["depth"] = np.clip(self.depths, 0.0, c.depth_max)[..., None].astype(np.float32)
        if c.pose:
            obs["pose"] = self.c2w.astype(np.float32)
        per = [
            t.observe(Frame(self.c2w[b], self.K[b], self.frames[b], self.depths[b], step=int(self.steps[b])))
            for b, t in enumerate(self.tasks)
        ]
        for key in per[0]:
            obs[key] = np.stack([p[key] for p in per])
        return obs  # type: ignore[return-value]

    def _info(self, b: int, collided: bool, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "pose": self.c2w[b].copy(),
            "collided": bool(collided),
            "scene_seed": int(self.scene_seeds[b]),
            "episode_step": int(self.steps[b]),
            "memory_points": int(self.memory.pointmap.count[b]),
            **({"timings": dict(self.timings)} if self.config.timings else {}),
            **metrics,
        }

    # ------------------------------------------------------------------ stepping

    def check_actions(self, actions: Any) -> list[np.ndarray]:
        """Validate one action per stream (raises ``ValueError``/``TypeError`` naming the action)."""
        if not self.ready.all():
            from gymnasium.error import ResetNeeded

            raise ResetNeeded("Cannot call `step` before `reset`: call `reset()` first")
        if isinstance(actions, np.ndarray) and self.num_envs == 1 and actions.shape == self.action_space.shape:
            actions = actions[None]
        try:
            n = len(actions)
        except TypeError as e:
            raise TypeError(f"Expect `actions` to be a sequence of {self.num_envs} actions, actually: {type(actions).__name__}") from e
        if n != self.num_envs:
            raise ValueError(f"Expect one action per environment ({self.num_envs}), actually: {n}")
        return [self.controls.check_action(a) for a in actions]

    def _collide(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        B = self.num_envs
        hit = np.zeros(B, bool)
        if not self.collisions:
            return hit
        for b in range(B):
            p0, p1 = old[b, :3, 3], new[b, :3, 3]
            if np.allclose(p0, p1):
                continue
            scene = self.scenes[b]
            if scene.occupancy is not None:
                hit[b] = bool(scene.collide(p0, p1))
            else:
                hit[b] = self._depth_collide(b, p1 - p0)
        return hit

    def _depth_collide(self, b: int, move: np.ndarray) -> bool:
        """Whether a move ``(3,)`` (world) passes within the agent radius of a point in the last frame's depth."""
        scene = self.scenes[b]
        radius = float(getattr(scene, "agent_radius", 0.18))
        height = float(getattr(scene, "camera_height", 1.5))
        d = self.depths[b][::2, ::2].astype(np.float64)
        v, u = np.nonzero(d > 0)
        if v.size == 0:
            return False
        z, K = d[v, u], self.K[b]
        cam = np.stack([(u * 2 - K[0, 2]) / K[0, 0] * z, (v * 2 - K[1, 2]) / K[1, 1] * z, z], -1)
        H = heading_frame(self.c2w[b][None])[0]  # right, down, forward columns
        rel = cam @ (H.T @ self.c2w[b][:3, :3]).T  # (N, 3) in the level heading frame
        body = (rel[:, 1] > -0.3) & (rel[:, 1] < height - 0.3)  # above the floor, up to just over the head
        xz = rel[body][:, [0, 2]]
        m = np.array([move @ H[:, 0], move @ H[:, 2]])
        L2 = float(m @ m)
        if L2 == 0 or xz.size == 0:
            return False
        t = np.clip(xz @ m / L2, 0.0, 1.0)
        dist = np.linalg.norm(xz - t[:, None] * m, axis=1)
        return bool((dist < radius).any())

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every stream.

        Args:
            actions: One action per stream (a sequence or an array with a leading B).

        Returns:
            ``(obs, reward (B,) float64, terminated (B,) bool, truncated (B,) bool, infos)``.
        """
        t0 = time.perf_counter()
        acts = self.check_actions(actions)
        B = self.num_envs
        stops = np.array([self.controls.is_stop(a) for a in acts])
        old = self.c2w
        new, _ = self.controls.apply(old, acts)
        for b, task in enumerate(self.tasks):
            target = task.target_pose(int(self.steps[b]) + 1)
            if target is not None:
                new[b] = target
        t1 = time.perf_counter()
        collided = self._collide(old, new)
        new[collided, :3, 3] = old[collided, :3, 3]
        self.c2w = new
        self.steps += 1
        t2 = time.perf_counter()
        self._advance()
        t3 = time.perf_counter()
        rewards = np.zeros(B)
        terminated = np.zeros(B, bool)
        metrics: list[dict[str, Any]] = []
        for b, task in enumerate(self.tasks):
            f = Frame(self.c2w[b], self.K[b], self.frames[b], self.depths[b], bool(stops[b]), bool(collided[b]), int(self.steps[b]))
            r, term, met = task.step(f)
            rewards[b], terminated[b] = r, term
            metrics.append(met)
        truncated = (self.steps >= self.config.max_episode_steps) & ~terminated
        obs = self._observe()
        t4 = time.perf_counter()
        self.timings["controls"] = (t1 - t0) * 1e3
        self.timings["collide"] = (t2 - t1) * 1e3
        self.timings["task"] = (t4 - t3) * 1e3
        self.timings["total"] = (t4 - t0) * 1e3
        infos = [self._info(b, bool(collided[b]), metrics[b]) for b in range(B)]
        return obs, rewards, terminated, truncated, infos

    def _advance(self) -> None:
        """Make the frame of every stream at ``self.c2w`` and fuse it into the memory (the dynamics)."""
        c = self.config
        dev = self.device
        c2w_t = torch.from_numpy(self.c2w).to(dev)
        K_t = torch.from_numpy(self.K).to(dev)
        tm = self.timings
        for k in ("render", "model", "oracle", "fuse"):
            tm[k] = 0.0
        if c.dynamics == "oracle":
            t = time.perf_counter()
            for scene, idx in self._group_by_scene():
                rgb, depth = scene.render_batch(self.c2w[idx], self.K[idx], c.size)
                self.frames[idx], self.depths[idx] = rgb, depth
            tm["oracle"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            self.memory.fuse(torch.from_numpy(self.frames).to(dev), torch.from_numpy(self.depths).to(dev), c2w_t, K_t)
            tm["fuse"] = (time.perf_counter() - t) * 1e3
            return
        t = time.perf_counter()
        w_rgb, w_depth, w_mask = self.memory.render(c2w_t, K_t, c.size)  # (B, H, W, 3), (B, H, W), (B, H, W)
        tm["render"] = (time.perf_counter() - t) * 1e3
        if c.dynamics == "warp":
            # The memory only holds the reference frames: nothing new to fuse.
            self.frames[:] = _to_uint8(w_rgb)
            self.depths[:] = w_depth.cpu().numpy()
            return
        t = time.perf_counter()
        assert self.model is not None
        rgb, depth = self.model.step(w_rgb, w_depth, w_mask, c2w_t, self.generator)  # (B, H, W, 3), (B, H, W)
        tm["model"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        self.memory.fuse_generated(rgb, depth, c2w_t, K_t, w_mask, update=c.memory_update)
        self.frames[:] = _to_uint8(rgb)
        self.depths[:] = depth.cpu().numpy()
        tm["fuse"] = (time.perf_counter() - t) * 1e3

    def _group_by_scene(self) -> list[tuple[Any, np.ndarray]]:
        groups: dict[int, tuple[Any, list[int]]] = {}
        for b, s in enumerate(self.scenes):
            groups.setdefault(id(s), (s, []))[1].append(b)
        return [(s, np.array(ix)) for s, ix in groups.values()]

    # ------------------------------------------------------------------ snapshots

    def get_state(self) -> dict[str, Any]:
        """Everything an episode continues from: memory, model cache, poses, frames, tasks, the model's generator."""
        return {
            "c2w": self.c2w.copy(),
            "K": self.K.copy(),
            "frames": self.frames.copy(),
            "depths": self.depths.copy(),
            "steps": self.steps.copy(),
            "ready": self.ready.copy(),
            "scenes": list(self.scenes),
            "scene_seeds": self.scene_seeds.copy(),
            "tasks": [t.get_state() for t in self.tasks],
            "memory": self.memory.state_dict(),
            "model": self.model.snapshot() if self.model is not None and self.ready.all() else None,
            "generator": self.generator.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Return to a :meth:`get_state` of this world (same configuration and B)."""
        if not isinstance(state, dict) or "c2w" not in state:
            raise TypeError(f"Expect `state` to be a dict from get_state(), actually: {type(state).__name__}")
        if state["c2w"].shape[0] != self.num_envs:
            raise ValueError(f"Expect a state of {self.num_envs} environments, actually: {state['c2w'].shape[0]}")
        for k in ("c2w", "K", "frames", "depths", "steps", "ready", "scene_seeds"):
            setattr(self, k, state[k].copy())
        self.scenes = list(state["scenes"])
        for t, s, scene in zip(self.tasks, state["tasks"], self.scenes):
            t.set_state(s)
            t.scene = scene
        self.memory.load_state_dict(state["memory"])
        if self.model is not None and state["model"] is not None:
            self.model.restore(state["model"])
        self.generator.set_state(state["generator"])


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """Float ``(B, H, W, 3)`` in [0, 1] -> uint8 NumPy, rounded."""
    return (rgb.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()

