"""Occupancy and height map on the ground plane: collisions, geodesic distances, start/goal sampling.

The world is metric with gravity along +y, so the ground plane is x-z. An
``OccupancyGrid`` holds, per square cell of side ``cell`` (5 cm by default):

* ``free``: there is floor and nothing in the agent's body slab (between the
  step height and the agent's height above the floor);
* ``floor_y``: the floor's y coordinate (the floor is at larger y than the
  camera, since up is -y); NaN where there is no floor.

The agent is an upright cylinder of radius ``agent_radius``. A cell is
*navigable* when its centre is at least ``agent_radius + cell / 2`` from the
centre of every non-free cell, so a navigable centre keeps the whole cylinder
clear of obstacles up to the grid's rasterisation. Geodesic distances are
shortest paths over navigable cells with 16 neighbours (the 8 adjacent cells
and 8 knight moves, a move allowed only when the cells it crosses are
navigable), which overestimates the true any-angle distance by at most ~2.7 %.
Start/goal pairs and geodesic distances use cell centres, so a sampled pair's
distance is exactly what ``geodesic_distance`` returns for it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from worldenv.geometry import rot_y, se3

__all__ = ["OccupancyGrid", "OccupancyBuilder", "NoNavigableAreaError"]

FIELD_CACHE_SIZE = 16
"""Distance fields kept per grid (one per live goal; 8 MB each for a 400 x 400 map)."""

# 16-neighbourhood: (dz, dx) steps and the cells each step passes through.
_STEPS: list[tuple[tuple[int, int], tuple[tuple[int, int], ...]]] = [
    ((0, 1), ()),
    ((1, 0), ()),
    ((1, 1), ((0, 1), (1, 0))),
    ((1, -1), ((0, -1), (1, 0))),
    ((1, 2), ((0, 1), (1, 1))),
    ((2, 1), ((1, 0), (1, 1))),
    ((1, -2), ((0, -1), (1, -1))),
    ((2, -1), ((1, 0), (1, -1))),
]


class NoNavigableAreaError(ValueError):
    """The scene has no navigable pair of cells satisfying a request."""


def _shift(a: np.ndarray, dz: int, dx: int, fill: bool | float = False) -> np.ndarray:
    """``out[z, x] = a[z + dz, x + dx]`` with ``fill`` outside."""
    out = np.full_like(a, fill)
    Z, X = a.shape
    zs, ze = max(0, -dz), min(Z, Z - dz)
    xs, xe = max(0, -dx), min(X, X - dx)
    if zs < ze and xs < xe:
        out[zs:ze, xs:xe] = a[zs + dz : ze + dz, xs + dx : xe + dx]
    return out


@dataclass
class OccupancyGrid:
    """Free space and floor height on an x-z grid, with navigation queries.

    Attributes:
        origin: World ``(x, z)`` of the corner of cell ``(0, 0)``.
        cell: Cell side in metres.
        free: ``(Nz, Nx)`` bool: floor present and the body slab empty.
        floor_y: ``(Nz, Nx)`` float32 floor height (world y), NaN where no floor.
        agent_radius: Radius of the agent's cylinder in metres.
    """

    origin: tuple[float, float]
    cell: float
    free: np.ndarray
    floor_y: np.ndarray
    agent_radius: float = 0.18
    _navigable: np.ndarray | None = field(default=None, init=False, repr=False)
    _graph: object | None = field(default=None, init=False, repr=False)
    _component: np.ndarray | None = field(default=None, init=False, repr=False)
    _fields: OrderedDict[int, np.ndarray] = field(default_factory=OrderedDict, init=False, repr=False)

    # --------------------------------------------------------------- cells

    @property
    def shape(self) -> tuple[int, int]:
        """``(Nz, Nx)``."""
        return self.free.shape  # type: ignore[return-value]

    @property
    def navigable(self) -> np.ndarray:
        """``(Nz, Nx)`` bool: cells where the agent's centre may stand."""
        if self._navigable is None:
            from scipy.ndimage import distance_transform_edt

            padded = np.pad(self.free, 1, constant_values=False)
            dist = distance_transform_edt(padded)[1:-1, 1:-1] * self.cell
            self._navigable = self.free & (dist >= self.agent_radius + 0.5 * self.cell)
        return self._navigable

    def with_radius(self, agent_radius: float) -> OccupancyGrid:
        """The same map for an agent of another radius."""
        return OccupancyGrid(self.origin, self.cell, self.free, self.floor_y, float(agent_radius))

    def to_cell(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices ``(iz, ix)`` of world points ``(..., 3)``; may be out of range."""
        p = np.asarray(p, dtype=np.float64)
        ix = np.floor((p[..., 0] - self.origin[0]) / self.cell).astype(np.int64)
        iz = np.floor((p[..., 2] - self.origin[1]) / self.cell).astype(np.int64)
        return iz, ix

    def cell_center(self, iz: np.ndarray | int, ix: np.ndarray | int) -> np.ndarray:
        """World points ``(..., 3)`` at the centre of cells on the floor (y = floor height, 0 if none)."""
        iz, ix = np.asarray(iz), np.asarray(ix)
        y = np.nan_to_num(self.floor_y[iz, ix].astype(np.float64))
        x = self.origin[0] + (ix + 0.5) * self.cell
        z = self.origin[1] + (iz + 0.5) * self.cell
        return np.stack([x, y, z], axis=-1)

    def _lookup(self, grid: np.ndarray, p: np.ndarray, outside: bool | float) -> np.ndarray:
        iz, ix = self.to_cell(p)
        Z, X = grid.shape
        inside = (iz >= 0) & (iz < Z) & (ix >= 0) & (ix < X)
        out = np.full(iz.shape, outside, dtype=grid.dtype)
        out[inside] = grid[iz[inside], ix[inside]]
        return out

    def is_navigable(self, p: np.ndarray) -> np.ndarray:
        """Whether the agent may stand at world points ``(..., 3)`` (only x and z are used)."""
        return self._lookup(self.navigable, p, False)

    def floor_height(self, p: np.ndarray) -> np.ndarray:
        """Floor y under world points ``(..., 3)``; NaN where there is no floor."""
        return self._lookup(self.floor_y, p, np.nan)

    # ----------------------------------------------------------- collision

    def collide(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray | bool:
        """Whether moving the agent in a straight line from ``p0`` to ``p1`` hits anything.

        Args:
            p0: Start points ``(..., 3)`` (or ``(3,)``); only x and z matter.
            p1: End points, broadcastable with ``p0``.

        Returns:
            Bool array of the broadcast batch shape (a Python bool for single points): True when
            any cell the segment passes through is not navigable (this includes leaving the map).
            The test is exact on the grid: every cell between consecutive grid-line crossings is checked.
        """
        a, b = np.broadcast_arrays(np.asarray(p0, np.float64), np.asarray(p1, np.float64))
        shape = a.shape[:-1]
        a2 = (a.reshape(-1, 3)[:, [0, 2]] - self.origin) / self.cell  # (N, 2) in cell units
        b2 = (b.reshape(-1, 3)[:, [0, 2]] - self.origin) / self.cell
        ts = [np.zeros((a2.shape[0], 1)), np.ones((a2.shape[0], 1))]
        for k in range(2):
            lo = np.floor(np.minimum(a2[:, k], b2[:, k]))
            hi = np.floor(np.maximum(a2[:, k], b2[:, k]))
            n = int((hi - lo).max(initial=0.0))
            if n == 0:
                continue
            lines = lo[:, None] + np.arange(1, n + 1)[None, :]  # grid lines crossed (padded)
            d = b2[:, k] - a2[:, k]
            safe = np.where(np.abs(d) < 1e-12, 1.0, d)
            t = (lines - a2[:, k : k + 1]) / safe[:, None]
            ts.append(np.clip(np.where(lines <= hi[:, None], t, 0.0), 0.0, 1.0))
        t = np.sort(np.concatenate(ts, axis=1), axis=1)  # (N, M)
        mids = np.concatenate([t, 0.5 * (t[:, 1:] + t[:, :-1])], axis=1)
        q = a2[:, None, :] + mids[..., None] * (b2 - a2)[:, None, :]  # (N, M', 2)
        ix, iz = np.floor(q[..., 0]).astype(np.int64), np.floor(q[..., 1]).astype(np.int64)
        Z, X = self.shape
        inside = (iz >= 0) & (iz < Z) & (ix >= 0) & (ix < X)
        ok = np.zeros(ix.shape, bool)
        ok[inside] = self.navigable[iz[inside], ix[inside]]
        hit = ~ok.all(axis=1)
        return bool(hit[0]) if shape == () else hit.reshape(shape)

    def step_towards(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """The farthest point on the segment ``p0 -> p1`` reachable without a collision.

        ``p0`` ``(3,)`` should be navigable; y is carried over from ``p0``.
        """
        a, b = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        d = float(np.linalg.norm((b - a)[[0, 2]]))
        n = max(int(math.ceil(d / (0.5 * self.cell))) + 1, 2)
        t = np.linspace(0.0, 1.0, n)
        ok = self.is_navigable(a + t[:, None] * (b - a))
        bad = np.flatnonzero(~ok)
        if bad.size == 0:
            return b.copy()
        last = t[max(bad[0] - 1, 0)]
        out = a + last * (b - a)
        out[1] = a[1]
        return out

    # ------------------------------------------------------------- geodesics

    def _build_graph(self) -> None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        nav = self.navigable
        Z, X = nav.shape
        idx = np.arange(Z * X).reshape(Z, X)
        rows, cols, w = [], [], []
        for (dz, dx), through in _STEPS:
            ok = nav & _shift(nav, dz, dx)
            for tz, tx in through:
                ok &= _shift(nav, tz, tx)
            src = idx[ok]
            rows.append(src)
            cols.append(src + dz * X + dx)
            w.append(np.full(src.size, math.hypot(dz, dx) * self.cell))
        r, c, ww = np.concatenate(rows), np.concatenate(cols), np.concatenate(w)
        g = coo_matrix((ww, (r, c)), shape=(Z * X, Z * X)).tocsr()
        self._graph = g
        _, labels = connected_components(g, directed=False)
        labels = labels.reshape(Z, X)
        counts = np.bincount(labels[nav], minlength=labels.max() + 1) if nav.any() else np.zeros(1, np.int64)
        self._component = nav & (labels == int(np.argmax(counts)))

    @property
    def main_component(self) -> np.ndarray:
        """``(Nz, Nx)`` bool: the largest connected navigable region (where episodes are sampled)."""
        if self._component is None:
            self._build_graph()
        assert self._component is not None
        return self._component

    def distance_field(self, goal: np.ndarray, cache: bool = True) -> np.ndarray:
        """Geodesic distance in metres ``(Nz, Nx)`` float64 from every cell to the cell of ``goal`` ``(3,)``; inf if unreachable.

        The last ``FIELD_CACHE_SIZE`` fields are cached (an episode asks for its goal's field at
        every step, and a batch of envs may share one scene); ``cache=False`` computes a field
        used once without evicting those.
        """
        from scipy.sparse.csgraph import dijkstra

        if self._graph is None:
            self._build_graph()
        iz, ix = self.to_cell(np.asarray(goal, np.float64))
        Z, X = self.shape
        if not (0 <= iz < Z and 0 <= ix < X) or not self.navigable[iz, ix]:
            return np.full((Z, X), np.inf)
        key = int(iz * X + ix)
        if key in self._fields:
            self._fields.move_to_end(key)
            return self._fields[key]
        dist = dijkstra(self._graph, directed=False, indices=key).reshape(Z, X)
        if cache:
            self._fields[key] = dist
            while len(self._fields) > FIELD_CACHE_SIZE:
                self._fields.popitem(last=False)
        return dist

    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
        """Geodesic distance between the cells of points ``a (..., 3)`` and ``b (3,)``; inf if not connected."""
        field_b = self.distance_field(b)
        out = self._lookup(field_b, np.asarray(a, np.float64), np.inf)
        nav = self.is_navigable(np.asarray(a, np.float64))
        out = np.where(nav, out, np.inf)
        return float(out) if out.ndim == 0 else out

    def shortest_path(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Waypoints ``(N, 3)`` on the floor from ``a`` to ``b``, shortened so each leg is collision-free.

        The first waypoint is ``a``'s cell centre and the last ``b``'s.

        Raises:
            NoNavigableAreaError: ``b`` is not reachable from ``a``.
        """
        field_b = self.distance_field(b)
        iz, ix = self.to_cell(np.asarray(a, np.float64))
        Z, X = self.shape
        if not (0 <= iz < Z and 0 <= ix < X) or not np.isfinite(field_b[iz, ix]):
            raise NoNavigableAreaError(f"Expect `b` reachable from `a`, actually: no navigable path from {np.round(a, 3)} to {np.round(b, 3)}")
        cells = [(int(iz), int(ix))]
        pad = np.pad(field_b, 2, constant_values=np.inf)
        nav = np.pad(self.navigable, 2, constant_values=False)
        # Only the graph's own moves: a move whose crossed cells are blocked is no edge,
        # even if the distances happen to line up.
        moves = [((dz, dx), th) for (dz, dx), th in _STEPS] + [((-dz, -dx), tuple((-a, -b) for a, b in th)) for (dz, dx), th in _STEPS]
        while field_b[cells[-1]] > 0:
            cz, cx = cells[-1]
            best, arg = field_b[cz, cx], None
            for (dz, dx), through in moves:
                v = pad[cz + dz + 2, cx + dx + 2]
                if not all(nav[cz + a + 2, cx + b + 2] for a, b in through):
                    continue
                # An edge of the shortest-path tree (up to the rounding of Dijkstra's sums).
                if v + math.hypot(dz, dx) * self.cell <= field_b[cz, cx] * (1 + 1e-12) + 1e-9 and v < best:
                    best, arg = v, (cz + dz, cx + dx)
            if arg is None:  # pragma: no cover - a Dijkstra field always has a descending neighbour
                break
            cells.append(arg)
        pts = self.cell_center(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]))
        # String pulling: from each kept point jump to the farthest point in straight sight.
        out = [pts[0]]
        i = 0
        while i < len(pts) - 1:
            j = len(pts) - 1
            while j > i + 1 and self.collide(pts[i], pts[j]):
                j -= 1
            out.append(pts[j])
            i = j
        return np.stack(out)

    # -------------------------------------------------------------- sampling

    def sample_navigable(self, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        """``n`` random cell centres ``(n, 3)`` in the main navigable component."""
        cells = np.flatnonzero(self.main_component)
        if cells.size == 0:
            raise NoNavigableAreaError("Expect a navigable area, actually: the occupancy map has no navigable cell")
        pick = cells[rng.integers(0, cells.size, size=n)]
        return self.cell_center(pick // self.shape[1], pick % self.shape[1])

    def sample_start_goal(
        self, rng: np.random.Generator, min_geodesic: float, max_geodesic: float, camera_height: float, max_tries: int = 20
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Sample a start pose and a goal whose geodesic distance is in ``[min_geodesic, max_geodesic]``.

        Returns:
            ``start`` c2w ``(4, 4)`` float64 (level camera ``camera_height`` above the floor, random
            yaw), ``goal`` ``(3,)`` on the floor, and the geodesic distance in metres.

        Raises:
            NoNavigableAreaError: No pair in range was found in ``max_tries`` starts.
        """
        if not (0 <= min_geodesic <= max_geodesic):
            raise ValueError(f"Expect 0 <= `min_geodesic` <= `max_geodesic`, actually: {min_geodesic}, {max_geodesic}")
        longest = 0.0
        for _ in range(max_tries):
            # Goal first: its distance field picks the start and then serves every step of the episode.
            goal = self.sample_navigable(rng)[0]
            dist = self.distance_field(goal)
            ok = np.isfinite(dist) & (dist >= min_geodesic) & (dist <= max_geodesic) & self.main_component
            finite = dist[np.isfinite(dist)]
            longest = max(longest, float(finite.max(initial=0.0)))
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                continue
            s = cand[rng.integers(0, cand.size)]
            sz, sx = s // self.shape[1], s % self.shape[1]
            start = self.cell_center(sz, sx)
            yaw = rng.uniform(-math.pi, math.pi)
            eye = start + np.array([0.0, -camera_height, 0.0])
            return se3(rot_y(yaw), eye), goal, float(dist[sz, sx])
        raise NoNavigableAreaError(
            f"Expect a start/goal pair with geodesic distance in [{min_geodesic}, {max_geodesic}] m, actually: none in "
            f"{max_tries} tries (the longest distance seen was {longest:.2f} m)"
        )


class OccupancyBuilder:
    """Rasterises floors and obstacle footprints into an ``OccupancyGrid``.

    Args:
        x_range: World ``(x_min, x_max)`` the map covers.
        z_range: World ``(z_min, z_max)``.
        cell: Cell side in metres.
    """

    def __init__(self, x_range: tuple[float, float], z_range: tuple[float, float], cell: float = 0.05) -> None:
        self.cell = float(cell)
        self.origin = (float(x_range[0]), float(z_range[0]))
        nx = int(math.ceil((x_range[1] - x_range[0]) / cell))
        nz = int(math.ceil((z_range[1] - z_range[0]) / cell))
        self.floor_y = np.full((nz, nx), np.nan, np.float32)
        self.blocked = np.zeros((nz, nx), bool)
        xc = self.origin[0] + (np.arange(nx) + 0.5) * cell
        zc = self.origin[1] + (np.arange(nz) + 0.5) * cell
        self._x, self._z = np.meshgrid(xc, zc, indexing="xy")

    def _window(self, xmin: float, xmax: float, zmin: float, zmax: float) -> tuple[slice, slice]:
        c, (x0, z0) = self.cell, self.origin
        nz, nx = self.blocked.shape
        ix0 = max(0, int(math.floor((xmin - x0) / c)))
        ix1 = min(nx, int(math.ceil((xmax - x0) / c)) + 1)
        iz0 = max(0, int(math.floor((zmin - z0) / c)))
        iz1 = min(nz, int(math.ceil((zmax - z0) / c)) + 1)
        return slice(iz0, max(iz0, iz1)), slice(ix0, max(ix0, ix1))

    def _rect_mask(self, center: tuple[float, float], half: tuple[float, float], yaw: float) -> tuple[tuple[slice, slice], np.ndarray]:
        cx, cz = center
        hx, hz = half
        r = math.hypot(hx, hz)
        win = self._window(cx - r, cx + r, cz - r, cz + r)
        dx, dz = self._x[win] - cx, self._z[win] - cz
        cs, sn = math.cos(yaw), math.sin(yaw)
        # Box axes after a yaw about +y: ex = (cos, -sin), ez = (sin, cos) in (x, z).
        lx = dx * cs - dz * sn
        lz = dx * sn + dz * cs
        return win, (np.abs(lx) <= hx) & (np.abs(lz) <= hz)

    def floor_rect(self, x0: float, z0: float, x1: float, z1: float, y: float = 0.0) -> None:
        """Mark the axis-aligned rectangle as floor at height ``y``."""
        win, m = self._rect_mask((0.5 * (x0 + x1), 0.5 * (z0 + z1)), (0.5 * abs(x1 - x0), 0.5 * abs(z1 - z0)), 0.0)
        self.floor_y[win][m] = y

    def obstacle_rect(self, center: tuple[float, float], size: tuple[float, float], yaw: float = 0.0) -> None:
        """Block a rectangle of ``size`` (along x, z before turning) centred at ``center`` (x, z), turned by ``yaw``."""
        win, m = self._rect_mask(center, (0.5 * size[0], 0.5 * size[1]), yaw)
        self.blocked[win] |= m

    def obstacle_circle(self, center: tuple[float, float], radius: float) -> None:
        """Block a disc."""
        cx, cz = center
        win = self._window(cx - radius, cx + radius, cz - radius, cz + radius)
        self.blocked[win] |= (self._x[win] - cx) ** 2 + (self._z[win] - cz) ** 2 <= radius * radius

    def obstacle_points(self, xz: np.ndarray) -> None:
        """Block the cells containing points ``(N, 2)`` (x, z)."""
        ix = np.floor((xz[:, 0] - self.origin[0]) / self.cell).astype(np.int64)
        iz = np.floor((xz[:, 1] - self.origin[1]) / self.cell).astype(np.int64)
        nz, nx = self.blocked.shape
        ok = (ix >= 0) & (ix < nx) & (iz >= 0) & (iz < nz)
        self.blocked[iz[ok], ix[ok]] = True

    def build(self, agent_radius: float = 0.18) -> OccupancyGrid:
        """The grid; free = has floor and not blocked."""
        free = np.isfinite(self.floor_y) & ~self.blocked
        return OccupancyGrid(self.origin, self.cell, free, self.floor_y.copy(), float(agent_radius))
