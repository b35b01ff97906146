"""Camera geometry: SE(3), rotations, intrinsics, projection and pose file formats.

Conventions (one for the whole code base, see ARCHITECTURE.md):

* Camera: OpenCV pinhole, x right, y down, z forward. A pixel (row ``i``,
  column ``j``) has its centre at ``(u, v) = (j, i)``; the image spans
  ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
* Pose: ``c2w``, a 4x4 camera-to-world matrix, float64 in NumPy at public
  boundaries; ``w2c = inv(c2w)``.
* World: metric, gravity along +y, so an upright camera's y axis is the world's
  down and "up" is ``(0, -1, 0)``.

SE(3) and rotation helpers work on NumPy arrays with any leading batch shape
``(..., 4, 4)`` / ``(..., 3)``; ``invert_se3`` also takes torch tensors.
Projection and unprojection are batched torch functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from worldenv._io import atomic_write, atomic_write_text

__all__ = [
    "WORLD_UP",
    "PoseFormatError",
    "se3",
    "compose",
    "invert_se3",
    "look_at",
    "rot_x",
    "rot_y",
    "rot_z",
    "quat_to_matrix",
    "matrix_to_quat",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "orthonormalize",
    "intrinsics_from_fov",
    "fov_from_intrinsics",
    "resize_intrinsics",
    "crop_intrinsics",
    "pixel_grid",
    "project",
    "unproject",
    "opengl_to_opencv",
    "read_matrix_poses",
    "write_matrix_poses",
    "read_tum_poses",
    "write_tum_poses",
    "read_kitti_poses",
    "write_kitti_poses",
    "read_re10k_cameras",
    "write_re10k_cameras",
]

WORLD_UP = np.array([0.0, -1.0, 0.0])
"""The world's up direction: gravity is +y."""

ArrayLike = np.ndarray | Sequence[float]
Pose = np.ndarray  # (..., 4, 4) float64


class PoseFormatError(ValueError):
    """A pose file is malformed; the message names the file and line."""

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        super().__init__(f"{os.fspath(path)}:{line}: {message}")
        self.path = os.fspath(path)
        self.line = line


# --------------------------------------------------------------------------- SE(3)


