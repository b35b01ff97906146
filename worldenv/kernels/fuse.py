"""Fusion of RGB-D frames into a bounded voxel-hash point map.

A :class:`PointMap` holds B independent maps (streams) of at most ``capacity``
points each, one point per voxel. :func:`fuse` adds one frame per stream; the
rule, shared bit for bit by the three backends:

1. Unproject. A pixel (row i, column j) with a finite depth ``d > 0`` becomes
   the camera point ``(((j - cx) * (1/fx)) * d, ((i - cy) * (1/fy)) * d, d)``
   and the world point ``c2w[:3, :3] @ p + c2w[:3, 3]``, written out
   elementwise in float32 (``c2w`` rounded to float32 once). Its radius is
   ``max(radius_scale * d / sqrt(fx * fy), radius_scale * voxel_size)``
   (both factors rounded to float32 once): the point spacing, scaled, where
   the spacing is the pixel's footprint on a surface facing the camera or,
   for surfaces so near that many pixels share a voxel, the voxel edge (the
   one point kept stands for the whole voxel). With the default
   ``radius_scale = 0.9`` a fronto-parallel surface stays closed when
   re-rendered from any closer viewpoint (discs of radius 0.9 spacing cover a
   square grid, which needs 1/sqrt(2) ~ 0.71), and a frame re-rendered from
   its own camera shows every pixel's own point where the footprint is wider
   than the voxel (a neighbour's disc, 0.9 px, does not reach a pixel centre
   1 px away); see :func:`worldenv.kernels.splat`. Without the voxel term, a
   128 px view of a wall about 0.45 m away (7 mm footprint, 2 cm voxels)
   re-rendered from its own camera leaves about 80% of its pixels empty.
2. Voxel key. ``g = floor(p * (1/voxel_size))`` per axis (float32, with
   ``1/voxel_size`` rounded to float32), packed as 21 bits per axis,
   ``key = (gx + 2**20) << 42 | (gy + 2**20) << 21 | (gz + 2**20)``: a
   non-negative int64. Voxel indices must lie in ``[-2**20, 2**20)``, i.e.
   world coordinates within about ``±1.05e6 * voxel_size`` (±21 km at 2 cm);
   points outside are skipped.
3. Insert, in phases.
   (a) Within the frame the first valid pixel in raster order wins each voxel.
   (b) Voxels already in the map are overwritten with the new observation
   (xyz, feats, radius), ``stamp = frame``, ``ref = 1``.
   (c) New voxels, in the order of their first pixel, take the next free
   slot (``slot = count``, ``count += 1``), so slots ``[0, count)`` are always
   the valid ones. Once the map is full a slot is chosen by the CLOCK
   (second-chance) rule: at the hand, a slot whose ``ref`` is 1 has it
   cleared and the hand advances; the first slot with ``ref == 0`` is evicted
   (its key leaves the hash by backward-shift deletion), reused, and the hand
   advances past it. The new voxel gets ``stamp = frame``, ``ref = 1``. Every
   clear undoes one earlier observation, so the cost is amortised O(1) per
   point, independent of the capacity. A voxel observed in this frame can
   still be evicted within the same frame if more new voxels arrive than the
   map holds.
4. The stream's frame counter advances by one.

The hash is open addressing with linear probing in ``T`` = the smallest power
of two ``>= 2 * capacity`` entries (so it is at most half full), home
position ``((k ^ (k >> 31)) * 0x9E3779B97F4A7C15 mod 2**64) >> (64 - log2 T)``
(Fibonacci hashing), empty entries hold key -1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from worldenv._checks import check_pinhole, check_positive, check_size, check_tensor
from worldenv.kernels._backend import load_native, select_backend

__all__ = ["PointMap", "fuse", "fuse_reference", "DEFAULT_RADIUS_SCALE", "MAX_CAPACITY", "voxel_keys"]

DEFAULT_RADIUS_SCALE = 0.9
MAX_CAPACITY = 2**30  # slots are int32 in the hash; keys are 63-bit
_AXIS_OFFSET = 2**20
_EMPTY_KEY = -1
# What every field of a PointMap holds for an empty stream (no slot used, no hash entry).
_EMPTY_VALUES = {"xyz": 0, "feats": 0, "radius": 0, "stamp": -1, "ref": 0, "slot_key": _EMPTY_KEY,
                 "hash_keys": _EMPTY_KEY, "hash_vals": -1, "count": 0, "hand": 0, "frame": 0}  # fmt: skip
_GOLDEN = 0x9E3779B97F4A7C15
_GOLDEN_SIGNED = _GOLDEN - 2**64  # the same 64 bits as an int64
_M64 = 2**64 - 1


def table_size(capacity: int) -> int:
    """Hash entries for ``capacity`` slots: the smallest power of two >= 2 * capacity."""
    return 1 << max(1, (2 * capacity - 1).bit_length())


@dataclass
class PointMap:
    """B bounded voxel-hash point maps, stored in preallocated tensors.

    Slots ``[0, count[b])`` of stream b hold its points; use ``count`` as the
    ``counts`` argument of :func:`~worldenv.kernels.splat`. Create with
    :meth:`empty`; :func:`fuse` updates it in place.

    Attributes:
        xyz: World position of each slot's point, (B, cap, 3) float32.
        feats: Features, (B, cap, C) float32.
        radius: World radius, (B, cap) float32.
        stamp: Frame counter when last observed, (B, cap) int64 (-1: never).
        ref: CLOCK reference bit, (B, cap) uint8.
        slot_key: Voxel key of each slot, (B, cap) int64 (-1: free).
        hash_keys: Hash table keys, (B, T) int64, -1 = empty.
        hash_vals: Slot of each hash entry, (B, T) int32.
        count: Slots in use, (B,) int64.
        hand: CLOCK hand, (B,) int64 in [0, cap).
        frame: Frames fused so far, (B,) int64.
    """

    xyz: torch.Tensor
    feats: torch.Tensor
    radius: torch.Tensor
    stamp: torch.Tensor
    ref: torch.Tensor
    slot_key: torch.Tensor
    hash_keys: torch.Tensor
    hash_vals: torch.Tensor
    count: torch.Tensor
    hand: torch.Tensor
    frame: torch.Tensor

    @classmethod
    def empty(
        cls, batch_size: int, capacity: int, feature_dim: int, device: torch.device | str = "cpu"
    ) -> PointMap:
        """An empty map of ``batch_size`` streams, ``capacity`` points each, ``feature_dim`` channels."""
        for name, value, hi in (
            ("batch_size", batch_size, 2**16),
            ("capacity", capacity, MAX_CAPACITY),
            ("feature_dim", feature_dim, 2**16),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Expect `{name}` to be an int, actually: {type(value).__name__}")
            if not 1 <= value <= hi:
                raise ValueError(f"Expect `{name}` in [1, {hi}], actually: {value}")
        B, cap, C, T = int(batch_size), int(capacity), int(feature_dim), table_size(int(capacity))
        dev = torch.device(device)
        pm = cls(
            xyz=torch.empty(B, cap, 3, dtype=torch.float32, device=dev),
            feats=torch.empty(B, cap, C, dtype=torch.float32, device=dev),
            radius=torch.empty(B, cap, dtype=torch.float32, device=dev),
            stamp=torch.empty(B, cap, dtype=torch.int64, device=dev),
            ref=torch.empty(B, cap, dtype=torch.uint8, device=dev),
            slot_key=torch.empty(B, cap, dtype=torch.int64, device=dev),
            hash_keys=torch.empty(B, T, dtype=torch.int64, device=dev),
            hash_vals=torch.empty(B, T, dtype=torch.int32, device=dev),
            count=torch.empty(B, dtype=torch.int64, device=dev),
            hand=torch.empty(B, dtype=torch.int64, device=dev),
            frame=torch.empty(B, dtype=torch.int64, device=dev),
        )
        pm.reset()
        return pm

    @property
    def batch_size(self) -> int:
        return self.xyz.shape[0]

    @property
    def capacity(self) -> int:
        return self.xyz.shape[1]

    @property
    def feature_dim(self) -> int:
        return self.feats.shape[2]

    @property
    def table_size(self) -> int:
        return self.hash_keys.shape[1]

    @property
    def device(self) -> torch.device:
        return self.xyz.device

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields by name (the tensors themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Empty all streams, or those where ``mask`` (B,) bool is true."""
        if mask is None:
            streams: list[int | slice] = [slice(None)]
        else:
            # In-place fills of each stream's rows: boolean-index assignment would gather and
            # scatter the whole (B, capacity) storage.
            streams = [int(b) for b in torch.nonzero(mask.cpu()).flatten()]
        for b in streams:
            for name, value in _EMPTY_VALUES.items():
                getattr(self, name)[b].fill_(value)

    def to(self, device: torch.device | str) -> PointMap:
        """A copy on ``device`` (or ``self`` when already there)."""
        dev = torch.device(device)
        if dev == self.device:
            return self
        return PointMap(**{k: v.to(dev) for k, v in self.tensors().items()})

    def clone(self) -> PointMap:
        """A deep copy."""
        return PointMap(**{k: v.clone() for k, v in self.tensors().items()})

    def validate(self) -> None:
        """Check that the fields agree in shape, dtype and device (for maps built from outside data).

        Raises:
            TypeError: A field has the wrong dtype.
            ValueError: Shapes, devices, the table size or the counters are inconsistent.
        """
        dims: dict[str, int] = {}
        dev = self.xyz.device
        check_tensor("xyz", self.xyz, ("B", "cap", 3), torch.float32, dev, dims)
        check_tensor("feats", self.feats, ("B", "cap", None), torch.float32, dev, dims)
        check_tensor("radius", self.radius, ("B", "cap"), torch.float32, dev, dims)
        check_tensor("stamp", self.stamp, ("B", "cap"), torch.int64, dev, dims)
        check_tensor("ref", self.ref, ("B", "cap"), torch.uint8, dev, dims)
        check_tensor("slot_key", self.slot_key, ("B", "cap"), torch.int64, dev, dims)
        check_tensor("hash_keys", self.hash_keys, ("B", table_size(dims["cap"])), torch.int64, dev, dims)
        check_tensor("hash_vals", self.hash_vals, ("B", table_size(dims["cap"])), torch.int32, dev, dims)
        for name in ("count", "hand", "frame"):
            check_tensor(name, getattr(self, name), ("B",), torch.int64, dev, dims)
        cap = dims["cap"]
        if bool(((self.count < 0) | (self.count > cap)).any()):
            raise ValueError(f"Expect `count` in [0, {cap}], actually: {self.count.tolist()}")
        if bool(((self.hand < 0) | (self.hand >= cap)).any()):
            raise ValueError(f"Expect `hand` in [0, {cap}), actually: {self.hand.tolist()}")
        if bool((self.frame < 0).any()):
            raise ValueError(f"Expect `frame` to be non-negative, actually: {self.frame.tolist()}")
        # Fusion relies on it: a stamp equal to the frame being fused means "written in this frame".
        if bool((self.stamp >= self.frame[:, None]).any()):
            raise ValueError("Expect every `stamp` to be below its stream's `frame`, actually: a later one")


