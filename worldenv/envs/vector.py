"""WorldVectorEnv: B worlds in one process, one batched model call and one batched kernel call per step."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldenv.envs.tasks import Task
from worldenv.envs.world import World, WorldConfig

__all__ = ["WorldVectorEnv"]


class WorldVectorEnv(VectorEnv):
    """``num_envs`` worlds stepped together, natively batched.

    Each :meth:`step` makes one ``controls.apply``, one ``memory.render``, one
    ``WorldModel.step`` and one ``memory.fuse`` call for all B streams (oracle
    dynamics: one ``render_batch`` per distinct scene). Streams are
    independent episodes: each has its own generator, scene, task and memory.

    Autoreset is ``AutoresetMode.SAME_STEP`` (``metadata["autoreset_mode"]``):
    when a stream's episode ends, the same ``step`` resets it and returns the
    new episode's first observation; the last observation and info of the ended
    episode are in ``info["final_obs"]`` (an object array) and
    ``info["final_info"]``, with the masks ``info["_final_obs"]`` and
    ``info["_final_info"]``.

    ``reset(seed=s)`` seeds stream ``i`` with ``s + i`` (``seed`` may also be a
    list of B seeds), so stream ``i`` replays ``WorldEnv``'s episode of seed
    ``s + i`` up to the model noise, which is drawn for the whole batch.

    Args:
        num_envs: B.
        render_mode: ``"rgb_array"`` (a list of B frames) or None.
        **kwargs: :class:`~worldenv.envs.world_env.WorldEnv`'s arguments.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        scene: Any = None,
        dynamics: str = "model",
        controls: Any = None,
        obs_size: int = 128,
        task: str | type[Task] = "free",
        checkpoint: Any = "default",
        device: str = "auto",
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Expect `render_mode` to be 'rgb_array' or None, actually: {render_mode!r}")
        for name in ("task_options", "scene_options", "controls_options"):
            kwargs[name] = dict(kwargs.get(name) or {})
        unknown = set(kwargs) - set(WorldConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"Expect WorldEnv arguments, actually: unknown {sorted(unknown)}")
        self.config = WorldConfig(
            task=task, scene=scene, dynamics=dynamics, controls=controls, obs_size=obs_size,
            checkpoint=checkpoint, device=device, **kwargs,
        )
        self.world = World(self.config, num_envs=num_envs)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.world.observation_space
        self.single_action_space = self.world.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] | None = None

    def _seed(self, seed: int | list[int] | None) -> None:
        B = self.num_envs
        if seed is None:
            if self._rngs is None:
                root = np.random.SeedSequence()
                self._rngs = [np.random.default_rng(s) for s in root.spawn(B)]
            return
        if isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(B)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != B:
                raise ValueError(f"Expect `seed` to be an int or {B} ints, actually: {len(seeds)} seeds")
        self._rngs = [np.random.default_rng(s) for s in seeds]

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every stream (or those of ``options["reset_mask"]``, a (B,) bool array)."""
        self._seed(seed)
        assert self._rngs is not None
        mask = None if options is None else options.get("reset_mask")
        obs, infos = self.world.reset(self._rngs, mask=mask, reseed=mask is None)
        return obs, self._merge(infos, mask)

    def _merge(self, infos: list[dict[str, Any]], mask: np.ndarray | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, info in enumerate(infos):
            if mask is None or mask[i]:
                out = self._add_info(out, info, i)
        return out

    def step_streams(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any] | None]]:
        """:meth:`step` with per-stream infos: ``(obs, reward, terminated, truncated, infos, finals)``.

        ``infos[i]`` is stream i's info (of the new episode when it was reset);
        ``finals[i]`` is ``{"obs": ..., "info": ...}`` of the episode that ended, or None.
        """
        obs, reward, terminated, truncated, infos = self.world.step(actions)
        done = terminated | truncated
        finals: list[dict[str, Any] | None] = [None] * self.num_envs
        if done.any():
            assert self._rngs is not None
            for i in np.flatnonzero(done):
                finals[i] = {"obs": {k: v[i].copy() for k, v in obs.items()}, "info": infos[i]}
            obs, new_infos = self.world.reset(self._rngs, mask=done, reseed=False)
            for i in np.flatnonzero(done):
                infos[i] = new_infos[i]
        return obs, reward, terminated, truncated, infos, finals

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all B streams (actions: a batch from ``action_space``); ended episodes reset in the same step."""
        obs, reward, terminated, truncated, infos, finals = self.step_streams(actions)
        out: dict[str, Any] = {}
        for i, fin in enumerate(finals):
            if fin is not None:
                out = self._add_info(out, {"final_obs": fin["obs"], "final_info": fin["info"]}, i)
        for i, info in enumerate(infos):
            out = self._add_info(out, info, i)
        return obs, reward, terminated, truncated, out

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The last frame of every stream (``rgb_array``)."""
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.world.frames.copy())

    def get_state(self) -> dict[str, Any]:
        """A snapshot of all streams (memory, model cache, poses, tasks, generators)."""
        assert self._rngs is not None, "reset first"
        return {"world": self.world.get_state(), "rngs": [r.bit_generator.state for r in self._rngs]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Return to a :meth:`get_state` snapshot."""
        self.world.set_state(state["world"])
        self._seed(None)
        assert self._rngs is not None
        for r, s in zip(self._rngs, state["rngs"]):
            r.bit_generator.state = s

