"""Scenes from mesh files (OBJ, GLB/GLTF, PLY, anything trimesh loads), with textures or vertex colours.

Axes. Mesh files are Y-up by convention (OBJ, glTF) while worldenv's world
has gravity along +y, so the loader turns the file's up axis (``up``:
``"+y"``, ``"+z"`` or ``"-y"``) onto worldenv's up, ``(0, -1, 0)``, and
multiplies by ``scale`` to get metres.

Occupancy. The surface is sampled every ~2.5 cm (deterministically). The
floor is the height holding the most upward-facing area, provided that area
covers a quarter of the footprint within 25 cm of the mesh's lowest point;
cells with floor
samples at that height are floor, and cells with any sample between the
step height (10 cm) and the agent's height (1.5 m) above it are blocked,
as are enclosed patches of floor under ``min_region_area`` (the hollow insides
of closed objects).
A mesh without such a floor (a single object) stands on a generated ground
plane that extends ``ground_margin`` metres around it, so the agent can walk
around it; reference views then orbit the object.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldenv._checks import check_size
from worldenv.geometry import intrinsics_from_fov, look_at, rot_x
from worldenv.scenes.base import RenderedScene, View
from worldenv.scenes.meshbuild import VERTEX_FLOATS, Material, MeshBuilder
from worldenv.scenes.occupancy import OccupancyBuilder
from worldenv.scenes.renderer import Lighting
from worldenv.scenes.textures import make_texture

__all__ = ["MeshConfig", "MeshScene", "load_mesh_triangles"]

_UP = {"+y": rot_x(math.pi), "+z": rot_x(math.pi / 2), "-y": np.eye(3)}


@dataclass(frozen=True)
class MeshConfig:
    """Options of ``mesh:<path>`` scenes.

    Attributes:
        up: The file's up axis: ``"+y"`` (OBJ/glTF convention), ``"+z"`` or ``"-y"``.
        scale: Multiplies the file's coordinates to give metres.
        texture_size: Side every texture is resampled to (they share one texture array).
        cell: Occupancy cell in metres.
        ground_margin: Extent of the generated ground around a floorless mesh, in metres.
        camera_height: Camera height above the floor in metres.
        agent_radius: The agent's collision radius in metres.
        shading: ``"shaded"`` (ambient + key light + highlights) or ``"flat"`` (albedo only, for scans with baked light).
        min_region_area: Enclosed patches of open floor smaller than this (square metres) are
            taken to be the insides of closed objects and blocked.
    """

    up: str = "+y"
    scale: float = 1.0
    texture_size: int = 512
    cell: float = 0.05
    ground_margin: float = 3.0
    camera_height: float = 1.5
    agent_radius: float = 0.18
    shading: str = "shaded"
    min_region_area: float = 1.0

    def __post_init__(self) -> None:
        if self.up not in _UP:
            raise ValueError(f"Expect `up` to be one of {sorted(_UP)}, actually: {self.up!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"Expect `scale` to be positive, actually: {self.scale}")
        if self.shading not in ("shaded", "flat"):
            raise ValueError(f"Expect `shading` to be 'shaded' or 'flat', actually: {self.shading!r}")
        if self.texture_size not in (64, 128, 256, 512, 1024, 2048):
            raise ValueError(f"Expect `texture_size` to be a power of two in [64, 2048], actually: {self.texture_size}")


def _image_rgba(img: Any, size: int) -> np.ndarray:
    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
    rgb = np.asarray(im, dtype=np.uint8)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)


def load_mesh_triangles(path: str | os.PathLike[str], up: str = "+y", scale: float = 1.0, texture_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file into the renderer's vertex layout.

    Returns:
        ``vertices`` ``(3 N, VERTEX_FLOATS)`` float32 in worldenv's frame and ``textures``
        ``(L, S, S, 4)`` uint8 (L may be 0).
    """
    try:
        import trimesh
    except ImportError as e:  # pragma: no cover - trimesh is a dependency of mesh scenes
        raise ImportError("mesh scenes need trimesh: `pip install trimesh`") from e
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Expect a mesh file at {p}, actually: it does not exist")
    try:
        loaded = trimesh.load(str(p), force="scene", process=False)
    except Exception as e:
        raise ValueError(f"Cannot read mesh {p}: {type(e).__name__}: {e}") from e
    R = _UP[up] * float(scale)
    Rn = _UP[up]
    chunks, layers = [], []
    for geom in loaded.dump(concatenate=False):
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue
        f = np.asarray(geom.faces)
        pos = np.asarray(geom.vertices, dtype=np.float64)[f].reshape(-1, 3) @ R.T
        nrm = np.asarray(geom.vertex_normals, dtype=np.float64)[f].reshape(-1, 3) @ Rn.T
        n = pos.shape[0]
        v = np.zeros((n, VERTEX_FLOATS))
        v[:, 0:3], v[:, 3:6] = pos, nrm
        v[:, 8:11] = 1.0
        v[:, 11:15] = (-1.0, 0.15, 24.0, 0.0)
        v[:, 15] = -1.0
        vis = geom.visual
        if getattr(vis, "kind", None) == "texture" and getattr(vis, "uv", None) is not None:
            mat = vis.material
            image = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
            # glTF multiplies the texture by baseColorFactor; an OBJ texture replaces Kd.
            factor = getattr(mat, "baseColorFactor", None)
            if factor is None and image is None:
                factor = getattr(mat, "diffuse", None)
            if factor is not None:
                v[:, 8:11] = np.asarray(factor, dtype=np.float64)[:3] / 255.0
            if image is not None:
                layers.append(_image_rgba(image, texture_size))
                v[:, 11] = len(layers) - 1
                v[:, 6:8] = np.asarray(vis.uv, dtype=np.float64)[f].reshape(-1, 2)
        elif getattr(vis, "kind", None) in ("vertex", "face"):
            if vis.kind == "vertex":
                c = np.asarray(vis.vertex_colors, dtype=np.float64)[f].reshape(-1, 4)
            else:
                c = np.repeat(np.asarray(vis.face_colors, dtype=np.float64), 3, axis=0)
            v[:, 8:11] = c[:, :3] / 255.0
        chunks.append(v)
    if not chunks:
        raise ValueError(f"Expect {p} to hold triangles, actually: no triangle mesh in it")
    verts = np.concatenate(chunks).astype(np.float32)
    tex = np.stack(layers) if layers else np.zeros((0, texture_size, texture_size, 4), np.uint8)
    return verts, tex


