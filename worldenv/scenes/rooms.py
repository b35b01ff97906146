"""Procedural indoor scenes: rooms joined by doorways and corridors, furnished and lit.

Layout. A rectangular footprint is split recursively (binary space
partition) into rooms; some splits insert a corridor between the halves.
Adjacent rooms get doorways: a random spanning tree of the adjacency graph
(so every room is reachable) plus a few extra doors that make loops. Walls
are ``wall_thickness`` thick, doorways ``door_height`` tall with jambs and a
lintel. All layout coordinates are multiples of the occupancy cell (5 cm), so
the occupancy map rasterises walls and doorways exactly.

Content. Each room draws its own floor (wood, tiles, carpet, marble, checker,
concrete), wall (plaster, stripes, wallpaper, brick, tiles, wood panelling)
and ceiling textures; furniture-like objects built from boxes, cylinders and
spheres (tables, chairs, beds, sofas, shelves with books, cabinets, round
tables, floor lamps, plants, balls, columns, crates, rugs, benches), paintings
and windows on the walls, and ceiling lamps. Each room is a light group, so
its lamps light only its surfaces. Furniture is placed so that doorways stay
clear and the navigable area stays connected.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed
gives the same scene, and different seeds differ in layout, textures,
furniture and lighting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from worldenv.scenes.base import RenderedScene
from worldenv.scenes.meshbuild import Material, MeshBuilder
from worldenv.scenes.occupancy import OccupancyBuilder
from worldenv.scenes.renderer import MAX_LIGHT_GROUPS, Lighting
from worldenv.scenes.textures import make_texture

__all__ = ["RoomsConfig", "RoomsScene"]

GRID = 0.05  # layout snap = occupancy cell
FLOORS = ["wood", "wood", "tiles", "carpet", "marble", "checker", "concrete"]
WALLS = ["plaster", "plaster", "stripes", "wallpaper", "wallpaper", "brick", "tiles", "wood"]
PICTURES = ["wallpaper", "stripes", "marble", "checker", "plaster", "brick"]


def _snap(x: float) -> float:
    return round(round(x / GRID) * GRID, 2)


@dataclass(frozen=True)
class RoomsConfig:
    """Parameters of the ``rooms`` generator (``load_scene("rooms", seed, **fields)``).

    Attributes:
        min_rooms: Fewest rooms (corridors included).
        max_rooms: Most rooms (before the area rule); at most 12 (one light group each).
        max_room_area: Rooms larger than this (square metres) are split further, up to 12 rooms.
        width: Range of the footprint's x extent in metres.
        depth: Range of the footprint's z extent in metres.
        ceiling: Range of the ceiling height in metres.
        wall_thickness: Wall thickness in metres (a multiple of 0.05).
        door_height: Doorway height in metres.
        corridor_prob: Chance that a split inserts a corridor.
        extra_door_prob: Chance of a door between adjacent rooms beyond the spanning tree.
        furniture_density: Furniture items per square metre of room floor.
        camera_height: Camera height above the floor in metres.
        agent_radius: The agent's collision radius in metres.
    """

    min_rooms: int = 3
    max_rooms: int = 8
    max_room_area: float = 40.0
    width: tuple[float, float] = (9.0, 17.0)
    depth: tuple[float, float] = (8.0, 14.0)
    ceiling: tuple[float, float] = (2.5, 3.2)
    wall_thickness: float = 0.1
    door_height: float = 2.1
    corridor_prob: float = 0.35
    extra_door_prob: float = 0.3
    furniture_density: float = 0.12
    camera_height: float = 1.5
    agent_radius: float = 0.18

    def __post_init__(self) -> None:
        if not (1 <= self.min_rooms <= self.max_rooms <= 12):
            raise ValueError(f"Expect 1 <= `min_rooms` <= `max_rooms` <= 12, actually: {self.min_rooms}, {self.max_rooms}")
        for name in ("width", "depth", "ceiling"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ValueError(f"Expect `{name}` to be a range 0 < lo <= hi, actually: {(lo, hi)}")
        if self.ceiling[0] <= self.door_height + 0.1 or self.ceiling[0] <= self.camera_height + 0.3:
            raise ValueError(f"Expect `ceiling` above the door and the camera, actually: {self.ceiling}")
        if abs(self.wall_thickness / GRID - round(self.wall_thickness / GRID)) > 1e-9 or self.wall_thickness <= 0:
            raise ValueError(f"Expect `wall_thickness` to be a positive multiple of {GRID}, actually: {self.wall_thickness}")


@dataclass
class _Room:
    x0: float
    z0: float
    x1: float
    z1: float
    corridor: bool = False
    doors: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {"x0": [], "x1": [], "z0": [], "z1": []})

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.z1 - self.z0)


@dataclass
class _Door:
    axis: str  # "x": the wall is the plane x = line; "z": z = line
    line: float
    lo: float
    hi: float
    room: int = 0  # one of the two rooms it joins


class RoomsScene(RenderedScene):
    """An indoor scene of several furnished rooms; see the module docstring.

    Args:
        seed: The scene seed.
        config: Generator parameters.
    """

    def __init__(self, seed: int = 0, config: RoomsConfig | None = None) -> None:
        self.spec, self.seed = "rooms", int(seed)
        self.config = cfg = config or RoomsConfig()
        self.camera_height, self.agent_radius = cfg.camera_height, cfg.agent_radius
        self.near, self.far = 0.05, 60.0
        rng = np.random.default_rng([0x524F4F4D, self.seed])
        self._tex: list[np.ndarray] = []
        self.height = _snap(rng.uniform(*cfg.ceiling))
        self.rooms = self._partition(rng)
        self.doors = self._connect(rng)
        W, D = self.size
        t = cfg.wall_thickness
        self._occ = OccupancyBuilder((-0.5, W + 0.5), (-0.5, D + 0.5), GRID)
        self.mb = MeshBuilder()
        self.mb.priority = 2  # floors, walls and ceilings are drawn last (they hide least)
        self._shell(rng)
        self.mb.priority = 1
        self._lights = self._lamps(rng)
        self.mb.priority = 0
        self._furnish(rng)
        self.vertices = self.mb.build()
        self.textures = np.stack(self._tex)
        amb = rng.uniform(0.22, 0.38)
        sun = rng.uniform(0.08, 0.25)
        self.lighting = Lighting(
            ambient_up=tuple(amb * rng.uniform(0.9, 1.1, 3)),
            ambient_down=tuple(0.6 * amb * rng.uniform(0.9, 1.1, 3)),
            sun_dir=tuple(np.array([rng.uniform(-1, 1), -1.0, rng.uniform(-1, 1)])),
            sun_color=tuple(sun * np.array([1.0, 0.97, 0.9])),
            points=np.array(self._lights),
            sun_specular=0.0,  # window light is diffuse; the lamps give the highlights
        )
        self._occupancy = self._occ.build(cfg.agent_radius)
        self._bounds = np.array([[-t / 2, -self.height, -t / 2], [W + t / 2, 0.0, D + t / 2]])
        del self.mb, self._occ

    # ------------------------------------------------------------- helpers

    @property
    def size(self) -> tuple[float, float]:
        """Footprint ``(W, D)`` in metres (x and z extents)."""
        return self._size

    def _texture(self, family: str, rng: np.random.Generator) -> int:
        self._tex.append(make_texture(family, rng))
        return len(self._tex) - 1

    def _material(self, family: str, rng: np.random.Generator, scale: float = 1.0, spec: float = 0.2, shine: float = 24.0) -> Material:
        return Material(layer=self._texture(family, rng), specular=spec, shininess=shine, uv_scale=scale)

    # --------------------------------------------------------------- layout

    def _partition(self, rng: np.random.Generator) -> list[_Room]:
        cfg = self.config
        W, D = _snap(rng.uniform(*cfg.width)), _snap(rng.uniform(*cfg.depth))
        self._size = (W, D)
        target = int(rng.integers(cfg.min_rooms, cfg.max_rooms + 1))
        rooms = [_Room(0.0, 0.0, W, D)]
        min_side = 2.6
        while len(rooms) < target or (len(rooms) < 12 and max(r.area for r in rooms if not r.corridor) > cfg.max_room_area):
            cands = [r for r in rooms if not r.corridor and max(r.x1 - r.x0, r.z1 - r.z0) >= 2 * min_side]
            if not cands:
                break
            r = max(cands, key=lambda q: q.area)
            rooms.remove(r)
            along_x = (r.x1 - r.x0) >= (r.z1 - r.z0)
            lo, hi = (r.x0, r.x1) if along_x else (r.z0, r.z1)
            corridor = rng.random() < cfg.corridor_prob and hi - lo >= 2 * min_side + 1.6 and len(rooms) + 3 <= max(cfg.max_rooms, 3)
            cw = _snap(rng.uniform(1.2, 1.6)) if corridor else 0.0
            cut = _snap(rng.uniform(lo + min_side, hi - min_side - cw))
            parts = [(lo, cut), (cut, cut + cw), (cut + cw, hi)] if corridor else [(lo, cut), (cut, hi)]
            for k, (a, b) in enumerate(parts):
                is_corr = corridor and k == 1
                rooms.append(_Room(a, r.z0, b, r.z1, is_corr) if along_x else _Room(r.x0, a, r.x1, b, is_corr))
        rooms.sort(key=lambda q: (q.z0, q.x0))
        return rooms

    def _connect(self, rng: np.random.Generator) -> list[_Door]:
        cfg = self.config
        t = cfg.wall_thickness
        margin = t / 2 + 0.15
        adj: list[tuple[int, int, str, float, float, float]] = []
        for i, a in enumerate(self.rooms):
            for j, b in enumerate(self.rooms):
                if j <= i:
                    continue
                for axis, la, lb, (o0, o1) in (
                    ("x", a.x1, b.x0, (max(a.z0, b.z0), min(a.z1, b.z1))),
                    ("x", b.x1, a.x0, (max(a.z0, b.z0), min(a.z1, b.z1))),
                    ("z", a.z1, b.z0, (max(a.x0, b.x0), min(a.x1, b.x1))),
                    ("z", b.z1, a.z0, (max(a.x0, b.x0), min(a.x1, b.x1))),
                ):
                    if abs(la - lb) < 1e-6 and o1 - o0 >= 0.9 + 2 * margin:
                        adj.append((i, j, axis, la, o0 + margin, o1 - margin))
        order = rng.permutation(len(adj))
        parent = list(range(len(self.rooms)))

        def find(k: int) -> int:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        doors = []
        for e in order:
            i, j, axis, line, lo, hi = adj[e]
            joined = find(i) != find(j)
            if not joined and rng.random() >= cfg.extra_door_prob:
                continue
            parent[find(i)] = find(j)
            wide = rng.random() < 0.2
            w = min(_snap(rng.uniform(1.6, 2.4) if wide else rng.uniform(0.9, 1.3)), _snap(hi - lo - 0.05))
            p = _snap(rng.uniform(lo, hi - w))
            d = _Door(axis, line, p, p + w, i)
            doors.append(d)
            for k in (i, j):
                r = self.rooms[k]
                side = ("x0" if abs(r.x0 - line) < 1e-6 else "x1") if axis == "x" else ("z0" if abs(r.z0 - line) < 1e-6 else "z1")
                r.doors[side].append((d.lo, d.hi))
        return doors

    # ---------------------------------------------------------------- shell

    def _wall_quad(self, axis: str, line: float, s0: float, s1: float, y0: float, y1: float, inward: float, mat: Material) -> None:
        """A vertical quad on the plane ``axis = line`` spanning [s0, s1] along the other axis, heights y0..y1 above the floor."""
        if s1 - s0 < 1e-6 or y1 - y0 < 1e-6:
            return
        dv = np.array([0.0, -(y1 - y0), 0.0])
        if axis == "x":  # normal of (+z) x (-y) is +x
            o, du = (np.array([line, -y0, s0]), np.array([0, 0, s1 - s0])) if inward > 0 else (np.array([line, -y0, s1]), np.array([0, 0, s0 - s1]))
        else:  # normal of (+x) x (-y) is -z
            o, du = (np.array([s1, -y0, line]), np.array([s0 - s1, 0, 0])) if inward > 0 else (np.array([s0, -y0, line]), np.array([s1 - s0, 0, 0]))
        self.mb.quad(o, du.astype(float), dv, mat, uv0=(min(s0, s1), y0))

    def _shell(self, rng: np.random.Generator) -> None:
        cfg, mb, h = self.config, self.mb, self.height
        t, dh = cfg.wall_thickness, cfg.door_height
        ceil_mat = self._material("plaster", rng, scale=0.5, spec=0.05)
        trim = Material(color=tuple(rng.uniform(0.3, 0.95, 3)), specular=0.4, shininess=32)
        self.trim = trim
        W, D = self.size
        for gi, r in enumerate(self.rooms):
            mb.group = gi
            fam_f = "concrete" if r.corridor and rng.random() < 0.5 else FLOORS[int(rng.integers(len(FLOORS)))]
            floor = self._material(fam_f, rng, scale=float(rng.uniform(0.4, 0.9)), spec=float(rng.uniform(0.1, 0.6)), shine=float(rng.uniform(16, 64)))
            wall = self._material(WALLS[int(rng.integers(len(WALLS)))], rng, scale=float(rng.uniform(0.35, 0.8)), spec=0.1)
            ax0, az0, ax1, az1 = r.x0 + t / 2, r.z0 + t / 2, r.x1 - t / 2, r.z1 - t / 2
            mb.quad((ax0, 0.0, az0), (ax1 - ax0, 0, 0), (0, 0, az1 - az0), floor)
            mb.quad((ax0, -h, az0), (0, 0, az1 - az0), (ax1 - ax0, 0, 0), ceil_mat)
            self._occ.floor_rect(ax0, az0, ax1, az1, 0.0)
            for side, axis, line, inward, (e0, e1) in (
                ("x0", "x", ax0, 1.0, (az0, az1)),
                ("x1", "x", ax1, -1.0, (az0, az1)),
                ("z0", "z", az0, 1.0, (ax0, ax1)),
                ("z1", "z", az1, -1.0, (ax0, ax1)),
            ):
                cuts = sorted(r.doors[side])
                s = e0
                for lo, hi in cuts:
                    self._wall_quad(axis, line, s, lo, 0.0, h, inward, wall)
                    self._wall_quad(axis, line, lo, hi, dh, h, inward, wall)
                    s = hi
                self._wall_quad(axis, line, s, e1, 0.0, h, inward, wall)
                exterior = (side == "x0" and r.x0 == 0) or (side == "x1" and abs(r.x1 - W) < 1e-6) or (side == "z0" and r.z0 == 0) or (side == "z1" and abs(r.z1 - D) < 1e-6)
                free = self._free_spans(e0, e1, cuts, 0.4)
                self._decorate_wall(rng, axis, line, inward, free, exterior)
        for d in self.doors:
            mb.group = d.room  # the jambs are lit by one of the two rooms' lamps
            a, b = d.line - t / 2, d.line + t / 2
            self._occ.floor_rect(*((a, d.lo, b, d.hi) if d.axis == "x" else (d.lo, a, d.hi, b)), 0.0)
            if d.axis == "x":
                mb.quad((a, 0.0, d.lo), (0, -dh, 0), (t, 0, 0), trim)  # jamb facing +z
                mb.quad((a, 0.0, d.hi), (t, 0, 0), (0, -dh, 0), trim)  # jamb facing -z
                mb.quad((a, -dh, d.lo), (0, 0, d.hi - d.lo), (t, 0, 0), trim)  # soffit facing down
                mb.quad((a, 0.0, d.lo), (t, 0, 0), (0, 0, d.hi - d.lo), trim)  # threshold facing up
            else:
                mb.quad((d.lo, 0.0, a), (0, 0, t), (0, -dh, 0), trim)
                mb.quad((d.hi, 0.0, a), (0, -dh, 0), (0, 0, t), trim)
                mb.quad((d.lo, -dh, a), (0, 0, t), (d.hi - d.lo, 0, 0), trim)
                mb.quad((d.lo, 0.0, a), (d.hi - d.lo, 0, 0), (0, 0, t), trim)
        mb.group = -1

    @staticmethod
    def _free_spans(e0: float, e1: float, cuts: list[tuple[float, float]], pad: float) -> list[tuple[float, float]]:
        spans, s = [], e0
        for lo, hi in sorted(cuts):
            if lo - pad - s > 0:
                spans.append((s, lo - pad))
            s = max(s, hi + pad)
        if e1 - s > 0:
            spans.append((s, e1))
        return spans

    def _decorate_wall(self, rng: np.random.Generator, axis: str, line: float, inward: float, spans: list[tuple[float, float]], exterior: bool) -> None:
        """Windows on exterior walls, paintings on interior ones, on door-free spans of the wall."""
        mb = self.mb
        mb.priority, before = 1, mb.priority
        for s0, s1 in spans:
            if s1 - s0 < 1.4 or rng.random() < 0.4:
                continue
            w = float(min(rng.uniform(0.6, 1.6), s1 - s0 - 0.4))
            c = s0 + 0.2 + w / 2 + float(rng.random()) * max(0.0, s1 - s0 - 0.4 - w)
            if exterior:
                y0, y1 = 0.9, min(self.height - 0.3, 2.2)
                pane = Material(color=tuple(rng.uniform([0.65, 0.75, 0.85], [0.85, 0.9, 1.0])), emissive=1.0)
                self._wall_quad(axis, line + inward * 0.01, c - w / 2, c + w / 2, y0, y1, inward, pane)
                for off in (-w / 2, 0.0, w / 2):  # frame posts and mullion
                    ctr = (line + inward * 0.03, -(y0 + y1) / 2, c + off) if axis == "x" else (c + off, -(y0 + y1) / 2, line + inward * 0.03)
                    mb.box(ctr, (0.06, y1 - y0, 0.06), self.trim)
                for y in (y0, y1):
                    size = (0.06, 0.06, w + 0.06) if axis == "x" else (w + 0.06, 0.06, 0.06)
                    ctr = (line + inward * 0.03, -y, c) if axis == "x" else (c, -y, line + inward * 0.03)
                    mb.box(ctr, size, self.trim)
            else:
                hgt = float(rng.uniform(0.4, 0.9))
                yc = float(rng.uniform(1.3, 1.7))
                art = self._material(PICTURES[int(rng.integers(len(PICTURES)))], rng, scale=float(rng.uniform(0.8, 2.0)), spec=0.3)
                d = 0.03
                ctr = (line + inward * d / 2, -yc, c) if axis == "x" else (c, -yc, line + inward * d / 2)
                size = (d, hgt, w) if axis == "x" else (w, hgt, d)
                mb.box(ctr, size, art)
        mb.priority = before

    def _lamps(self, rng: np.random.Generator) -> list[list[float]]:
        """Ceiling lamps: a glowing disc per lamp and a point light just below it, in the room's light group."""
        lights = []
        warm = rng.uniform(0.0, 1.0)
        base = (1 - warm) * np.array([0.85, 0.9, 1.0]) + warm * np.array([1.0, 0.82, 0.6])
        for gi, r in enumerate(self.rooms[:MAX_LIGHT_GROUPS]):
            n = 1 if r.area < 20 or len(self.rooms) > 8 else 2
            for k in range(n):
                fx = (k + 1) / (n + 1) if (r.x1 - r.x0) >= (r.z1 - r.z0) else 0.5
                fz = 0.5 if (r.x1 - r.x0) >= (r.z1 - r.z0) else (k + 1) / (n + 1)
                x, z = r.x0 + fx * (r.x1 - r.x0), r.z0 + fz * (r.z1 - r.z0)
                self.mb.group = gi
                self.mb.cylinder((x, -self.height + 0.03, z), 0.22, 0.03, Material(color=tuple(np.clip(base * 1.1, 0, 1)), emissive=1.0), segments=16)
                col = base * rng.uniform(0.55, 0.9)
                lights.append([x, -self.height + 0.35, z, float(rng.uniform(2.5, 4.5)), *col, gi])
        return lights

    # ------------------------------------------------------------ furniture

    def _furnish(self, rng: np.random.Generator) -> None:
        from worldenv.scenes.furniture import Furnisher

        Furnisher(self, rng).run()