def fuse(
    pointmap: PointMap,
    feats_img: torch.Tensor,
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    *,
    voxel_size: float,
    radius_scale: float = DEFAULT_RADIUS_SCALE,
    batch_mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> None:
    """Fuse one frame per stream into ``pointmap``, in place.

    See the module docstring for the unprojection, the voxel key and the
    phased insertion with CLOCK eviction. The result does not depend on the
    backend or the number of threads.

    Args:
        pointmap: The maps, B streams (updated in place).
        feats_img: Per-pixel features, (B, H, W, C) float32, C = the map's feature dim.
        depth: Camera z in metres, (B, H, W) float32; 0 or non-finite = no point.
        c2w: Camera-to-world poses, (B, 4, 4) float32 or float64.
        K: Pixel intrinsics (OpenCV, zero skew), (B, 3, 3) float32 or float64.
        voxel_size: Edge of a voxel in metres; use the same value for every
            frame of a map (keys depend on it).
        radius_scale: Point radius in units of the point spacing: the pixel footprint ``d / sqrt(fx*fy)``
            or, when larger, ``voxel_size``.
        batch_mask: Streams to update, (B,) bool; ``None`` updates all.
        backend: ``"reference"``, ``"native"`` or ``"cuda"``; ``None`` picks one.

    Raises:
        TypeError: An argument has the wrong type or dtype.
        ValueError: Shapes, devices or values are inconsistent.
    """
    if not isinstance(pointmap, PointMap):
        raise TypeError(f"Expect `pointmap` to be a PointMap, actually: {type(pointmap).__name__}")
    device = pointmap.device
    dims: dict[str, int] = {"B": pointmap.batch_size, "C": pointmap.feature_dim}
    check_tensor("feats_img", feats_img, ("B", "H", "W", "C"), torch.float32, device, dims)
    check_size("feats_img", (dims["H"], dims["W"]))
    K64, pose, inv_voxel, mask = _checked_views(pointmap, depth, c2w, K, voxel_size, batch_mask, dims)
    radius_scale = check_positive("radius_scale", radius_scale, allow_zero=True)
    radius_factor = (radius_scale / np.sqrt(K64[:, 0, 0] * K64[:, 1, 1])).astype(np.float32)
    # A point stands for its whole voxel: when the voxel is wider than the pixel footprint
    # (near surfaces) the disc covers the voxel, or the surface would render full of holes.
    min_radius = float(np.float32(radius_scale * voxel_size))
    args = (
        pointmap,
        feats_img.detach().contiguous(),
        depth.detach().contiguous(),
        torch.from_numpy(pose.astype(np.float32)).to(device),
        torch.from_numpy(K64.astype(np.float32)).to(device),
        torch.from_numpy(radius_factor).to(device),
        inv_voxel,
        mask.contiguous(),
        min_radius,
    )
    name = select_backend("fuse", device, backend)
    if name == "native":
        _fuse_native(*args)
    elif name == "cuda":
        _fuse_cuda(*args)
    else:
        fuse_reference(*args)


def _checked_views(
    pointmap: PointMap,
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    voxel_size: float,
    batch_mask: torch.Tensor | None,
    dims: dict[str, int],
) -> tuple[np.ndarray, np.ndarray, float, torch.Tensor]:
    """Validate one view per stream: ``(K float64, c2w float64, 1/voxel_size as float32, stream mask)``."""
    device = pointmap.device
    check_tensor("depth", depth, ("B", "H", "W"), torch.float32, device, dims)
    check_tensor("c2w", c2w, ("B", 4, 4), (torch.float32, torch.float64), device, dims)
    check_tensor("K", K, ("B", 3, 3), (torch.float32, torch.float64), device, dims)
    if batch_mask is not None:
        check_tensor("batch_mask", batch_mask, ("B",), torch.bool, device, dims)
    voxel_size = check_positive("voxel_size", voxel_size)
    # Per-camera values are few: checked and prepared in NumPy on the CPU.
    K64 = check_pinhole("K", K)
    pose = c2w.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(pose).all():
        raise ValueError("Expect `c2w` to be finite, actually: it contains NaN or inf")
    # Keys use 1/voxel_size rounded to float32 (the same value in every backend).
    inv_voxel = 1.0 / voxel_size
    inv_voxel = float(np.float32(inv_voxel)) if inv_voxel < float(np.finfo(np.float32).max) else float("inf")
    if not 0.0 < inv_voxel < float("inf"):
        raise ValueError(f"Expect `voxel_size` to have a finite, non-zero float32 inverse, actually: {voxel_size}")
    mask = torch.ones(pointmap.batch_size, dtype=torch.bool, device=device) if batch_mask is None else batch_mask
    return K64, pose, inv_voxel, mask


@torch.no_grad()
def touch(
    pointmap: PointMap,
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    *,
    voxel_size: float,
    batch_mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> None:
    """Mark the voxels a view shows as recently seen (CLOCK ``ref = 1``), changing nothing else.

    Pixels are unprojected and keyed as :func:`fuse` does (rule 1 and 2); every
    voxel already in the map that a pixel falls in gets its reference bit set,
    so the CLOCK evicts it last. No point is written or added and the frame
    counter does not advance. This is how a memory that keeps first
    observations (``SpatialMemory.fuse_generated``) still tells the CLOCK what
    is in view.

    Args:
        pointmap: The maps, B streams (reference bits updated in place).
        depth: Camera z in metres, (B, H, W) float32; 0 or non-finite = nothing.
        c2w: Camera-to-world poses, (B, 4, 4) float32 or float64.
        K: Pixel intrinsics, (B, 3, 3) float32 or float64.
        voxel_size: The voxel edge the map was fused with.
        batch_mask: Streams to touch, (B,) bool; ``None`` touches all.
        backend: ``"reference"`` (torch, any device) or ``"native"`` (C++); ``None`` picks
            native on CPU and the reference elsewhere.
    """
    if not isinstance(pointmap, PointMap):
        raise TypeError(f"Expect `pointmap` to be a PointMap, actually: {type(pointmap).__name__}")
    dims: dict[str, int] = {"B": pointmap.batch_size}
    K64, pose, inv_voxel, mask = _checked_views(pointmap, depth, c2w, K, voxel_size, batch_mask, dims)
    device = pointmap.device
    args = (
        pointmap,
        depth.detach().contiguous(),
        torch.from_numpy(pose.astype(np.float32)).to(device),
        torch.from_numpy(K64.astype(np.float32)).to(device),
        inv_voxel,
        mask.contiguous(),
    )
    if select_backend("touch", device, backend) == "native":
        _touch_native(*args)
    else:  # no CUDA kernel: the vectorised torch version runs on any device
        touch_reference(*args)


@torch.no_grad()
def touch_reference(
    pointmap: PointMap, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, inv_voxel: float, batch_mask: torch.Tensor
) -> None:
    """Pure-torch :func:`touch` (vectorised, any device); arguments already validated, float32 c2w and K."""
    B, H, W = depth.shape
    device = depth.device
    jj = torch.arange(W, device=device, dtype=torch.float32).repeat(H)
    ii = torch.arange(H, device=device, dtype=torch.float32).repeat_interleave(W)
    d = depth.reshape(B, -1)
    keys = torch.stack([voxel_keys(_world_points(d[b], c2w[b], K[b], ii, jj), inv_voxel) for b in range(B)])
    keys = torch.where(torch.isfinite(d) & (d > 0) & batch_mask[:, None], keys, torch.full_like(keys, -1))
    slots = _lookup_streams(pointmap.hash_keys, pointmap.hash_vals, keys)
    b, s = torch.nonzero(slots >= 0, as_tuple=True)
    pointmap.ref[b, slots[b, s]] = 1


# --- reference ---------------------------------------------------------------


def _home(keys: torch.Tensor, bits: int) -> torch.Tensor:
    """Hash home positions of int64 keys (>= 0) in a table of 2**bits entries."""
    h = (keys ^ (keys >> 31)) * _GOLDEN_SIGNED  # wraps mod 2**64 like uint64
    return (h >> (64 - bits)) & ((1 << bits) - 1)  # arithmetic shift, masked = logical shift


def _home_int(key: int, bits: int) -> int:
    return (((key ^ (key >> 31)) * _GOLDEN) & _M64) >> (64 - bits)


def _lookup(table_keys: torch.Tensor, table_vals: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Slots of ``keys`` (M,) in one stream's table (T,), -1 where absent; vectorised probing."""
    return _lookup_streams(table_keys[None], table_vals[None], keys[None])[0]


def _lookup_streams(table_keys: torch.Tensor, table_vals: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Slots of ``keys`` (B, M) in each stream's table (B, T), -1 where absent (and for keys < 0)."""
    B, T = table_keys.shape
    bits = T.bit_length() - 1
    flat_keys, flat_vals = table_keys.reshape(-1), table_vals.reshape(-1)
    base = (torch.arange(B, device=keys.device) * T)[:, None].expand_as(keys).reshape(-1)
    want = keys.reshape(-1)
    pos = _home(want.clamp_min(0), bits)
    out = torch.full_like(want, -1)
    pending = torch.nonzero(want >= 0).flatten()
    while pending.numel():
        found = flat_keys[base[pending] + pos[pending]]
        hit = found == want[pending]
        out[pending[hit]] = flat_vals[base[pending[hit]] + pos[pending[hit]]].long()
        pending = pending[~hit & (found != _EMPTY_KEY)]
        pos[pending] = (pos[pending] + 1) & (T - 1)
    return out.reshape(B, -1)


def _table_insert(keys: np.ndarray, vals: np.ndarray, key: int, val: int, bits: int) -> None:
    mask = (1 << bits) - 1
    i = _home_int(key, bits)
    while keys[i] != _EMPTY_KEY:
        i = (i + 1) & mask
    keys[i] = key
    vals[i] = val


def _table_erase(keys: np.ndarray, vals: np.ndarray, key: int, bits: int) -> None:
    """Backward-shift deletion, as in the C++ and CUDA kernels."""
    mask = (1 << bits) - 1
    i = _home_int(key, bits)
    while keys[i] != key:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        kj = int(keys[j])
        if kj == _EMPTY_KEY:
            break
        home = _home_int(kj, bits)
        stays = (i < home <= j) if i <= j else (i < home or home <= j)
        if stays:
            continue
        keys[i] = kj
        vals[i] = vals[j]
        i = j
    keys[i] = _EMPTY_KEY


def voxel_keys(xyz: torch.Tensor, inv_voxel: float) -> torch.Tensor:
    """Packed voxel keys of world points (..., 3) float32; -2 where out of range or non-finite."""
    g = torch.floor(xyz * inv_voxel)
    ok = ((g >= -_AXIS_OFFSET) & (g < _AXIS_OFFSET)).all(-1)
    gi = torch.where(ok[..., None], g, torch.zeros((), device=g.device)).long() + _AXIS_OFFSET
    key = (gi[..., 0] << 42) | (gi[..., 1] << 21) | gi[..., 2]
    return torch.where(ok, key, torch.full_like(key, -2))


def _world_points(d: torch.Tensor, T: torch.Tensor, K: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """World points (HW, 3) of one view's depths ``d`` (HW,), in the float32 steps of rule 1."""
    fx, cx, fy, cy = K[0, 0], K[0, 2], K[1, 1], K[1, 2]
    xc = (jj - cx) * torch.reciprocal(fx) * d
    yc = (ii - cy) * torch.reciprocal(fy) * d
    zc = d
    xw = T[0, 0] * xc + T[0, 1] * yc + T[0, 2] * zc + T[0, 3]
    yw = T[1, 0] * xc + T[1, 1] * yc + T[1, 2] * zc + T[1, 3]
    zw = T[2, 0] * xc + T[2, 1] * yc + T[2, 2] * zc + T[2, 3]
    return torch.stack([xw, yw, zw], -1)


@torch.no_grad()
def fuse_reference(
    pointmap: PointMap,
    feats_img: torch.Tensor,
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    radius_factor: torch.Tensor,
    inv_voxel: float,
    batch_mask: torch.Tensor,
    min_radius: float = 0.0,
) -> None:
    """Pure-torch fusion: the oracle for the other backends and their fallback.

    Phases (a) and (b) are vectorised (``torch.unique`` for the first pixel
    per voxel, vectorised hash probing); phase (c), the CLOCK, is a Python
    loop over the new voxels. Arguments are already validated: feats_img
    (B, H, W, C) f32, depth (B, H, W) f32, c2w (B, 4, 4) f32, K (B, 3, 3) f32,
    radius_factor (B,) f32, inv_voxel a float32 value, batch_mask (B,) bool,
    min_radius a float32 value (the radius floor, ``radius_scale * voxel_size``).
    """
    pm = pointmap
    B, H, W, C = feats_img.shape
    device = depth.device
    cap = pm.capacity
    bits = pm.table_size.bit_length() - 1
    jj = torch.arange(W, device=device, dtype=torch.float32).repeat(H)  # (HW,) column of each pixel
    ii = torch.arange(H, device=device, dtype=torch.float32).repeat_interleave(W)  # (HW,) row
    for b in torch.nonzero(batch_mask).flatten().tolist():
        d = depth[b].reshape(-1)  # (HW,)
        pts = _world_points(d, c2w[b], K[b], ii, jj)  # (HW, 3)
        rad = torch.clamp_min(radius_factor[b] * d, min_radius)
        key = voxel_keys(pts, inv_voxel)
        ok = torch.isfinite(d) & (d > 0) & (key >= 0)
        pix = torch.nonzero(ok).flatten()  # raster order
        key = key[pix]
        frame = int(pm.frame[b])

        # (a) first pixel per voxel.
        uniq, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((uniq.numel(),), pix.numel(), dtype=torch.int64, device=device)
        first.scatter_reduce_(0, inverse, torch.arange(pix.numel(), device=device), "amin")
        first = torch.sort(first).values
        wkey, wpix = key[first], pix[first]  # winners in raster order

        # (b) overwrite voxels already in the map (distinct slots).
        slot = _lookup(pm.hash_keys[b], pm.hash_vals[b], wkey)
        old = slot >= 0
        s, p = slot[old], wpix[old]
        pm.xyz[b, s] = pts[p]
        pm.feats[b, s] = feats_img[b].reshape(-1, C)[p]
        pm.radius[b, s] = rad[p]
        pm.stamp[b, s] = frame
        pm.ref[b, s] = 1

        # (c) new voxels: free slots, then CLOCK, sequentially.
        new_keys = wkey[~old].tolist()
        new_pix = wpix[~old]
        if new_keys:
            on_cpu = device.type == "cpu"
            ref = pm.ref[b].numpy() if on_cpu else pm.ref[b].cpu().numpy()
            slot_key = pm.slot_key[b].numpy() if on_cpu else pm.slot_key[b].cpu().numpy()
            tkeys = pm.hash_keys[b].numpy() if on_cpu else pm.hash_keys[b].cpu().numpy()
            tvals = pm.hash_vals[b].numpy() if on_cpu else pm.hash_vals[b].cpu().numpy()
            n, hand = int(pm.count[b]), int(pm.hand[b])
            last: dict[int, int] = {}  # slot -> index into new_keys of its last writer
            for k, key_k in enumerate(new_keys):
                if n < cap:
                    s_k = n
                    n += 1
                else:
                    while ref[hand]:
                        ref[hand] = 0
                        hand = 0 if hand + 1 == cap else hand + 1
                    s_k = hand
                    hand = 0 if hand + 1 == cap else hand + 1
                    _table_erase(tkeys, tvals, int(slot_key[s_k]), bits)
                _table_insert(tkeys, tvals, key_k, s_k, bits)
                slot_key[s_k] = key_k
                ref[s_k] = 1
                last[s_k] = k
            if not on_cpu:
                pm.ref[b].copy_(torch.from_numpy(ref))
                pm.slot_key[b].copy_(torch.from_numpy(slot_key))
                pm.hash_keys[b].copy_(torch.from_numpy(tkeys))
                pm.hash_vals[b].copy_(torch.from_numpy(tvals))
            s = torch.tensor(list(last.keys()), dtype=torch.int64, device=device)
            p = new_pix[torch.tensor(list(last.values()), dtype=torch.int64, device=device)]
            pm.xyz[b, s] = pts[p]
            pm.feats[b, s] = feats_img[b].reshape(-1, C)[p]
            pm.radius[b, s] = rad[p]
            pm.stamp[b, s] = frame
            pm.count[b] = n
            pm.hand[b] = hand
        pm.frame[b] = frame + 1


# --- native and cuda ----------------------------------------------------------


def _touch_native(
    pointmap: PointMap, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor, inv_voxel: float, batch_mask: torch.Tensor
) -> None:
    """C++/OpenMP :func:`touch` on CPU tensors (the reference bits updated in place)."""
    native = load_native()
    assert native is not None, "select_backend returned native without the extension"
    pm = pointmap
    native.touch(
        pm.ref.numpy(), pm.hash_keys.numpy(), pm.hash_vals.numpy(), depth.numpy(), c2w.numpy(), K.numpy(),
        batch_mask.numpy(), inv_voxel,
    )  # fmt: skip


def _fuse_native(
    pointmap: PointMap,
    feats_img: torch.Tensor,
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    radius_factor: torch.Tensor,
    inv_voxel: float,
    batch_mask: torch.Tensor,
    min_radius: float,
) -> None:
    """C++/OpenMP fusion on CPU tensors (NumPy views, updated in place)."""
    native = load_native()
    assert native is not None, "select_backend returned native without the extension"
    pm = pointmap
    native.fuse(
        pm.xyz.numpy(), pm.feats.numpy(), pm.radius.numpy(), pm.stamp.numpy(), pm.ref.numpy(),
        pm.slot_key.numpy(), pm.hash_keys.numpy(), pm.hash_vals.numpy(), pm.count.numpy(),
        pm.hand.numpy(), pm.frame.numpy(), feats_img.numpy(), depth.numpy(), c2w.numpy(),
        K.numpy(), radius_factor.numpy(), batch_mask.numpy(), inv_voxel, min_radius,
    )  # fmt: skip


def _fuse_cuda(
    pointmap: PointMap,
    feats_img: torch.Tensor,
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    radius_factor: torch.Tensor,
    inv_voxel: float,
    batch_mask: torch.Tensor,
    min_radius: float,
) -> None:
    """CUDA fusion (csrc/cuda/fuse.cu).

    Unprojection, keys and look-ups run per pixel; phase (a) uses a scratch
    hash per stream with ``atomicCAS`` keys and ``atomicMin`` first pixels;
    phase (b) writes winners in parallel (their slots are distinct); phase
    (c) runs one thread per stream in raster order, so the CLOCK rule is exact.
    """
    from worldenv.kernels import cuda

    pm = pointmap
    device = depth.device
    B, H, W, C = feats_img.shape
    HW = H * W
    sbits = max(1, (2 * HW - 1).bit_length())
    S = 1 << sbits
    px_pts = torch.empty(B, HW, 4, dtype=torch.float32, device=device)  # x, y, z, radius
    px_key = torch.empty(B, HW, dtype=torch.int64, device=device)
    px_slot = torch.empty(B, HW, dtype=torch.int64, device=device)
    px_new = torch.zeros(B, HW, dtype=torch.uint8, device=device)
    seen_keys = torch.full((B, S), _EMPTY_KEY, dtype=torch.int64, device=device)
    seen_first = torch.full((B, S), torch.iinfo(torch.int32).max, dtype=torch.int32, device=device)
    bits = pm.table_size.bit_length() - 1
    p = cuda.ptr
    i64, i32, f32 = np.int64, np.int32, np.float32
    common = (i64(B), i64(HW), i64(W))
    cuda.launch(
        "fuse", "fuse_unproject", B * HW,
        (p(depth), p(c2w), p(K), p(radius_factor), p(batch_mask), p(pm.hash_keys), p(pm.hash_vals),
         p(px_pts), p(px_key), p(px_slot), *common, i64(pm.table_size), i32(bits), f32(inv_voxel), f32(min_radius)),
        device,
    )  # fmt: skip
    cuda.launch(
        "fuse", "fuse_first_pixel", B * HW,
        (p(px_key), p(seen_keys), p(seen_first), *common, i32(sbits)),
        device,
    )  # fmt: skip
    cuda.launch(
        "fuse", "fuse_overwrite", B * HW,
        (p(px_pts), p(px_key), p(px_slot), p(seen_keys), p(seen_first), p(feats_img), p(pm.xyz),
         p(pm.feats), p(pm.radius), p(pm.stamp), p(pm.ref), p(pm.frame), p(px_new), *common,
         i64(C), i64(pm.capacity), i32(sbits)),
        device,
    )  # fmt: skip
    cuda.launch(
        "fuse", "fuse_clock", B,
        (p(px_pts), p(px_key), p(px_new), p(feats_img), p(batch_mask), p(pm.xyz), p(pm.feats),
         p(pm.radius), p(pm.stamp), p(pm.ref), p(pm.slot_key), p(pm.hash_keys), p(pm.hash_vals),
         p(pm.count), p(pm.hand), p(pm.frame), *common, i64(C), i64(pm.capacity), i64(pm.table_size),
         i32(bits)),
        device,
        block=32,
    )  # fmt: skip