def _as_f64(name: str, x: ArrayLike, tail: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape[a.ndim - len(tail) :] != tail or a.ndim < len(tail):
        want = "(..., " + ", ".join(map(str, tail)) + ")"
        raise ValueError(f"Expect `{name}` to have shape {want}, actually: {a.shape}")
    return a


def se3(R: ArrayLike | None = None, t: ArrayLike | None = None) -> Pose:
    """Build 4x4 rigid transforms from rotations ``(..., 3, 3)`` and translations ``(..., 3)``."""
    Rm = np.eye(3) if R is None else _as_f64("R", R, (3, 3))
    tv = np.zeros(3) if t is None else _as_f64("t", t, (3,))
    batch = np.broadcast_shapes(Rm.shape[:-2], tv.shape[:-1])
    T = np.zeros(batch + (4, 4))
    T[..., :3, :3] = Rm
    T[..., :3, 3] = tv
    T[..., 3, 3] = 1.0
    return T


def compose(*poses: ArrayLike) -> Pose:
    """Compose rigid transforms left to right: ``compose(A, B, C) = A @ B @ C``."""
    if not poses:
        raise ValueError("Expect `poses` to hold at least one transform, actually: none")
    out = _as_f64("poses[0]", poses[0], (4, 4))
    for i, p in enumerate(poses[1:], start=1):
        out = out @ _as_f64(f"poses[{i}]", p, (4, 4))
    return out


def invert_se3(T: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Invert rigid transforms ``(..., 4, 4)`` exactly as ``[R^T, -R^T t]``.

    Works on NumPy arrays and torch tensors (keeping dtype and device).
    """
    if isinstance(T, torch.Tensor):
        R = T[..., :3, :3]
        t = T[..., :3, 3:]
        Rt = R.transpose(-1, -2)
        out = torch.zeros_like(T)
        out[..., :3, :3] = Rt
        out[..., :3, 3:] = -(Rt @ t)
        out[..., 3, 3] = 1
        return out
    A = _as_f64("T", T, (4, 4))
    Rt = np.swapaxes(A[..., :3, :3], -1, -2)
    out = np.zeros_like(A)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, A[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = WORLD_UP) -> Pose:
    """Camera-to-world pose of an OpenCV camera at ``eye`` looking at ``target``.

    The camera's y axis (down) is ``-up`` made orthogonal to the view direction,
    so an upright camera has no roll.

    Args:
        eye: Camera centre ``(..., 3)``.
        target: Point to look at ``(..., 3)``.
        up: World up ``(3,)``; defaults to ``(0, -1, 0)`` (gravity is +y).

    Returns:
        ``c2w`` ``(..., 4, 4)`` float64.
    """
    e = _as_f64("eye", eye, (3,))
    g = _as_f64("target", target, (3,))
    u = _as_f64("up", up, (3,))
    f = g - e
    fn = np.linalg.norm(f, axis=-1, keepdims=True)
    if np.any(fn < 1e-12):
        raise ValueError("Expect `target` to differ from `eye`, actually: they coincide")
    z = f / fn
    down = -u
    y = down - np.sum(down * z, axis=-1, keepdims=True) * z
    yn = np.linalg.norm(y, axis=-1, keepdims=True)
    if np.any(yn < 1e-9):
        raise ValueError("Expect the view direction not parallel to `up`, actually: it is")
    y = y / yn
    x = np.cross(y, z)
    R = np.stack([x, y, z], axis=-1)
    return se3(R, e)


# ----------------------------------------------------------------------- rotations


def rot_x(angle: float | np.ndarray) -> np.ndarray:
    """Rotation ``(..., 3, 3)`` by ``angle`` radians about the x axis (right-handed)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rot_y(angle: float | np.ndarray) -> np.ndarray:
    """Rotation ``(..., 3, 3)`` by ``angle`` radians about the y axis (right-handed)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rot_z(angle: float | np.ndarray) -> np.ndarray:
    """Rotation ``(..., 3, 3)`` by ``angle`` radians about the z axis (right-handed)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def quat_to_matrix(q: ArrayLike) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` in ``(x, y, z, w)`` order (TUM's) to rotations ``(..., 3, 3)``.

    The quaternion is normalised first; a zero quaternion raises ``ValueError``.
    """
    qa = _as_f64("q", q, (4,))
    n = np.linalg.norm(qa, axis=-1, keepdims=True)
    if np.any(n < 1e-12) or not np.all(np.isfinite(n)):
        raise ValueError("Expect `q` to be finite and non-zero, actually: a zero or non-finite quaternion")
    x, y, z, w = np.moveaxis(qa / n, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quat(R: ArrayLike) -> np.ndarray:
    """Rotations ``(..., 3, 3)`` to unit quaternions ``(..., 4)`` in ``(x, y, z, w)`` order, ``w >= 0``."""
    Rm = _as_f64("R", R, (3, 3))
    m = Rm.reshape(-1, 3, 3)
    out = np.empty((m.shape[0], 4))
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Shepperd: branch on the largest of (trace, diagonal) for numerical stability.
    for k in range(m.shape[0]):
        r, t = m[k], tr[k]
        if t > 0:
            s = math.sqrt(t + 1.0) * 2
            q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
            q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
        elif r[1, 1] > r[2, 2]:
            s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
            q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
        else:
            s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
            q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
        out[k] = q
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    out *= np.where(out[:, 3:] < 0, -1.0, 1.0)
    return out.reshape(Rm.shape[:-2] + (4,))


def axis_angle_to_matrix(rotvec: ArrayLike) -> np.ndarray:
    """Axis-angle vectors ``(..., 3)`` (direction = axis, norm = angle in radians) to rotations (Rodrigues)."""
    v = _as_f64("rotvec", rotvec, (3,))
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -v[..., 2], v[..., 1]
    K[..., 1, 0], K[..., 1, 2] = v[..., 2], -v[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -v[..., 1], v[..., 0]
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    # Taylor expansions near zero keep the map smooth and exact to float64.
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * K + b * (K @ K)


def matrix_to_axis_angle(R: ArrayLike) -> np.ndarray:
    """Rotations ``(..., 3, 3)`` to axis-angle vectors ``(..., 3)`` with angle in ``[0, pi]``."""
    q = matrix_to_quat(R)
    xyz, w = q[..., :3], q[..., 3]
    s = np.linalg.norm(xyz, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    small = s < 1e-12
    # For tiny angles the axis is ill-defined: rotvec ~= 2 * xyz.
    scale = np.where(small, 2.0, angle / np.where(small, 1.0, s))
    return xyz * scale[..., None]


def orthonormalize(R: ArrayLike) -> np.ndarray:
    """Nearest rotation (SVD projection) to each ``(..., 3, 3)`` matrix; removes accumulated drift."""
    Rm = _as_f64("R", R, (3, 3))
    U, _, Vt = np.linalg.svd(Rm)
    d = np.sign(np.linalg.det(U @ Vt))
    U[..., :, 2] *= d[..., None]
    return U @ Vt


# ---------------------------------------------------------------------- intrinsics


def intrinsics_from_fov(width: int, height: int, fov_deg: float, axis: str = "x") -> np.ndarray:
    """Pinhole intrinsics ``(3, 3)`` float64 for a square-pixel camera.

    Args:
        width: Image width W in pixels.
        height: Image height H in pixels.
        fov_deg: Field of view in degrees, in (0, 180), measured across ``axis``.
        axis: ``"x"`` (horizontal), ``"y"`` (vertical) or ``"diag"``.

    The principal point is the image centre in the pixel-centre convention:
    ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``.
    """
    if not (isinstance(width, (int, np.integer)) and width > 0):
        raise ValueError(f"Expect `width` to be a positive int, actually: {width!r}")
    if not (isinstance(height, (int, np.integer)) and height > 0):
        raise ValueError(f"Expect `height` to be a positive int, actually: {height!r}")
    if not (0.0 < float(fov_deg) < 180.0):
        raise ValueError(f"Expect `fov_deg` in (0, 180), actually: {fov_deg}")
    extent = {"x": width, "y": height, "diag": math.hypot(width, height)}
    if axis not in extent:
        raise ValueError(f"Expect `axis` to be 'x', 'y' or 'diag', actually: {axis!r}")
    f = 0.5 * extent[axis] / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(K: ArrayLike, width: int, height: int) -> tuple[float, float]:
    """Horizontal and vertical field of view in degrees of intrinsics ``K`` for a W x H image."""
    Km = _as_f64("K", K, (3, 3))
    return (
        math.degrees(2 * math.atan(0.5 * width / Km[0, 0])),
        math.degrees(2 * math.atan(0.5 * height / Km[1, 1])),
    )


def resize_intrinsics(K: ArrayLike, old_size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics after resizing an image from ``old_size`` (H, W) to ``new_size`` (H, W).

    In the pixel-centre convention a coordinate maps as ``u' = (u + 0.5) * s - 0.5``,
    so ``f' = f * s`` and ``c' = (c + 0.5) * s - 0.5``.
    """
    Km = _as_f64("K", K, (3, 3)).copy()
    (h0, w0), (h1, w1) = old_size, new_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"Expect positive sizes, actually: old_size={old_size}, new_size={new_size}")
    sx, sy = w1 / w0, h1 / h0
    Km[..., 0, 0] *= sx
    Km[..., 0, 1] *= sx
    Km[..., 1, 1] *= sy
    Km[..., 0, 2] = (Km[..., 0, 2] + 0.5) * sx - 0.5
    Km[..., 1, 2] = (Km[..., 1, 2] + 0.5) * sy - 0.5
    return Km


def crop_intrinsics(K: ArrayLike, top: int, left: int) -> np.ndarray:
    """Intrinsics after cropping an image so that pixel ``(top, left)`` becomes ``(0, 0)``."""
    Km = _as_f64("K", K, (3, 3)).copy()
    Km[..., 0, 2] -= left
    Km[..., 1, 2] -= top
    return Km


# --------------------------------------------------------------------- projection


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates ``(H, W, 2)`` holding ``(u, v) = (column, row)``."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def project(
    xyz: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project points into pixels.

    Args:
        xyz: Points ``(B, N, 3)``: world coordinates if ``w2c`` is given, else camera coordinates.
        K: Intrinsics ``(B, 3, 3)``.
        w2c: Optional world-to-camera transforms ``(B, 4, 4)``.

    Returns:
        ``uv`` ``(B, N, 2)`` pixel coordinates and ``z`` ``(B, N)`` camera depth. Points with
        ``z <= 0`` get non-finite or meaningless ``uv``; mask them with ``z > 0``.
    """
    if w2c is not None:
        w2c = w2c.to(xyz.dtype)
        xyz = xyz @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    K = K.to(xyz.dtype)
    z = xyz[..., 2]
    x = xyz[..., 0] / z
    y = xyz[..., 1] / z
    u = K[:, None, 0, 0] * x + K[:, None, 0, 1] * y + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * y + K[:, None, 1, 2]
    return torch.stack([u, v], dim=-1), z


def unproject(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor | None = None) -> torch.Tensor:
    """Lift every pixel of depth maps to 3D.

    Args:
        depth: Metric depth along the camera z axis ``(B, H, W)``.
        K: Intrinsics ``(B, 3, 3)``.
        c2w: Optional camera-to-world transforms ``(B, 4, 4)``; without it points stay in camera coordinates.

    Returns:
        Points ``(B, H, W, 3)`` in depth's dtype. Pixels with depth 0 map to the camera centre.
    """
    B, H, W = depth.shape
    K = K.to(depth.dtype)
    uv = pixel_grid(H, W, device=depth.device, dtype=depth.dtype)  # (H, W, 2)
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy, s = K[:, 0, 2, None, None], K[:, 1, 2, None, None], K[:, 0, 1, None, None]
    y = (uv[..., 1] - cy) / fy  # (B, H, W)
    x = (uv[..., 0] - cx - s * y) / fx
    pts = torch.stack([x * depth, y * depth, depth], dim=-1)  # (B, H, W, 3)
    if c2w is not None:
        c2w = c2w.to(depth.dtype)
        pts = pts.reshape(B, H * W, 3) @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]
        pts = pts.reshape(B, H, W, 3)
    return pts


def opengl_to_opencv(c2w_gl: ArrayLike) -> Pose:
    """Convert camera-to-world poses from the OpenGL camera (y up, z back) to OpenCV (y down, z forward)."""
    T = _as_f64("c2w_gl", c2w_gl, (4, 4)).copy()
    T[..., :3, 1:3] *= -1.0
    return T


# -------------------------------------------------------------------- pose formats


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty, non-comment lines of a text file with their 1-based numbers."""
    try:
        text = path.read_text()
    except OSError as e:
        raise FileNotFoundError(f"Cannot read pose file {path}: {e.strerror}") from e
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            rows.append((n, s.replace(",", " ").split()))
    return rows


def _floats(path: Path, n: int, fields: list[str], count: int | None, what: str) -> np.ndarray:
    if count is not None and len(fields) != count:
        raise PoseFormatError(path, n, f"expected {count} numbers ({what}), found {len(fields)}")
    try:
        vals = np.array([float(f) for f in fields])
    except ValueError as e:
        raise PoseFormatError(path, n, f"not a number: {e}") from None
    if not np.all(np.isfinite(vals)):
        raise PoseFormatError(path, n, "non-finite value")
    return vals


def _check_rotation(path: Path, n: int, R: np.ndarray, tol: float = 1e-3) -> None:
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > tol or np.linalg.det(R) < 0:
        raise PoseFormatError(path, n, f"rotation part is not a rotation (orthogonality error {err:.2e})")


def _check_poses(name: str, poses: ArrayLike) -> np.ndarray:
    P = _as_f64(name, poses, (4, 4))
    if P.ndim != 3:
        raise ValueError(f"Expect `{name}` to have shape (N, 4, 4), actually: {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError(f"Expect `{name}` to be finite, actually: it contains NaN or inf")
    return P


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a handle: np.save would append ".npy" to the temporary name
        np.save(f, array)


def read_matrix_poses(path: str | os.PathLike[str], convention: str = "c2w") -> Pose:
    """Read 4x4 poses: a ``.npy`` array ``(N, 4, 4)`` or text with 16 (or 12) numbers per line, row-major.

    Args:
        path: The file.
        convention: ``"c2w"`` if the file holds camera-to-world matrices, ``"w2c"`` if world-to-camera.

    Returns:
        ``c2w`` ``(N, 4, 4)`` float64.
    """
    if convention not in ("c2w", "w2c"):
        raise ValueError(f"Expect `convention` to be 'c2w' or 'w2c', actually: {convention!r}")
    p = Path(path)
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 3 or arr.shape[1:] not in ((4, 4), (3, 4)):
            raise PoseFormatError(p, 0, f"expected an array of shape (N, 4, 4) or (N, 3, 4), found {arr.shape}")
        P = np.zeros((arr.shape[0], 4, 4))
        P[:, :3] = arr[:, :3]
        P[:, 3, 3] = 1.0
        if not np.all(np.isfinite(P)):
            raise PoseFormatError(p, 0, "non-finite value")
    else:
        mats = []
        for n, fields in _data_lines(p):
            if len(fields) not in (12, 16):
                raise PoseFormatError(p, n, f"expected 12 or 16 numbers (a row-major 3x4 or 4x4 matrix), found {len(fields)}")
            v = _floats(p, n, fields, None, "matrix")
            M = np.eye(4)
            M[: len(v) // 4] = v.reshape(-1, 4)
            _check_rotation(p, n, M[:3, :3])
            mats.append(M)
        P = np.stack(mats) if mats else np.zeros((0, 4, 4))
    return invert_se3(P) if convention == "w2c" else P


def write_matrix_poses(path: str | os.PathLike[str], c2w: ArrayLike, convention: str = "c2w") -> None:
    """Write poses ``(N, 4, 4)`` as 16 numbers per line (``.npy`` if the name ends so); atomic."""
    P = _check_poses("c2w", c2w)
    if convention not in ("c2w", "w2c"):
        raise ValueError(f"Expect `convention` to be 'c2w' or 'w2c', actually: {convention!r}")
    out = invert_se3(P) if convention == "w2c" else P
    p = Path(path)
    if p.suffix == ".npy":
        atomic_write(p, lambda tmp: _save_npy(tmp, out))
        return
    lines = [f"# {convention} 4x4 row-major"] + [" ".join(f"{x:.17g}" for x in M.ravel()) for M in out]
    atomic_write_text(p, "\n".join(lines) + "\n")


def read_tum_poses(path: str | os.PathLike[str]) -> tuple[np.ndarray, Pose]:
    """Read a TUM RGB-D trajectory: lines ``timestamp tx ty tz qx qy qz qw`` (camera-to-world).

    Returns:
        ``timestamps`` ``(N,)`` float64 seconds and ``c2w`` ``(N, 4, 4)`` float64.
    """
    p = Path(path)
    stamps, poses = [], []
    for n, fields in _data_lines(p):
        v = _floats(p, n, fields, 8, "timestamp tx ty tz qx qy qz qw")
        if np.linalg.norm(v[4:]) < 1e-9:
            raise PoseFormatError(p, n, "zero quaternion")
        stamps.append(v[0])
        poses.append(se3(quat_to_matrix(v[4:]), v[1:4]))
    return np.array(stamps), (np.stack(poses) if poses else np.zeros((0, 4, 4)))


def write_tum_poses(path: str | os.PathLike[str], timestamps: ArrayLike, c2w: ArrayLike) -> None:
    """Write a TUM trajectory (``timestamp tx ty tz qx qy qz qw`` per line); atomic."""
    P = _check_poses("c2w", c2w)
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.shape != (P.shape[0],):
        raise ValueError(f"Expect `timestamps` to have shape ({P.shape[0]},), actually: {ts.shape}")
    q = matrix_to_quat(P[:, :3, :3])
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for t, M, qq in zip(ts, P, q):
        lines.append(" ".join(f"{x:.9f}" for x in [t, *M[:3, 3], *qq]))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_kitti_poses(path: str | os.PathLike[str]) -> Pose:
    """Read KITTI odometry poses: 12 numbers per line, the row-major 3x4 camera-to-world matrix."""
    p = Path(path)
    poses = []
    for n, fields in _data_lines(p):
        v = _floats(p, n, fields, 12, "a row-major 3x4 matrix")
        M = np.eye(4)
        M[:3] = v.reshape(3, 4)
        _check_rotation(p, n, M[:3, :3])
        poses.append(M)
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def write_kitti_poses(path: str | os.PathLike[str], c2w: ArrayLike) -> None:
    """Write KITTI odometry poses (12 numbers per line); atomic."""
    P = _check_poses("c2w", c2w)
    lines = [" ".join(f"{x:.12e}" for x in M[:3].ravel()) for M in P]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_re10k_cameras(
    path: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, Pose, str]:
    """Read a RealEstate10K camera file.

    The first line is the video URL; every other line is
    ``timestamp_us fx fy cx cy k1 k2 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2``: intrinsics
    normalised by the image width (fx, cx) and height (fy, cy), two unused
    distortion terms, and the row-major 3x4 world-to-camera matrix.

    Args:
        path: The ``.txt`` camera file.
        image_size: ``(H, W)`` of the frames; when given the intrinsics come back in pixels
            (pixel-centre convention: ``cx_px = cx * W - 0.5``), otherwise normalised ``(fx, fy, cx, cy)``.

    Returns:
        ``timestamps`` ``(N,)`` int64 microseconds, intrinsics (``(N, 3, 3)`` in pixels or
        ``(N, 4)`` normalised), ``c2w`` ``(N, 4, 4)`` float64, and the URL line.
    """
    p = Path(path)
    try:
        raw = p.read_text().splitlines()
    except OSError as e:
        raise FileNotFoundError(f"Cannot read camera file {p}: {e.strerror}") from e
    if not raw:
        raise PoseFormatError(p, 1, "empty file; expected the video URL on the first line")
    url = raw[0].strip()
    stamps, intr, poses = [], [], []
    for n, line in enumerate(raw[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        v = _floats(p, n, fields, 19, "timestamp fx fy cx cy k1 k2 and a 3x4 w2c matrix")
        if v[1] <= 0 or v[2] <= 0:
            raise PoseFormatError(p, n, f"focal lengths must be positive, found fx={v[1]}, fy={v[2]}")
        w2c = np.eye(4)
        w2c[:3] = v[7:].reshape(3, 4)
        _check_rotation(p, n, w2c[:3, :3])
        stamps.append(int(round(v[0])))
        intr.append(v[1:5])
        poses.append(invert_se3(w2c))
    norm = np.array(intr).reshape(-1, 4)
    c2w = np.stack(poses) if poses else np.zeros((0, 4, 4))
    if image_size is None:
        return np.array(stamps, dtype=np.int64), norm, c2w, url
    H, W = image_size
    K = np.zeros((len(norm), 3, 3))
    K[:, 0, 0] = norm[:, 0] * W
    K[:, 1, 1] = norm[:, 1] * H
    K[:, 0, 2] = norm[:, 2] * W - 0.5
    K[:, 1, 2] = norm[:, 3] * H - 0.5
    K[:, 2, 2] = 1.0
    return np.array(stamps, dtype=np.int64), K, c2w, url


def write_re10k_cameras(
    path: str | os.PathLike[str],
    timestamps_us: ArrayLike,
    K: ArrayLike,
    image_size: tuple[int, int],
    c2w: ArrayLike,
    url: str = "",
) -> None:
    """Write a RealEstate10K camera file from pixel intrinsics ``(N, 3, 3)`` of ``image_size`` (H, W); atomic."""
    P = _check_poses("c2w", c2w)
    Km = _as_f64("K", K, (3, 3))
    Km = np.broadcast_to(Km, (P.shape[0], 3, 3))
    ts = np.asarray(timestamps_us).astype(np.int64)
    if ts.shape != (P.shape[0],):
        raise ValueError(f"Expect `timestamps_us` to have shape ({P.shape[0]},), actually: {ts.shape}")
    H, W = image_size
    w2c = invert_se3(P)
    lines = [url]
    for t, k, M in zip(ts, Km, w2c):
        norm = [k[0, 0] / W, k[1, 1] / H, (k[0, 2] + 0.5) / W, (k[1, 2] + 0.5) / H]
        lines.append(" ".join([str(int(t))] + [f"{x:.12g}" for x in norm] + ["0", "0"] + [f"{x:.12g}" for x in M[:3].ravel()]))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
