"""Z-buffered point splatting: points with a world radius -> image, depth, mask.

The rule, shared bit for bit by the three backends:

* Transform. ``w2c = inv(c2w)`` is computed in float64 and rounded to float32.
  A point is moved to the camera elementwise,
  ``x_c = ((R00*x + R01*y) + R02*z) + t0`` (and likewise ``y_c``, ``z_c``), with
  no fused multiply-add, so every backend evaluates the same float32
  operations in the same order.
* Skip. A point is ignored when its index is ``>= counts[b]``, when
  ``z_c <= near``, when ``x_c``, ``y_c``, ``z_c`` or its radius are non-finite,
  when its radius is negative, or when its projection is non-finite.
* Project. ``iz = 1 / z_c``, ``u = (fx*x_c)*iz + cx``, ``v = (fy*y_c)*iz + cy``
  (OpenCV: pixel (row i, column j) has its centre at ``(u, v) = (j, i)``).
* Footprint. The projected radii ``rx = (fx*r)*iz`` and ``ry = (fy*r)*iz`` in
  pixels are clamped to ``max_radius_px`` (default 8: a point closer than
  ``fx*r/8`` stops growing, which bounds the work per point to 17x17 pixels;
  surfaces that close are expected to be re-observed, not magnified).
  The point covers the pixel nearest to ``(u, v)`` (``floor(u + 0.5)``,
  ``floor(v + 0.5)``: halves round up), always, and every pixel ``(j, i)``
  whose centre satisfies ``((j-u)/rx)^2 + ((i-v)/ry)^2 <= 1``, evaluated as
  ``t = (j - u) * (1/rx)``, ``s = (i - v) * (1/ry)``, ``t*t + s*s <= 1``.
  When both radii are below half a pixel only the nearest pixel is covered (a
  disc that small holds at most one pixel centre; the rule makes it exact).
  Pixels outside the image are dropped.
* Z-buffer. Each covered pixel keeps the minimum of the 64-bit keys
  ``(float_bits(z_c) << 32) | index``: ``z_c > 0``, so its IEEE bits order
  like ``z_c``, and the nearest point wins, ties going to the lower index.
  The winner's features are gathered; its depth is ``z_c``.

Because a point's world radius becomes a disc in every view, a surface
observed as a grid of points with radius ``radius_scale * z / f`` stays closed
when the camera moves toward it (see :mod:`worldenv.kernels.fuse`).
"""

from __future__ import annotations

import numpy as np
import torch

from worldenv._checks import check_pinhole, check_positive, check_size, check_tensor
from worldenv.kernels._backend import load_native, select_backend

__all__ = ["splat", "splat_reference", "DEFAULT_NEAR", "DEFAULT_MAX_RADIUS_PX"]

DEFAULT_NEAR = 1e-2
DEFAULT_MAX_RADIUS_PX = 8.0

_EMPTY = torch.iinfo(torch.int64).max
# Points per chunk in the reference: bounds its (point, pixel) pair lists to a
# few hundred MB at the footprint clamp's worst case.
_REF_CHUNK = 1 << 20