def _surface_samples(tri: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(M, 3)`` on triangles ``(N, 3, 3)`` on a barycentric lattice at most ``spacing`` apart, and their face normals."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    nrm = np.cross(e1, e2)
    nn = np.linalg.norm(nrm, axis=-1, keepdims=True)
    nrm = nrm / np.maximum(nn, 1e-12)
    longest = np.max(np.linalg.norm(np.stack([e1, e2, tri[:, 2] - tri[:, 1]], 1), axis=-1), axis=-1)
    k = np.clip(np.ceil(longest / spacing).astype(np.int64), 1, 400)
    pts, nor = [], []
    for kk in np.unique(k):
        sel = np.flatnonzero(k == kk)
        a, b = np.meshgrid(np.arange(kk + 1), np.arange(kk + 1), indexing="ij")
        keep = a + b <= kk
        bary = np.stack([a[keep], b[keep]], -1) / kk  # (P, 2)
        for chunk in np.array_split(sel, max(1, sel.size * bary.shape[0] // 2_000_000 + 1)):
            t = tri[chunk]
            p = t[:, None, 0] + bary[None, :, 0:1] * (t[:, None, 1] - t[:, None, 0]) + bary[None, :, 1:2] * (t[:, None, 2] - t[:, None, 0])
            pts.append(p.reshape(-1, 3))
            nor.append(np.repeat(nrm[chunk], bary.shape[0], axis=0))
    return np.concatenate(pts), np.concatenate(nor)


class MeshScene(RenderedScene):
    """A scene from a mesh file; see the module docstring.

    Args:
        path: The mesh file.
        seed: Seed (used for the generated ground's texture only).
        config: Options.
    """

    def __init__(self, path: str | os.PathLike[str], seed: int = 0, config: MeshConfig | None = None) -> None:
        self.config = cfg = config or MeshConfig()
        self.path = Path(path)
        self.spec, self.seed = f"mesh:{os.fspath(path)}", int(seed)
        self.camera_height, self.agent_radius = cfg.camera_height, cfg.agent_radius
        verts, tex = load_mesh_triangles(path, cfg.up, cfg.scale, cfg.texture_size)
        tri = verts[:, :3].astype(np.float64).reshape(-1, 3, 3)
        lo, hi = tri.reshape(-1, 3).min(0), tri.reshape(-1, 3).max(0)
        pts, nor = _surface_samples(tri, 0.5 * cfg.cell)
        up_facing = nor[:, 1] < -0.9
        floor_y: float | None = None
        if up_facing.any():
            bins = np.round(pts[up_facing, 1] / 0.05).astype(np.int64)
            vals, counts = np.unique(bins, return_counts=True)
            footprint = (hi[0] - lo[0]) * (hi[2] - lo[2])
            # A floor is a large up-facing area (samples are ~cell/2 apart) at the bottom of the mesh.
            big = (counts * (0.5 * cfg.cell) ** 2 >= 0.25 * footprint) & (vals * 0.05 >= hi[1] - 0.25)
            if big.any():
                best = int(np.flatnonzero(big)[np.argmax(counts[big])])
                floor_y = float(np.median(pts[up_facing][bins == vals[best], 1]))
        self.has_ground = floor_y is None
        margin = cfg.ground_margin if self.has_ground else 0.5
        x0, x1, z0, z1 = lo[0] - margin, hi[0] + margin, lo[2] - margin, hi[2] + margin
        occ = OccupancyBuilder((x0, x1), (z0, z1), cfg.cell)
        if self.has_ground:
            floor_y = float(hi[1])  # the lowest point (largest y) of the object
            occ.floor_rect(x0, z0, x1, z1, floor_y)
            mb = MeshBuilder()
            rng = np.random.default_rng([0x4D455348, self.seed])
            tex_list = list(tex)
            tex_list.append(make_texture("tiles", rng, size=cfg.texture_size))
            mb.quad((x0, floor_y, z0), (x1 - x0, 0, 0), (0, 0, z1 - z0), Material(layer=len(tex_list) - 1, specular=0.1, uv_scale=0.5))
            verts = np.concatenate([verts, mb.build()])
            tex = np.stack(tex_list)
        else:
            sel = up_facing & (np.abs(pts[:, 1] - floor_y) < 0.1)
            ix = np.floor((pts[sel, 0] - occ.origin[0]) / cfg.cell).astype(np.int64)
            iz = np.floor((pts[sel, 2] - occ.origin[1]) / cfg.cell).astype(np.int64)
            ok = (ix >= 0) & (ix < occ.floor_y.shape[1]) & (iz >= 0) & (iz < occ.floor_y.shape[0])
            occ.floor_y[iz[ok], ix[ok]] = floor_y
            from scipy.ndimage import binary_closing

            has = binary_closing(np.isfinite(occ.floor_y), iterations=2)
            occ.floor_y[has & ~np.isfinite(occ.floor_y)] = floor_y
        assert floor_y is not None
        height = floor_y - pts[:, 1]
        body = (height > 0.1) & (height < cfg.camera_height + 0.1)
        occ.obstacle_points(pts[body][:, [0, 2]])
        # Surfaces are hollow: the inside of a closed object (a pillar, a cupboard) has
        # no samples. Small enclosed patches of floor are taken to be such insides.
        from scipy.ndimage import label

        open_floor = np.isfinite(occ.floor_y) & ~occ.blocked
        labels, n = label(open_floor)
        if n:
            sizes = np.bincount(labels.ravel()) * cfg.cell**2
            small = sizes < cfg.min_region_area
            small[0] = False
            occ.blocked |= small[labels]
        self.floor_y = floor_y
        self.vertices, self.textures = verts, (tex if tex.shape[0] else None)
        ext = float(np.linalg.norm(hi - lo))
        self.near, self.far = max(1e-3, min(0.05, ext / 2000.0)), max(50.0, 4.0 * ext)
        if cfg.shading == "flat":
            self.lighting = Lighting(ambient_up=(1.0, 1.0, 1.0), ambient_down=(1.0, 1.0, 1.0), sun_color=(0.0, 0.0, 0.0))
        else:
            self.lighting = Lighting(ambient_up=(0.55, 0.55, 0.58), ambient_down=(0.35, 0.34, 0.32), sun_dir=(0.4, -0.8, 0.45), sun_color=(0.55, 0.53, 0.5))
        self._occupancy = occ.build(cfg.agent_radius)
        self._bounds = np.stack([np.minimum(lo, [x0, lo[1], z0]), np.maximum(hi, [x1, floor_y, z1])])
        self._object_box = (lo, hi)

    def reference_views(self, size: int | tuple[int, int] | None = None) -> list[View]:
        """Eight views orbiting a floorless object (looking at it), else the default four from the most open point."""
        if not self.has_ground:
            return super().reference_views(size)
        hw = check_size("size", 128 if size is None else size)
        K = intrinsics_from_fov(hw[1], hw[0], 60.0)
        lo, hi = self._object_box
        c = 0.5 * (lo + hi)
        r = 0.5 * float(np.linalg.norm(hi - lo))
        dist = max(1.2 * r / math.tan(math.radians(30.0)), r + 0.5)
        poses = []
        for k in range(8):
            a = 2 * math.pi * k / 8
            eye = np.array([c[0] + dist * math.sin(a), c[1] - 0.35 * dist, c[2] + dist * math.cos(a)])
            poses.append(look_at(eye, c))
        P = np.stack(poses)
        rgb, depth = self.render_batch(P, K, hw)
        return [View(rgb[i], depth[i], P[i], K.copy(), float(i)) for i in range(len(P))]
