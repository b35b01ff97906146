"""SpatialMemory: the explicit 3D memory of a batch of worlds.

Every stream (environment) keeps a bounded point map of what it has seen:
:meth:`SpatialMemory.fuse` unprojects RGB-D frames into it (one point per
voxel, CLOCK eviction once full, see :mod:`worldenv.kernels.fuse`) and
:meth:`SpatialMemory.render` splats it into any camera with a hard z-buffer
(see :mod:`worldenv.kernels.splat`), giving the warped RGB-D image and the
validity mask the world model is conditioned on. Memory use is fixed at
construction: a stream never holds more than ``capacity`` points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldenv._checks import check_positive, check_size, check_tensor
from worldenv.geometry import invert_se3, project
from worldenv.kernels import DEFAULT_MAX_RADIUS_PX, DEFAULT_NEAR, DEFAULT_RADIUS_SCALE, PointMap, fuse, splat, touch
from worldenv.kernels.fuse import MAX_CAPACITY

__all__ = ["MEMORY_UPDATES", "MemoryConfig", "SpatialMemory"]

ANCHOR_DEPTH_TOL = 0.03
"""Generated points nearer than the anchor's depth by more than this fraction are in its empty space."""

MEMORY_UPDATES = ("holes", "all")
"""How generated frames enter the memory: only the warp's holes (:meth:`SpatialMemory.fuse_generated`) or every pixel."""

_MAX_BATCH = 2**16
_MAX_FEATURES = 2**16


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expect `{name}` to be an int, actually: {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"Expect `{name}` in [{lo}, {hi}], actually: {value}")
    return int(value)


@dataclass(frozen=True)
class MemoryConfig:
    """Configuration of a :class:`SpatialMemory`, validated on construction."""

    batch_size: int = 1
    """Number of independent streams (environments)."""
    capacity: int = 2**20
    """Maximum points per stream; the storage is preallocated for it."""
    voxel_size: float = 0.02
    """Voxel edge in metres: at most one point per voxel."""
    feature_dim: int = 3
    """Channels per point (3 for RGB)."""
    radius_scale: float = DEFAULT_RADIUS_SCALE
    """Point radius in units of the observing pixel's footprint ``depth / f``."""
    max_radius_px: float = DEFAULT_MAX_RADIUS_PX
    """Clamp of a point's projected radius when rendering, in pixels."""
    near: float = DEFAULT_NEAR
    """Points closer than this (metres, camera z) are not rendered."""

    def __post_init__(self) -> None:
        _check_int("batch_size", self.batch_size, 1, _MAX_BATCH)
        _check_int("capacity", self.capacity, 1, MAX_CAPACITY)
        _check_int("feature_dim", self.feature_dim, 1, _MAX_FEATURES)
        check_positive("voxel_size", self.voxel_size)
        check_positive("radius_scale", self.radius_scale)
        check_positive("near", self.near)
        check_positive("max_radius_px", self.max_radius_px)
        if self.max_radius_px < 0.5:
            raise ValueError(f"Expect `max_radius_px` to be at least 0.5, actually: {self.max_radius_px}")


