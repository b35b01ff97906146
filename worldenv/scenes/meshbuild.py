"""Triangle soup with per-vertex materials, built from quads, boxes, cylinders and spheres.

Procedural scenes are assembled with a ``MeshBuilder`` and handed to the
renderer as one interleaved float32 vertex array (``VERTEX_FLOATS`` floats per
vertex, three vertices per triangle, no index buffer):

====== ======= ==========================================================
offset floats  meaning
====== ======= ==========================================================
0      3       world position (metres)
3      3       world normal (unit; the shader lights both sides)
6      2       texture coordinates (texture repeats; metres x ``uv_scale``)
8      3       colour (tints the texture, or is the colour when untextured)
11     4       material: texture layer (-1 = none), specular, shininess, emissive
15     1       light group (point lights of that group, -1 = every group)
====== ======= ==========================================================

Texture coordinates are metric so that a brick is brick-sized whatever the
wall's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Material", "MeshBuilder", "VERTEX_FLOATS"]

VERTEX_FLOATS = 16


@dataclass(frozen=True)
class Material:
    """Surface appearance shared by the triangles of one part.

    Attributes:
        layer: Texture-array layer, or -1 for a flat colour.
        color: RGB in [0, 1]; multiplies the texture.
        specular: Strength of the view-dependent highlight (scaled by the texture's specular mask).
        shininess: Blinn-Phong exponent; higher is a tighter highlight.
        emissive: 0 for lit surfaces, 1 for light sources (shown at full colour).
        uv_scale: Texture repeats per metre.
    """

    layer: int = -1
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    specular: float = 0.1
    shininess: float = 16.0
    emissive: float = 0.0
    uv_scale: float = 1.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class MeshBuilder:
    """Accumulates triangles.

    ``group`` is the light group stamped on what is added next. ``priority`` orders
    the output: lower first. Drawing small, near things before the large surfaces
    behind them lets the depth test reject hidden fragments before they are shaded.
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._priority: list[int] = []
        self.group: int = -1
        self.priority: int = 0

    # ------------------------------------------------------------- low level

    def triangles(self, pos: np.ndarray, nrm: np.ndarray, uv: np.ndarray, mat: Material) -> None:
        """Add triangles from per-vertex arrays ``pos (3N, 3)``, ``nrm (3N, 3)``, ``uv (3N, 2)``."""
        n = pos.shape[0]
        assert n % 3 == 0 and nrm.shape == (n, 3) and uv.shape == (n, 2)
        v = np.empty((n, VERTEX_FLOATS), dtype=np.float64)
        v[:, 0:3] = pos
        v[:, 3:6] = nrm
        v[:, 6:8] = uv * mat.uv_scale
        v[:, 8:11] = mat.color
        v[:, 11:15] = (mat.layer, mat.specular, mat.shininess, mat.emissive)
        v[:, 15] = self.group
        self._chunks.append(v)
        self._priority.append(self.priority)

    def quad(self, origin: np.ndarray, du: np.ndarray, dv: np.ndarray, mat: Material, uv0: tuple[float, float] = (0.0, 0.0)) -> None:
        """Add the parallelogram ``origin + s du + t dv`` for s, t in [0, 1].

        The normal is ``du x dv``; texture coordinates run along ``du`` and ``dv`` in metres.
        """
        o, a, b = (np.asarray(x, dtype=np.float64) for x in (origin, du, dv))
        la, lb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if la < 1e-9 or lb < 1e-9:
            return
        n = _unit(np.cross(a, b))
        corners = np.stack([o, o + a, o + a + b, o + b])
        uvs = np.array([[0, 0], [la, 0], [la, lb], [0, lb]]) + np.asarray(uv0)
        idx = [0, 1, 2, 0, 2, 3]
        self.triangles(corners[idx], np.tile(n, (6, 1)), uvs[idx], mat)

    # ------------------------------------------------------------ primitives

    def box(
        self,
        center: np.ndarray | tuple[float, float, float],
        size: np.ndarray | tuple[float, float, float],
        mat: Material,
        yaw: float = 0.0,
        top: Material | None = None,
        skip: tuple[str, ...] = (),
    ) -> None:
        """Add a box of extent ``size`` (x, y, z) centred at ``center``, turned by ``yaw`` about y.

        Args:
            top: Material of the upward face (world -y); defaults to ``mat``.
            skip: Faces to omit, among ``"+x", "-x", "+y", "-y", "+z", "-z"`` (box-local).
        """
        c = np.asarray(center, dtype=np.float64)
        hx, hy, hz = (0.5 * float(s) for s in size)
        cs, sn = math.cos(yaw), math.sin(yaw)
        ex = np.array([cs, 0.0, -sn])
        ey = np.array([0.0, 1.0, 0.0])
        ez = np.array([sn, 0.0, cs])
        # (origin, du, dv) with du x dv the outward normal. On the side faces dv points up
        # (-y) and du to the right of a viewer facing the face, so images stand upright.
        up = -2 * hy * ey
        faces = {
            "+x": (c + hx * ex + hy * ey - hz * ez, 2 * hz * ez, up),
            "-x": (c - hx * ex + hy * ey + hz * ez, -2 * hz * ez, up),
            "+z": (c + hz * ez + hy * ey + hx * ex, -2 * hx * ex, up),
            "-z": (c - hz * ez + hy * ey - hx * ex, 2 * hx * ex, up),
            "+y": (c + hy * ey - hx * ex - hz * ez, 2 * hz * ez, 2 * hx * ex),
            "-y": (c - hy * ey - hx * ex - hz * ez, 2 * hx * ex, 2 * hz * ez),
        }
        for name, (o, a, b) in faces.items():
            if name in skip:
                continue
            self.quad(o, a, b, (top or mat) if name == "-y" else mat)

    def cylinder(
        self,
        base: np.ndarray | tuple[float, float, float],
        radius: float,
        height: float,
        mat: Material,
        segments: int = 20,
        caps: bool = True,
        top_radius: float | None = None,
        rotation: np.ndarray | None = None,
    ) -> None:
        """Add a cylinder (or cone frustum) standing on ``base`` and rising ``height`` along -y.

        ``rotation`` ``(3, 3)``, if given, turns the cylinder about ``base`` (e.g. a wheel's axle).
        """
        b = np.asarray(base, dtype=np.float64)
        R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        r0, r1 = float(radius), float(radius if top_radius is None else top_radius)
        th = np.linspace(0.0, 2.0 * math.pi, segments + 1)
        ring = np.stack([np.cos(th), np.zeros_like(th), np.sin(th)], axis=-1)
        lo = r0 * ring
        hi = r1 * ring + np.array([0.0, -height, 0.0])
        slope = (r0 - r1) / max(height, 1e-9)
        nr = ring + np.array([0.0, -slope, 0.0])
        nr /= np.linalg.norm(nr, axis=-1, keepdims=True)
        arc = th * 0.5 * (r0 + r1)
        i = np.arange(segments)
        pos = np.stack([lo[i], lo[i + 1], hi[i + 1], lo[i], hi[i + 1], hi[i]], axis=1).reshape(-1, 3)
        nrm = np.stack([nr[i], nr[i + 1], nr[i + 1], nr[i], nr[i + 1], nr[i]], axis=1).reshape(-1, 3)
        a0, a1 = arc[i], arc[i + 1]
        z, hh = np.zeros(segments), np.full(segments, float(height))
        uv = np.stack(
            [np.stack(q, -1) for q in ((a0, z), (a1, z), (a1, hh), (a0, z), (a1, hh), (a0, hh))], axis=1
        ).reshape(-1, 2)
        self.triangles(b + pos @ R.T, nrm @ R.T, uv, mat)
        if caps:
            for y, r, n in ((0.0, r0, 1.0), (-height, r1, -1.0)):
                if r <= 0:
                    continue
                c = np.array([0.0, y, 0.0])
                tri = np.stack([np.broadcast_to(c, (segments, 3)), c + r * ring[i], c + r * ring[i + 1]], axis=1).reshape(-1, 3)
                tuv = tri[:, [0, 2]]
                nn = np.tile([0.0, n, 0.0], (3 * segments, 1))
                self.triangles(b + tri @ R.T, nn @ R.T, tuv, mat)

    def sphere(self, center: np.ndarray | tuple[float, float, float], radius: float, mat: Material, segments: int = 18, rings: int = 10) -> None:
        """Add a UV sphere."""
        c = np.asarray(center, dtype=np.float64)
        th = np.linspace(0.0, 2.0 * math.pi, segments + 1)
        ph = np.linspace(0.0, math.pi, rings + 1)
        P, T = np.meshgrid(ph, th, indexing="ij")  # (rings+1, segments+1)
        d = np.stack([np.sin(P) * np.cos(T), -np.cos(P), np.sin(P) * np.sin(T)], axis=-1)
        uvg = np.stack([T * radius, P * radius], axis=-1)
        i, j = np.meshgrid(np.arange(rings), np.arange(segments), indexing="ij")
        i, j = i.ravel(), j.ravel()
        tri = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j), (i + 1, j + 1), (i, j + 1)]
        dn = np.stack([d[a, b] for a, b in tri], axis=1).reshape(-1, 3)
        uv = np.stack([uvg[a, b] for a, b in tri], axis=1).reshape(-1, 2)
        self.triangles(c + radius * dn, dn, uv, mat)

    # ------------------------------------------------------------------ output

    def __len__(self) -> int:
        return sum(c.shape[0] for c in self._chunks) // 3

    def build(self) -> np.ndarray:
        """All vertices ``(3 * n_triangles, VERTEX_FLOATS)`` float32."""
        if not self._chunks:
            return np.zeros((0, VERTEX_FLOATS), dtype=np.float32)
        order = sorted(range(len(self._chunks)), key=lambda i: self._priority[i])  # stable
        v = np.concatenate([self._chunks[i] for i in order]).astype(np.float32)
        # Drop degenerate triangles (a sphere's pole fans): they cover no pixel.
        t = v[:, :3].astype(np.float64).reshape(-1, 3, 3)
        area = np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=-1)
        return np.ascontiguousarray(v.reshape(-1, 3, VERTEX_FLOATS)[area > 1e-10].reshape(-1, VERTEX_FLOATS))
