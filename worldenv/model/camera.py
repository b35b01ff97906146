"""Camera encodings of the DiT: poses relative to the reference camera, Plücker rays and PRoPE matrices.

Every frame's camera is expressed in its episode's reference camera frame, so
the encodings do not change when the whole world moves. Poses are handled in
float64 (metric translations far from the origin keep their precision) and
the encodings leave as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldenv.geometry import invert_se3

__all__ = [
    "Camera",
    "relative_pose",
    "ray_directions",
    "plucker_rays",
    "normalized_intrinsics",
    "prope_matrices",
]


def relative_pose(c2w_ref: Tensor, c2w: Tensor) -> Tensor:
    """Pose of each camera in its reference camera's frame, ``inv(c2w_ref) @ c2w``.

    Computed in float64 so metric translations far from the origin keep precision.

    Args:
        c2w_ref: ``(..., 4, 4)`` reference camera-to-world.
        c2w: ``(..., 4, 4)`` camera-to-world.

    Returns:
        ``(..., 4, 4)`` float64 camera-to-reference.
    """
    return invert_se3(c2w_ref.to(torch.float64)) @ c2w.to(torch.float64)


def ray_directions(K: Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Unit ray directions, in the camera frame, through the centre of each token's pixel patch.

    OpenCV convention: pixel (u, v) has its centre at integer coordinates, x right, y down, z forward.

    Args:
        K: ``(B, 3, 3)`` pixel intrinsics of frames of ``image_size``.
        image_size: Frame (H, W) in pixels.
        grid: Token grid (gh, gw).

    Returns:
        ``(B, N, 3)`` float32, N = gh * gw, row-major over the grid.
    """
    H, W = image_size
    gh, gw = grid
    sy, sx = H / gh, W / gw
    dev = K.device
    v = (torch.arange(gh, device=dev, dtype=torch.float64) + 0.5) * sy - 0.5  # (gh,)
    u = (torch.arange(gw, device=dev, dtype=torch.float64) + 0.5) * sx - 0.5  # (gw,)
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # (gh, gw)
    pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1).reshape(1, -1, 3)  # (1, N, 3)
    d = pix @ torch.linalg.inv(K.to(torch.float64)).transpose(-1, -2)  # (B, N, 3)
    return (d / d.norm(dim=-1, keepdim=True)).to(torch.float32)


def plucker_rays(c2w_rel: Tensor, dirs: Tensor) -> Tensor:
    """Plücker coordinates ``(o x d, d)`` of token rays in the reference camera's frame.

    Args:
        c2w_rel: ``(B, 4, 4)`` camera-to-reference pose.
        dirs: ``(B, N, 3)`` unit directions in the camera frame (from :func:`ray_directions`).

    Returns:
        ``(B, N, 6)`` float32.
    """
    # float64 throughout: exact enough for metric poses, and untouched by autocast.
    pose = c2w_rel.to(torch.float64)
    d = dirs.to(torch.float64) @ pose[:, :3, :3].transpose(-1, -2)  # (B, N, 3)
    o = pose[:, None, :3, 3].expand_as(d)  # (B, N, 3)
    return torch.cat([torch.linalg.cross(o, d, dim=-1), d], dim=-1).to(torch.float32)


def normalized_intrinsics(K: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Pixel intrinsics to intrinsics of normalised image coordinates in [-1, 1].

    Args:
        K: ``(B, 3, 3)`` pixel intrinsics.
        image_size: Frame (H, W).

    Returns:
        ``(B, 3, 3)`` float64.
    """
    H, W = image_size
    S = torch.tensor(
        [[2.0 / W, 0.0, 1.0 / W - 1.0], [0.0, 2.0 / H, 1.0 / H - 1.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
        device=K.device,
    )
    return S @ K.to(torch.float64)


def prope_matrices(c2w_rel: Tensor, Kn: Tensor) -> tuple[Tensor, Tensor]:
    """Projective matrix ``P = [Kn 0; 0 1] @ w2c_rel`` of each camera and its inverse.

    Args:
        c2w_rel: ``(..., 4, 4)`` camera-to-reference pose.
        Kn: ``(..., 3, 3)`` normalised intrinsics.

    Returns:
        ``P`` and ``P^-1``, each ``(..., 4, 4)`` float32.
    """
    pose = c2w_rel.to(torch.float64)
    Kn = Kn.to(torch.float64)
    w2c = invert_se3(pose)
    k4 = torch.zeros_like(pose)
    k4[..., :3, :3] = Kn
    k4[..., 3, 3] = 1.0
    k4_inv = torch.zeros_like(pose)
    k4_inv[..., :3, :3] = torch.linalg.inv(Kn)
    k4_inv[..., 3, 3] = 1.0
    return (k4 @ w2c).to(torch.float32), (pose @ k4_inv).to(torch.float32)


@dataclass
class Camera:
    """Per-frame camera encodings, prepared once and shared by every forward of a frame.

    Attributes:
        emb: ``(B, F, N, D)`` Plücker embedding added to the tokens.
        prope_q: ``(B, F, 4, 4)`` right-multiplies query rows (``q <- P^T q``), or None.
        prope_kv: ``(B, F, 4, 4)`` right-multiplies key and value rows (``k <- P^-1 k``), or None.
        prope_o: ``(B, F, 4, 4)`` right-multiplies attention-output rows (``o <- P o``), or None.
    """

    emb: Tensor
    prope_q: Tensor | None = None
    prope_kv: Tensor | None = None
    prope_o: Tensor | None = None