class SpatialMemory:
    """A batched, bounded point map: fuse RGB-D frames, render any camera.

    Example::

        mem = SpatialMemory(batch_size=2, capacity=2**18)
        mem.fuse(rgb, depth, c2w, K)                 # (2, H, W, 3) uint8, (2, H, W), (2, 4, 4), (2, 3, 3)
        warp_rgb, warp_depth, valid = mem.render(c2w_next, K, (H, W))

    Args:
        batch_size: Number of independent streams.
        capacity: Maximum points per stream (fixed storage).
        voxel_size: Voxel edge in metres.
        feature_dim: Channels per point (3 for RGB).
        radius_scale: Point radius in pixel footprints (see :mod:`worldenv.kernels.fuse`).
        device: Where the storage lives; inputs must be on the same device.

    Use :meth:`from_config` to build one from a :class:`MemoryConfig` with
    every field (``near``, ``max_radius_px``) set.
    """

    def __init__(
        self,
        batch_size: int = 1,
        capacity: int = 2**20,
        voxel_size: float = 0.02,
        feature_dim: int = 3,
        radius_scale: float = DEFAULT_RADIUS_SCALE,
        device: torch.device | str = "cpu",
    ) -> None:
        config = MemoryConfig(
            batch_size=batch_size,
            capacity=capacity,
            voxel_size=voxel_size,
            feature_dim=feature_dim,
            radius_scale=radius_scale,
        )
        self.config = config
        self._map = PointMap.empty(config.batch_size, config.capacity, config.feature_dim, device)
        self._anchor: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, config: MemoryConfig, device: torch.device | str = "cpu") -> SpatialMemory:
        """A memory configured by ``config`` on ``device``."""
        if not isinstance(config, MemoryConfig):
            raise TypeError(f"Expect `config` to be a MemoryConfig, actually: {type(config).__name__}")
        mem = cls.__new__(cls)
        mem.config = config
        mem._map = PointMap.empty(config.batch_size, config.capacity, config.feature_dim, device)
        mem._anchor = None
        return mem

    # --- properties -----------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def device(self) -> torch.device:
        return self._map.device

    @property
    def num_points(self) -> torch.Tensor:
        """Points held by each stream, (B,) int64 (a copy), never above ``capacity``."""
        return self._map.count.clone()

    @property
    def size(self) -> torch.Tensor:
        """Alias of :attr:`num_points`."""
        return self.num_points

    @property
    def pointmap(self) -> PointMap:
        """The underlying storage (read it, do not resize it)."""
        return self._map

    # --- validation -------------------------------------------------------------

    def _pose_and_intrinsics(self, c2w: object, K: object, dims: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        # Poses are float64 NumPy at public boundaries; accept those as well as tensors.
        if isinstance(c2w, np.ndarray):
            c2w = torch.from_numpy(c2w).to(self.device)
        if isinstance(K, np.ndarray):
            K = torch.from_numpy(K).to(self.device)
        check_tensor("c2w", c2w, ("B", 4, 4), (torch.float32, torch.float64), self.device, dims)
        check_tensor("K", K, ("B", 3, 3), (torch.float32, torch.float64), self.device, dims)
        return c2w, K

    def _depth_view(self, depth: object, c2w: object, K: object, dims: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One depth map per stream and its camera: checked, poses as tensors.
        check_tensor("depth", depth, ("B", "H", "W"), (torch.float32, torch.float64), self.device, dims)
        return self._pose_and_intrinsics(c2w, K, dims)

    def _stream_mask(self, name: str, mask: object) -> torch.Tensor | None:
        if mask is None:
            return None
        check_tensor(name, mask, (self.batch_size,), torch.bool, self.device)
        return mask

    # --- operations ---------------------------------------------------------------

    @torch.no_grad()
    def fuse(
        self,
        rgb: torch.Tensor,
        depth: torch.Tensor,
        c2w: torch.Tensor | np.ndarray,
        K: torch.Tensor | np.ndarray,
        mask: torch.Tensor | None = None,
        pixels: torch.Tensor | None = None,
    ) -> None:
        """Add one RGB-D frame per stream.

        Args:
            rgb: Colours (or features), (B, H, W, C) uint8 (scaled by 1/255)
                or float32/float64 in [0, 1], C = ``feature_dim``.
            depth: Camera z in metres, (B, H, W) float32 (or float64); 0 or
                non-finite = unknown.
            c2w: Camera-to-world poses, (B, 4, 4) float32 or float64.
            K: Pixel intrinsics, (B, 3, 3) float32 or float64.
            mask: Streams to update, (B,) bool; ``None`` updates all.
            pixels: Pixels to fuse, (B, H, W) bool; ``None`` fuses every pixel
                with a known depth.

        Raises:
            TypeError: An argument has the wrong type or dtype.
            ValueError: An argument has the wrong shape, device or values.
        """
        dims: dict[str, int] = {"B": self.batch_size, "C": self.config.feature_dim}
        check_tensor("rgb", rgb, ("B", "H", "W", "C"), (torch.uint8, torch.float32, torch.float64), self.device, dims)
        c2w, K = self._depth_view(depth, c2w, K, dims)
        check_size("rgb", (dims["H"], dims["W"]))
        mask = self._stream_mask("mask", mask)
        depth = depth.to(torch.float32)
        if pixels is not None:
            check_tensor("pixels", pixels, ("B", "H", "W"), torch.bool, self.device, dims)
            depth = torch.where(pixels, depth, torch.zeros((), dtype=depth.dtype, device=depth.device))  # 0 = unknown
        if rgb.dtype == torch.uint8:
            feats = rgb.to(torch.float32) / 255.0
        else:
            feats = rgb.to(torch.float32)
            if not bool(torch.isfinite(feats).all()):
                raise ValueError("Expect `rgb` to be finite, actually: it contains NaN or inf")
        fuse(
            self._map,
            feats,
            depth,
            c2w,
            K,
            voxel_size=self.config.voxel_size,
            radius_scale=self.config.radius_scale,
            batch_mask=mask,
        )

    def set_anchor(
        self,
        depth: torch.Tensor,
        c2w: torch.Tensor | np.ndarray,
        K: torch.Tensor | np.ndarray,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Record each stream's ground-truth view (the reference) as its anchor.

        The anchor's depth says which space is empty: everything between its
        camera and its surfaces. :meth:`fuse_generated` keeps generated points
        out of that space, so a generated frame can never put something in
        front of what the reference saw (returning to the reference pose shows
        the reference again). :meth:`reset` clears the anchors of the streams it resets.

        Args:
            depth: The anchor's camera z in metres, (B, H, W) float32/float64; 0 = unknown.
            c2w: Its camera-to-world poses, (B, 4, 4).
            K: Its pixel intrinsics, (B, 3, 3).
            mask: Streams to set, (B,) bool; ``None`` sets all.
        """
        dims: dict[str, int] = {"B": self.batch_size}
        c2w, K = self._depth_view(depth, c2w, K, dims)
        mask = self._stream_mask("mask", mask)
        new = {
            "depth": torch.nan_to_num(depth.to(torch.float32), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0),
            "c2w": c2w.to(torch.float64),
            "K": K.to(torch.float64),
            "set": torch.ones(self.batch_size, dtype=torch.bool, device=self.device),
        }
        old = self._anchor
        if mask is not None and old is not None and old["depth"].shape == new["depth"].shape:
            new = {k: torch.where(mask.view(-1, *[1] * (v.dim() - 1)), v, old[k]) for k, v in new.items()}
        elif mask is not None:
            new["set"] = mask.clone()
        self._anchor = {k: v.clone() for k, v in new.items()}

    def anchor_free_space(
        self,
        depth: torch.Tensor,
        c2w: torch.Tensor | np.ndarray,
        K: torch.Tensor | np.ndarray,
        pixels: torch.Tensor | None = None,
        tol: float = ANCHOR_DEPTH_TOL,
    ) -> torch.Tensor:
        """Pixels of RGB-D views whose points lie in their stream's anchor's empty space, (B, H, W) bool.

        A pixel's point is in the empty space when it projects inside the
        anchor image, in front of the anchor's camera, and nearer than the
        anchor's depth there by more than ``tol`` (relative). All false for
        streams without an anchor, and outside ``pixels`` (B, H, W) bool when given.
        """
        dims: dict[str, int] = {"B": self.batch_size}
        c2w, K = self._depth_view(depth, c2w, K, dims)
        if pixels is not None:
            check_tensor("pixels", pixels, ("B", "H", "W"), torch.bool, self.device, dims)
        out = torch.zeros(depth.shape, dtype=torch.bool, device=self.device)
        a = self._anchor
        if a is None:
            return out
        todo = (depth > 0) & torch.isfinite(depth) & a["set"].view(-1, 1, 1)
        if pixels is not None:
            todo &= pixels
        b, i, j = torch.nonzero(todo, as_tuple=True)  # only these pixels are projected
        if b.numel() == 0:
            return out
        # Lift only these pixels (a whole-frame geometry.unproject would be ~12x the work for the holes).
        d, Kp = depth[b, i, j].to(torch.float64), K.to(torch.float64)[b]
        y = (i - Kp[:, 1, 2]) / Kp[:, 1, 1]
        x = (j - Kp[:, 0, 2] - Kp[:, 0, 1] * y) / Kp[:, 0, 0]
        cam = torch.stack([x * d, y * d, d], dim=-1)[:, None]  # (M, 1, 3)
        to_anchor = (invert_se3(a["c2w"]) @ c2w.to(torch.float64))[b]  # this camera -> anchor camera
        uv, z = project(cam, a["K"][b], to_anchor)  # one camera per point
        front = z[:, 0] > 0
        uv = torch.where(front[:, None], uv[:, 0], torch.zeros_like(uv[:, 0])).floor()
        u, v, z = uv[:, 0], uv[:, 1], z[:, 0]
        Ah, Aw = a["depth"].shape[1:]
        inside = front & (u >= 0) & (u < Aw) & (v >= 0) & (v < Ah)
        ad = a["depth"][b, v.clamp(0, Ah - 1).long(), u.clamp(0, Aw - 1).long()].to(torch.float64)
        out[b, i, j] = inside & (ad > 0) & (z < ad * (1.0 - tol))
        return out

    def fuse_generated(
        self,
        rgb: torch.Tensor,
        depth: torch.Tensor,
        c2w: torch.Tensor | np.ndarray,
        K: torch.Tensor | np.ndarray,
        warp_mask: torch.Tensor,
        mask: torch.Tensor | None = None,
        update: str = "holes",
    ) -> None:
        """Fuse frames the world model generated from this memory's warp: only its holes.

        Where the warp was valid the memory already holds the surface, and the
        model's frame shows it (the codec's blend copies the warp there), so
        those points keep their first observation: the reference view and the
        ground-truth frames are not overwritten by generated copies of
        themselves. Only pixels the warp left empty (``~warp_mask``: newly seen
        surfaces) become points, and of those none inside the anchor's empty
        space (:meth:`set_anchor`), where a depth error of the model would
        leave a floater in front of the reference. The voxels behind the valid
        pixels are marked as in view (:func:`~worldenv.kernels.touch`), so once
        the memory is full the CLOCK evicts what has been out of view longest,
        not the oldest points (the reference). This is the rule of
        ``WorldEnv``, ``worldenv eval fidelity`` and the student's
        self-forcing rollouts.

        Args:
            rgb, depth, c2w, K, mask: As :meth:`fuse`.
            warp_mask: The validity mask :meth:`render` returned for this pose, (B, H, W) bool.
            update: ``"holes"`` (the rule above) or ``"all"``: a plain :meth:`fuse` of every pixel.
        """
        if update not in MEMORY_UPDATES:
            raise ValueError(f"Expect `update` to be one of {MEMORY_UPDATES}, actually: {update!r}")
        if update == "all":
            self.fuse(rgb, depth, c2w, K, mask=mask)
            return
        dims: dict[str, int] = {"B": self.batch_size}
        c2w, K = self._depth_view(depth, c2w, K, dims)
        check_tensor("warp_mask", warp_mask, ("B", "H", "W"), torch.bool, self.device, dims)
        depth = depth.to(torch.float32)
        zero = torch.zeros((), dtype=depth.dtype, device=depth.device)
        touch(self._map, torch.where(warp_mask, depth, zero), c2w, K, voxel_size=self.config.voxel_size, batch_mask=mask)
        keep = ~warp_mask
        if self._anchor is not None:
            keep = keep & ~self.anchor_free_space(depth, c2w, K, pixels=keep)
        self.fuse(rgb, depth, c2w, K, mask=mask, pixels=keep)

    @torch.no_grad()
    def render(
        self,
        c2w: torch.Tensor | np.ndarray,
        K: torch.Tensor | np.ndarray,
        size: int | tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render every stream's points from one camera per stream.

        Args:
            c2w: Camera-to-world poses, (B, 4, 4) float32 or float64.
            K: Pixel intrinsics of the output size, (B, 3, 3) float32 or float64.
            size: Output ``(H, W)`` or one int for a square.

        Returns:
            ``(rgb, depth, mask)``: rgb (B, H, W, C) float32 (in [0, 1] for
            colours; 0 where empty), depth (B, H, W) float32 metres (0 where
            empty), mask (B, H, W) bool (a point was rendered).

        Raises:
            TypeError: An argument has the wrong type or dtype.
            ValueError: An argument has the wrong shape, device or values.
        """
        dims: dict[str, int] = {"B": self.batch_size}
        c2w, K = self._pose_and_intrinsics(c2w, K, dims)
        size = check_size("size", size)
        m = self._map
        return splat(
            m.xyz,
            m.feats,
            m.radius,
            m.count,
            c2w,
            K,
            size,
            near=self.config.near,
            max_radius_px=self.config.max_radius_px,
        )

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Forget everything (anchors included), or only the streams where ``mask`` (B,) bool is true."""
        mask = self._stream_mask("mask", mask)
        self._map.reset(mask)
        if self._anchor is not None:
            if mask is None:
                self._anchor = None
            else:
                self._anchor["set"] &= ~mask

    # --- state ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The storage as a dict of tensors (clones), for snapshots and checkpoints (``anchor.*``: the anchors)."""
        state = {k: v.clone() for k, v in self._map.tensors().items()}
        if self._anchor is not None:
            state.update({f"anchor.{k}": v.clone() for k, v in self._anchor.items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` of a memory with the same configuration.

        The tensors are cloned onto this memory's device.

        Raises:
            TypeError: ``state`` is not a dict of tensors, or a dtype differs.
            ValueError: Keys, shapes or counters do not match this memory.
        """
        if not isinstance(state, dict):
            raise TypeError(f"Expect `state` to be a dict of tensors, actually: {type(state).__name__}")
        anchor = {k[len("anchor.") :]: v for k, v in state.items() if k.startswith("anchor.")}
        state = {k: v for k, v in state.items() if not k.startswith("anchor.")}
        if anchor:
            B = self.batch_size
            shapes = {"depth": (B, None, None), "c2w": (B, 4, 4), "K": (B, 3, 3), "set": (B,)}
            dtypes = {"depth": torch.float32, "c2w": torch.float64, "K": torch.float64, "set": torch.bool}
            if set(anchor) != set(shapes):
                raise ValueError(f"Expect anchor keys {sorted('anchor.' + k for k in shapes)}, actually: {sorted('anchor.' + k for k in anchor)}")
            for k, v in anchor.items():
                check_tensor(f"state['anchor.{k}']", v, shapes[k], dtypes[k])
        current = self._map.tensors()
        missing = sorted(set(current) - set(state))
        unexpected = sorted(set(state) - set(current))
        if missing or unexpected:
            raise ValueError(f"Expect `state` to have keys {sorted(current)}, actually: missing {missing}, unexpected {unexpected}")
        loaded: dict[str, torch.Tensor] = {}
        for name, now in current.items():
            value = state[name]
            check_tensor(f"state[{name!r}]", value, tuple(now.shape), now.dtype)
            loaded[name] = value.detach().to(self.device).clone().contiguous()
        candidate = PointMap(**loaded)
        candidate.validate()
        self._map = candidate
        self._anchor = {k: v.detach().to(self.device).clone() for k, v in anchor.items()} if anchor else None

    def to(self, device: torch.device | str) -> SpatialMemory:
        """Move the storage to ``device`` (in place) and return ``self``."""
        self._map = self._map.to(device)
        if self._anchor is not None:
            self._anchor = {k: v.to(device) for k, v in self._anchor.items()}
        return self

    def __repr__(self) -> str:
        c = self.config
        return (
            f"SpatialMemory(batch_size={c.batch_size}, capacity={c.capacity}, voxel_size={c.voxel_size}, "
            f"feature_dim={c.feature_dim}, device={self.device}, num_points={self._map.count.tolist()})"
        )