def splat(
    xyz: torch.Tensor,
    feats: torch.Tensor,
    radius: torch.Tensor,
    counts: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    size: int | tuple[int, int],
    *,
    near: float = DEFAULT_NEAR,
    max_radius_px: float = DEFAULT_MAX_RADIUS_PX,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render B point sets, one per camera, with a hard z-buffer.

    See the module docstring for the exact footprint and ordering rule. The
    result does not depend on the backend or the number of threads.

    Args:
        xyz: World points, (B, N, 3) float32.
        feats: Per-point features, (B, N, C) float32, C >= 1.
        radius: World-space radius of each point, (B, N) float32.
        counts: Valid points per camera, (B,) int64 in [0, N]; points
            ``[counts[b], N)`` of camera b are padding and ignored.
        c2w: Camera-to-world poses, (B, 4, 4) float32 or float64.
        K: Pixel intrinsics (OpenCV, zero skew, positive focal lengths),
            (B, 3, 3) float32 or float64.
        size: Output size ``(H, W)`` or one int for a square.
        near: Points with camera depth ``<= near`` (metres) are skipped.
        max_radius_px: Clamp of the projected radius in pixels (>= 0.5).
        backend: ``"reference"``, ``"native"`` or ``"cuda"``; ``None`` picks
            one (see :mod:`worldenv.kernels._backend`).

    Returns:
        ``(image, depth, mask)``: image (B, H, W, C) float32 (0 where empty),
        depth (B, H, W) float32 camera z in metres (0 where empty), mask
        (B, H, W) bool (a point covers the pixel).

    Raises:
        TypeError: An argument has the wrong type or dtype.
        ValueError: Shapes, devices or values are inconsistent.
    """
    dims: dict[str, int] = {}
    check_tensor("xyz", xyz, ("B", "N", 3), torch.float32, dims=dims)
    device = xyz.device
    check_tensor("feats", feats, ("B", "N", None), torch.float32, device, dims)
    if feats.shape[-1] < 1:
        raise ValueError(f"Expect `feats` to have at least one channel, actually: {tuple(feats.shape)}")
    check_tensor("radius", radius, ("B", "N"), torch.float32, device, dims)
    check_tensor("counts", counts, ("B",), torch.int64, device, dims)
    check_tensor("c2w", c2w, ("B", 4, 4), (torch.float32, torch.float64), device, dims)
    check_tensor("K", K, ("B", 3, 3), (torch.float32, torch.float64), device, dims)
    H, W = check_size("size", size)
    near = check_positive("near", near)
    max_radius_px = check_positive("max_radius_px", max_radius_px)
    if max_radius_px < 0.5:
        raise ValueError(f"Expect `max_radius_px` to be at least 0.5, actually: {max_radius_px}")
    N = dims["N"]
    if N >= 2**32:
        raise ValueError(f"Expect fewer than 2**32 points per camera, actually: {N}")
    # Per-camera values are few: check and prepare them in NumPy on the CPU
    # (cheaper than torch ops per call, and the same bits on every device).
    n = counts.detach().cpu().numpy()
    if ((n < 0) | (n > N)).any():
        raise ValueError(f"Expect `counts` in [0, {N}], actually: {n.tolist()}")
    K64 = check_pinhole("K", K)
    w2c = torch.from_numpy(_world_to_camera(c2w)).to(device)
    K32 = torch.from_numpy(K64.astype(np.float32)).to(device)

    name = select_backend("splat", device, backend)
    args = (
        xyz.detach().contiguous(),
        feats.detach().contiguous(),
        radius.detach().contiguous(),
        counts.contiguous(),
        w2c,
        K32,
        H,
        W,
        float(near),
        float(max_radius_px),
    )
    if name == "native":
        return _splat_native(*args)
    if name == "cuda":
        return _splat_cuda(*args)
    return splat_reference(*args)


def _world_to_camera(c2w: torch.Tensor) -> np.ndarray:
    """``inv(c2w)`` computed in float64 and rounded once to float32: (B, 4, 4) float32, C-contiguous."""
    m = c2w.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(m).all():
        raise ValueError("Expect `c2w` to be finite, actually: it contains NaN or inf")
    try:
        w2c = np.linalg.inv(m)
    except np.linalg.LinAlgError as e:
        raise ValueError("Expect `c2w` to be invertible, actually: a singular matrix") from e
    return np.ascontiguousarray(w2c, dtype=np.float32)


def _col(t: torch.Tensor) -> torch.Tensor:
    """A per-camera scalar as a (B, 1) column that broadcasts over points."""
    return t[:, None]


@torch.no_grad()
def splat_reference(
    xyz: torch.Tensor,
    feats: torch.Tensor,
    radius: torch.Tensor,
    counts: torch.Tensor,
    w2c: torch.Tensor,
    K: torch.Tensor,
    H: int,
    W: int,
    near: float,
    max_radius_px: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-torch splatting: the oracle for the other backends and their fallback.

    It lists the (point, pixel) pairs of every footprint box with
    ``repeat_interleave``, keeps the covered ones and reduces the packed
    depth|index keys with one ``scatter_reduce(..., "amin")`` per chunk of
    points, then gathers the winners. Arguments are already validated:
    xyz (B, N, 3) f32, feats (B, N, C) f32, radius (B, N) f32, counts (B,)
    i64, w2c (B, 4, 4) f32, K (B, 3, 3) f32, all contiguous on one device.

    Returns:
        ``(image, depth, mask)`` as in :func:`splat`.
    """
    B, N, C = feats.shape
    HW = H * W
    device = xyz.device
    zbuf = torch.full((B * HW,), _EMPTY, dtype=torch.int64, device=device)
    n_max = int(counts.max()) if B else 0  # padding past every camera's count is never read
    for start in range(0, n_max, _REF_CHUNK):
        stop = min(n_max, start + _REF_CHUNK)
        _splat_chunk(zbuf, xyz, radius, counts, w2c, K, H, W, near, max_radius_px, start, stop)

    hit = zbuf != _EMPTY  # (B*HW,)
    index = zbuf & 0xFFFFFFFF
    depth_bits = (zbuf >> 32).to(torch.int32)
    depth = torch.where(hit, depth_bits.view(torch.float32), torch.zeros((), device=device))
    image = torch.zeros(B * HW, C, dtype=torch.float32, device=device)
    cam = torch.arange(B * HW, device=device) // HW
    image[hit] = feats[cam[hit], index[hit]]
    return image.view(B, H, W, C), depth.view(B, H, W), hit.view(B, H, W)


def _splat_chunk(
    zbuf: torch.Tensor,
    xyz: torch.Tensor,
    radius: torch.Tensor,
    counts: torch.Tensor,
    w2c: torch.Tensor,
    K: torch.Tensor,
    H: int,
    W: int,
    near: float,
    max_radius_px: float,
    start: int,
    stop: int,
) -> None:
    """Reduce points ``[start, stop)`` of every camera into ``zbuf`` (B*H*W,) int64."""
    device = xyz.device
    x, y, z = xyz[:, start:stop].unbind(-1)  # (B, n) each
    r = radius[:, start:stop]
    R = [[_col(w2c[:, k, m]) for m in range(4)] for k in range(3)]  # (B, 1) each
    # Elementwise, in the kernels' order; a matmul could reorder or fuse.
    xc = R[0][0] * x + R[0][1] * y + R[0][2] * z + R[0][3]
    yc = R[1][0] * x + R[1][1] * y + R[1][2] * z + R[1][3]
    zc = R[2][0] * x + R[2][1] * y + R[2][2] * z + R[2][3]
    fx, cx = _col(K[:, 0, 0]), _col(K[:, 0, 2])
    fy, cy = _col(K[:, 1, 1]), _col(K[:, 1, 2])
    index = torch.arange(start, stop, device=device)
    valid = (index < counts[:, None]) & (zc > near)
    valid &= torch.isfinite(xc) & torch.isfinite(yc) & torch.isfinite(zc)
    valid &= torch.isfinite(r) & (r >= 0)
    iz = torch.reciprocal(zc)
    u = fx * xc * iz + cx
    v = fy * yc * iz + cy
    valid &= torch.isfinite(u) & torch.isfinite(v)
    rx = torch.clamp(fx * r * iz, max=max_radius_px)
    ry = torch.clamp(fy * r * iz, max=max_radius_px)

    jn = torch.floor(u + 0.5)
    in_ = torch.floor(v + 0.5)
    small = (rx < 0.5) & (ry < 0.5)
    j0 = torch.where(small, jn, torch.minimum(torch.ceil(u - rx), jn)).clamp(min=0)
    j1 = torch.where(small, jn, torch.maximum(torch.floor(u + rx), jn)).clamp(max=W - 1)
    i0 = torch.where(small, in_, torch.minimum(torch.ceil(v - ry), in_)).clamp(min=0)
    i1 = torch.where(small, in_, torch.maximum(torch.floor(v + ry), in_)).clamp(max=H - 1)
    valid &= (j0 <= j1) & (i0 <= i1)

    cam, pt = valid.nonzero(as_tuple=True)  # (M,) each
    if pt.numel() == 0:
        return
    u, v, jn, in_ = u[cam, pt], v[cam, pt], jn[cam, pt], in_[cam, pt]
    small = small[cam, pt]
    irx = torch.reciprocal(rx[cam, pt])
    iry = torch.reciprocal(ry[cam, pt])
    j0l, i0l = j0[cam, pt].long(), i0[cam, pt].long()
    bw = j1[cam, pt].long() - j0l + 1
    npair = bw * (i1[cam, pt].long() - i0l + 1)  # (M,)
    keys = (zc[cam, pt].view(torch.int32).long() << 32) | (pt + start)
    base = cam * (H * W)

    # One row per (point, pixel of its box).
    owner = torch.repeat_interleave(torch.arange(pt.numel(), device=device), npair)  # (P,)
    first = torch.cumsum(npair, 0) - npair
    off = torch.arange(owner.numel(), device=device) - first[owner]
    bw_o = bw[owner]
    jj = j0l[owner] + off % bw_o
    ii = i0l[owner] + off // bw_o
    fj, fi = jj.float(), ii.float()
    t = (fj - u[owner]) * irx[owner]
    s = (fi - v[owner]) * iry[owner]
    covered = small[owner] | (t * t + s * s <= 1.0) | ((fj == jn[owner]) & (fi == in_[owner]))
    pix = base[owner] + ii * W + jj
    zbuf.scatter_reduce_(0, pix[covered], keys[owner][covered], "amin")


def _splat_native(
    xyz: torch.Tensor,
    feats: torch.Tensor,
    radius: torch.Tensor,
    counts: torch.Tensor,
    w2c: torch.Tensor,
    K: torch.Tensor,
    H: int,
    W: int,
    near: float,
    max_radius_px: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """C++/OpenMP splatting on CPU tensors (NumPy views, no copies)."""
    native = load_native()
    assert native is not None, "select_backend returned native without the extension"
    B, N, C = feats.shape
    image = torch.empty(B, H, W, C, dtype=torch.float32)
    depth = torch.empty(B, H, W, dtype=torch.float32)
    mask = torch.empty(B, H, W, dtype=torch.bool)
    native.splat(
        xyz.numpy(), feats.numpy(), radius.numpy(), counts.numpy(), w2c.numpy(), K.numpy(),
        near, max_radius_px, image.numpy(), depth.numpy(), mask.numpy(),
    )  # fmt: skip
    return image, depth, mask


def _splat_cuda(
    xyz: torch.Tensor,
    feats: torch.Tensor,
    radius: torch.Tensor,
    counts: torch.Tensor,
    w2c: torch.Tensor,
    K: torch.Tensor,
    H: int,
    W: int,
    near: float,
    max_radius_px: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CUDA splatting (csrc/cuda/splat.cu): an atomicMin pass over points, then a resolve pass over pixels."""
    from worldenv.kernels import cuda

    device = xyz.device
    B, N, C = feats.shape
    HW = H * W
    zbuf = torch.full((B, H, W), -1, dtype=torch.int64, device=device)  # all bits set: empty
    image = torch.empty(B, H, W, C, dtype=torch.float32, device=device)
    depth = torch.empty(B, H, W, dtype=torch.float32, device=device)
    mask = torch.empty(B, H, W, dtype=torch.bool, device=device)
    p = cuda.ptr
    cuda.launch(
        "splat", "splat_points", B * N,
        (p(xyz), p(radius), p(counts), p(w2c), p(K), p(zbuf), np.int64(B), np.int64(N),
         np.int64(H), np.int64(W), np.float32(near), np.float32(max_radius_px)),
        device,
    )  # fmt: skip
    cuda.launch(
        "splat", "splat_resolve", B * HW,
        (p(zbuf), p(feats), p(image), p(depth), p(mask), np.int64(B), np.int64(N), np.int64(C), np.int64(HW)),
        device,
    )  # fmt: skip
    return image, depth, mask
