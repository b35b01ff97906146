"""Training clips: posed RGB-D frames with the warp + mask conditions inference sees.

A training clip is one reference view and ``T`` consecutive target frames of
an episode. For every target frame the condition is made exactly as the
environment makes it at inference: a :class:`~worldenv.memory.SpatialMemory`
seeded with the reference view and fused with every frame before the target
is rendered at the target's camera (:func:`memory_conditions`). During teacher
training those earlier frames are ground truth; the student's self-forcing
rollouts (``worldenv.train.student``) fuse its own generated frames instead.

Sources (``ClipConfig.source``):

- ``rooms`` / ``street``: procedural scenes rendered on the fly by the
  ground-truth renderer along trajectories of ``worldenv.scenes.trajectories``.
- ``shards:<dir>``: clips written by ``worldenv datagen`` (a window of each
  stored clip; frame 0 of the window is the reference).
- ``capture:<format>:<path>``: a captured posed RGB-D sequence read through the
  scene readers (windows of consecutive frames, resized to the model size).

**Split by scene seed.** Scene seeds below ``HELDOUT_SEED_START`` (1,000,000)
are training scenes; seeds ``>= HELDOUT_SEED_START`` are held out and used
only by ``worldenv eval``. Procedural training clips draw their seeds from
``[0, ClipConfig.num_scenes)`` (``num_scenes`` must stay below the held-out
start); shard clips whose ``scene_seed`` is held out are skipped.

Clips can be rendered once into a cache file (:func:`write_clip_cache`, a
NumPy ``.npz`` read with ``allow_pickle=False``) so that several training
stages reuse them without re-rendering.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldenv._io import atomic_write
from worldenv.memory import SpatialMemory

__all__ = [
    "HELDOUT_SEED_START",
    "ClipConfig",
    "Clip",
    "memory_conditions",
    "ClipMaker",
    "ClipCache",
    "write_clip_cache",
    "clip_batch",
    "is_heldout",
]

HELDOUT_SEED_START = 1_000_000
"""Scene seeds ``>=`` this are held out from training (used by evaluation only)."""


def is_heldout(seed: int) -> bool:
    """Whether scene ``seed`` belongs to the held-out split."""
    return int(seed) >= HELDOUT_SEED_START


@dataclass
class ClipConfig:
    """What a training clip is and where it comes from.

    Attributes:
        source: ``rooms``, ``street``, ``shards:<dir>`` or ``capture:<format>:<path>``.
        size: Square frame side in pixels (the model's height and width).
        frames: Target frames T per clip.
        max_offset: The clip's first target frame is drawn from ``[1, 1 + max_offset]``
            frames after the reference, so the memory the model sees has also
            been fused with up to ``max_offset`` earlier frames (as late in an episode).
        num_scenes: Procedural training scene seeds ``[0, num_scenes)``.
        scenes_cached: Procedural scenes kept built at once (building one costs about a second).
        clips_per_scene: Clips drawn from a cached scene before it is replaced.
        trajectory: Trajectory kind of ``worldenv.scenes.trajectories.make_trajectory``.
        fov_deg: Horizontal field of view of procedural clips.
        capacity: Point capacity of the spatial memory.
        voxel_size: Voxel edge of the spatial memory in metres.
    """

    source: str = "rooms"
    size: int = 128
    frames: int = 4
    max_offset: int = 12
    num_scenes: int = 4096
    scenes_cached: int = 4
    clips_per_scene: int = 8
    trajectory: str = "mix"
    fov_deg: float = 90.0
    capacity: int = 2**18
    voxel_size: float = 0.02

    def __post_init__(self) -> None:
        for name in ("size", "frames", "num_scenes", "scenes_cached", "clips_per_scene", "capacity"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Expect `{name}` to be a positive int, actually: {v!r}")
        if not isinstance(self.max_offset, int) or self.max_offset < 0:
            raise ValueError(f"Expect `max_offset` to be a non-negative int, actually: {self.max_offset!r}")
        if self.num_scenes > HELDOUT_SEED_START:
            raise ValueError(
                f"Expect `num_scenes` <= {HELDOUT_SEED_START} (seeds above are held out), actually: {self.num_scenes}"
            )
        family = self.source.partition(":")[0]
        if family not in ("rooms", "street", "shards", "capture"):
            raise ValueError(
                "Expect `source` to be 'rooms', 'street', 'shards:<dir>' or 'capture:<format>:<path>', "
                f"actually: {self.source!r}"
            )
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"Expect `fov_deg` in (0, 180), actually: {self.fov_deg}")
        if self.voxel_size <= 0:
            raise ValueError(f"Expect `voxel_size` > 0, actually: {self.voxel_size}")


@dataclass
class Clip:
    """One training clip (NumPy, public conventions).

    Attributes:
        ref_rgb: ``(H, W, 3)`` uint8 reference view.
        ref_depth: ``(H, W)`` float32 metres.
        ref_c2w: ``(4, 4)`` float64.
        K: ``(3, 3)`` float64 intrinsics of every frame.
        rgb: ``(T, H, W, 3)`` uint8 target frames.
        depth: ``(T, H, W)`` float32 metres.
        c2w: ``(T, 4, 4)`` float64.
        warp_rgb: ``(T, H, W, 3)`` uint8 memory render at each target camera.
        warp_depth: ``(T, H, W)`` float32.
        warp_mask: ``(T, H, W)`` bool.
        scene_seed: Seed of the scene (-1 when unknown, e.g. a capture).
    """

    ref_rgb: np.ndarray
    ref_depth: np.ndarray
    ref_c2w: np.ndarray
    K: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    warp_rgb: np.ndarray
    warp_depth: np.ndarray
    warp_mask: np.ndarray
    scene_seed: int = -1


def memory_conditions(
    rgb: np.ndarray,
    depth: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    targets: range,
    memory: SpatialMemory | None = None,
    capacity: int = 2**18,
    voxel_size: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp conditions of frames ``targets`` of a sequence, through the environment's memory path.

    Frame 0 is the reference: the memory is seeded with it; then for every
    ``i`` in ``1 .. max(targets)`` the memory is rendered at ``c2w[i]`` (kept
    when ``i`` is a target) and frame ``i`` is fused, so the condition of
    frame ``i`` sees frames ``0 .. i-1`` only.

    Args:
        rgb: ``(L, H, W, 3)`` uint8 frames (frame 0 the reference).
        depth: ``(L, H, W)`` float32 metres.
        c2w: ``(L, 4, 4)`` float64.
        K: ``(3, 3)`` float64 intrinsics.
        targets: Consecutive frame indices ``>= 1``.
        memory: A batch-1 memory to use (it is reset); a fresh one when None.
        capacity: Capacity of a fresh memory.
        voxel_size: Voxel edge of a fresh memory.

    Returns:
        ``warp_rgb`` ``(T, H, W, 3)`` uint8, ``warp_depth`` ``(T, H, W)`` float32, ``warp_mask`` ``(T, H, W)`` bool.
    """
    if len(targets) == 0 or targets.start < 1 or targets.step != 1 or targets.stop > rgb.shape[0]:
        raise ValueError(f"Expect consecutive targets within [1, {rgb.shape[0]}), actually: {targets}")
    H, W = rgb.shape[1:3]
    if memory is None:
        memory = SpatialMemory(1, capacity=capacity, voxel_size=voxel_size)
    memory.reset()
    Kt = torch.from_numpy(np.asarray(K, np.float64))[None]  # (1, 3, 3)
    out_rgb = np.zeros((len(targets), H, W, 3), np.uint8)
    out_depth = np.zeros((len(targets), H, W), np.float32)
    out_mask = np.zeros((len(targets), H, W), bool)
    for i in range(targets.stop):
        pose = torch.from_numpy(np.asarray(c2w[i], np.float64))[None]  # (1, 4, 4)
        if i in targets:
            wr, wd, wm = memory.render(pose, Kt, (H, W))
            j = i - targets.start
            # Rounded to uint8 like a frame, so cached and on-the-fly conditions are the same values.
            out_rgb[j] = (wr[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
            out_depth[j] = wd[0].numpy()
            out_mask[j] = wm[0].numpy()
        if i + 1 < targets.stop:  # the last target's own frame is never needed
            memory.fuse(torch.from_numpy(rgb[i])[None], torch.from_numpy(depth[i])[None], pose, Kt)
    return out_rgb, out_depth, out_mask


def _resize_frames(
    rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre-crop to square and resize captured frames: area for RGB, nearest for depth (no mixed depths)."""
    L, H, W = depth.shape
    s = min(H, W)
    y0, x0 = (H - s) // 2, (W - s) // 2
    rgb, depth = rgb[:, y0 : y0 + s, x0 : x0 + s], depth[:, y0 : y0 + s, x0 : x0 + s]
    K = np.array(K, np.float64)
    K[0, 2] -= x0
    K[1, 2] -= y0
    if s != size:
        r = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()  # (L, 3, s, s)
        rgb = F.interpolate(r, size=(size, size), mode="area").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        d = torch.from_numpy(np.ascontiguousarray(depth))[:, None]
        depth = F.interpolate(d, size=(size, size), mode="nearest")[:, 0].numpy()
        scale = size / s
        # OpenCV centres: pixel i covers [i - 0.5, i + 0.5]; rescaling keeps the image edges fixed.
        K[:2] *= scale
        K[:2, 2] += 0.5 * scale - 0.5
    return np.ascontiguousarray(rgb), np.ascontiguousarray(depth, dtype=np.float32), K


class ClipMaker:
    """Draws training clips from a source (see the module docstring).

    Args:
        config: The clip definition.
        seed: Seed of every random choice (scene seeds, trajectories, windows).
        rank: Process rank; with ``world_size`` it strides the scene seeds so
            DDP replicas see different scenes.
        world_size: Number of processes.
    """

    def __init__(self, config: ClipConfig, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.config = config
        self.rng = np.random.default_rng([seed, rank])
        self.rank, self.world_size = rank, world_size
        self.memory = SpatialMemory(1, capacity=config.capacity, voxel_size=config.voxel_size)
        self._scenes: list[list] = []  # [scene, clips drawn]
        family, _, rest = config.source.partition(":")
        self._family = family
        self._sequences: list | None = None
        if family == "shards":
            from worldenv.scenes.shards import ShardDataset

            ds = ShardDataset(rest)
            self._shards = ds
            self._shard_ids = [i for i in range(len(ds)) if not is_heldout(ds.clip(i).scene_seed)]
            if len(self._shard_ids) == 0:
                raise ValueError(f"Expect training (non-held-out) clips in {rest}, actually: none")
        elif family == "capture":
            from worldenv.scenes import load_scene

            scene = load_scene(config.source)
            views = list(scene.frames)
            rgb = np.stack([v.rgb for v in views])
            depth = np.stack([v.depth for v in views]).astype(np.float32)
            rgb, depth, K = _resize_frames(rgb, depth, views[0].K, config.size)
            self._sequences = [(rgb, depth, np.stack([v.c2w for v in views]), K, -1)]

    # ------------------------------------------------------------------ sources

    def _procedural_scene(self):  # type: ignore[no-untyped-def]
        from worldenv.scenes import load_scene

        cfg = self.config
        live = [s for s in self._scenes if s[1] < cfg.clips_per_scene]
        if len(live) < cfg.scenes_cached:
            per_rank = max(1, cfg.num_scenes // self.world_size)
            seed = int(self.rng.integers(per_rank)) * self.world_size + self.rank
            seed = min(seed, cfg.num_scenes - 1)
            live.append([load_scene(cfg.source, seed=seed), 0])
        self._scenes = live
        entry = live[int(self.rng.integers(len(live)))]
        entry[1] += 1
        return entry[0]

    def _procedural_sequence(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        from worldenv.scenes.trajectories import make_trajectory

        cfg = self.config
        scene = self._procedural_scene()
        K = scene.default_intrinsics(cfg.size, fov_deg=cfg.fov_deg)
        _, c2w = make_trajectory(cfg.trajectory, scene, length, self.rng)
        rgb, depth = scene.render_batch(c2w, np.repeat(K[None], length, 0), cfg.size)
        return rgb, depth.astype(np.float32), c2w, K, int(scene.seed)

    def _stored_sequence(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        if self._family == "shards":
            c = self._shards.clip(self._shard_ids[int(self.rng.integers(len(self._shard_ids)))])
            rgb, depth, K = _resize_frames(c.rgb, c.depth.astype(np.float32), c.K[0], self.config.size)
            seq = (rgb, depth, c.c2w, K, c.scene_seed)
        else:
            assert self._sequences is not None
            seq = self._sequences[int(self.rng.integers(len(self._sequences)))]
        n = seq[0].shape[0]
        if n < 2:
            raise ValueError(f"Expect sequences of at least 2 frames, actually: {n}")
        length = min(length, n)
        a = int(self.rng.integers(n - length + 1))
        return seq[0][a : a + length], seq[1][a : a + length], seq[2][a : a + length], seq[3], seq[4]

    # ------------------------------------------------------------------ clips

    def make(self) -> Clip:
        """Draw one clip."""
        cfg = self.config
        offset = int(self.rng.integers(cfg.max_offset + 1))
        length = 1 + offset + cfg.frames
        if self._family in ("rooms", "street"):
            rgb, depth, c2w, K, seed = self._procedural_sequence(length)
        else:
            rgb, depth, c2w, K, seed = self._stored_sequence(length)
            offset = max(0, min(offset, rgb.shape[0] - 1 - cfg.frames))
        T = min(cfg.frames, rgb.shape[0] - 1 - offset)
        targets = range(1 + offset, 1 + offset + T)
        wr, wd, wm = memory_conditions(rgb, depth, c2w, K, targets, memory=self.memory)
        sl = slice(targets.start, targets.stop)
        return Clip(rgb[0], depth[0], c2w[0], K, rgb[sl], depth[sl], c2w[sl], wr, wd, wm, seed)

    def __iter__(self) -> Iterator[Clip]:
        while True:
            yield self.make()


# ----------------------------------------------------------------------------- cache

_CACHE_KEYS = ("ref_rgb", "ref_depth", "ref_c2w", "K", "rgb", "depth", "c2w", "warp_rgb", "warp_depth", "warp_mask")


def write_clip_cache(path: str | os.PathLike[str], clips: list[Clip]) -> Path:
    """Write clips (all with the same T) to one ``.npz`` atomically.

    Args:
        path: Destination ``.npz``.
        clips: The clips.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.stack([getattr(c, k) for c in clips]) for k in _CACHE_KEYS}
    arrays["depth"] = arrays["depth"].astype(np.float16)  # halves the file; 1 mm steps near, fine for 128^2 training
    arrays["warp_depth"] = arrays["warp_depth"].astype(np.float16)
    arrays["ref_depth"] = arrays["ref_depth"].astype(np.float16)
    arrays["scene_seed"] = np.array([c.scene_seed for c in clips], np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a handle: np.savez would append ".npz" to the temporary name
            np.savez(f, **arrays)

    return atomic_write(path, write)


@dataclass
class ClipCache:
    """Clips read back from :func:`write_clip_cache` files (all held in memory).

    Args:
        paths: ``.npz`` files.
    """

    paths: list[str]
    arrays: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("Expect at least one clip cache file, actually: none")
        parts: dict[str, list[np.ndarray]] = {}
        for p in self.paths:
            with np.load(p, allow_pickle=False) as z:
                for k in (*_CACHE_KEYS, "scene_seed"):
                    parts.setdefault(k, []).append(z[k])
        self.arrays = {k: np.concatenate(v) for k, v in parts.items()}
        held = [int(s) for s in self.arrays["scene_seed"] if is_heldout(int(s))]
        if held:
            raise ValueError(f"Expect training clips only in the cache, actually: held-out scene seeds {held[:4]}")

    def __len__(self) -> int:
        return int(self.arrays["rgb"].shape[0])

    def clip(self, i: int) -> Clip:
        a = self.arrays
        f32 = np.float32
        return Clip(
            a["ref_rgb"][i], a["ref_depth"][i].astype(f32), a["ref_c2w"][i], a["K"][i], a["rgb"][i],
            a["depth"][i].astype(f32), a["c2w"][i], a["warp_rgb"][i], a["warp_depth"][i].astype(f32),
            a["warp_mask"][i], int(a["scene_seed"][i]),
        )  # fmt: skip


def clip_batch(clips: list[Clip], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Stack clips into tensors (public conventions; the trainers convert to model space).

    Returns:
        ``ref_rgb`` (B, H, W, 3) uint8, ``ref_depth`` (B, H, W), ``ref_c2w`` (B, 4, 4) float64, ``K`` (B, 3, 3)
        float64, ``rgb`` (B, T, H, W, 3) uint8, ``depth`` (B, T, H, W), ``c2w`` (B, T, 4, 4) float64,
        ``warp_rgb`` (B, T, H, W, 3) uint8, ``warp_depth`` (B, T, H, W), ``warp_mask`` (B, T, H, W) bool.
    """
    T = min(c.rgb.shape[0] for c in clips)  # stored windows may be shorter; crop to the shortest
    out: dict[str, torch.Tensor] = {}
    for k in _CACHE_KEYS:
        vals = [getattr(c, k) for c in clips]
        if vals[0].ndim >= 3 and k not in ("ref_rgb", "ref_depth", "K", "ref_c2w"):
            vals = [v[:T] for v in vals]
        out[k] = torch.from_numpy(np.ascontiguousarray(np.stack(vals))).to(device)
    return out


def sample_batch(source: ClipMaker | ClipCache, batch: int, rng: np.random.Generator) -> list[Clip]:
    """``batch`` clips: fresh from a maker, or drawn uniformly from a cache."""
    if isinstance(source, ClipCache):
        return [source.clip(int(i)) for i in rng.integers(len(source), size=batch)]
    return [source.make() for _ in range(batch)]
