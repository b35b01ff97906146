"""Procedural outdoor street scenes for driving.

A straight two-way road runs along +z (right-hand traffic: lanes heading +z
lie at x > 0), with one or two lanes per direction, an optional parking lane
on each side, lane markings (double yellow centre line, dashed white lane
dividers, solid edge lines), and often a crossing street with zebra
crossings and stop lines. Raised sidewalks (15 cm curbs) carry street lamps,
trees, signs, bins and hydrants; behind them stand buildings whose facades
have storeys of windows and shop fronts at street level. Cars, vans and
boxy trucks are parked in the parking lanes. A procedural sky (sun, clouds)
fills the background; its depth is 0 (unknown), as is anything beyond the far
plane.

Road markings are coplanar with the asphalt but never overlap it: the road
surface is partitioned into rectangles of asphalt and of paint, so there is
no depth fighting and the rendered depth equals a ray cast exactly.

``lanes`` lists the drivable lanes as ``(x_centre, heading)``: heading +1
drives towards +z, -1 towards -z; ``lane_width`` is their width. The road
spans z in ``[0, length]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worldenv.geometry import rot_z
from worldenv.scenes.base import RenderedScene
from worldenv.scenes.meshbuild import Material, MeshBuilder
from worldenv.scenes.occupancy import OccupancyBuilder
from worldenv.scenes.renderer import Lighting, Sky
from worldenv.scenes.textures import make_texture

__all__ = ["StreetConfig", "StreetScene"]

CURB = 0.15
GROUND_DROP = 0.03  # the open ground lies this far below the road so the two never z-fight


@dataclass(frozen=True)
class StreetConfig:
    """Parameters of the ``street`` generator (``load_scene("street", seed, **fields)``).

    Attributes:
        length: Range of the street's length along z in metres.
        lanes_per_direction: Range (inclusive) of driving lanes each way.
        lane_width: Range of the lane width in metres.
        sidewalk: Range of the sidewalk width in metres.
        parking_prob: Chance of a parking lane (with parked vehicles) on each side.
        crossing_prob: Chance of a crossing street.
        camera_height: Camera height above the road in metres (a car's driver).
        agent_radius: Collision radius for walking agents in metres.
    """

    length: tuple[float, float] = (120.0, 180.0)
    lanes_per_direction: tuple[int, int] = (1, 2)
    lane_width: tuple[float, float] = (3.0, 3.6)
    sidewalk: tuple[float, float] = (2.5, 4.5)
    parking_prob: float = 0.7
    crossing_prob: float = 0.6
    camera_height: float = 1.6
    agent_radius: float = 0.18

    def __post_init__(self) -> None:
        lo, hi = self.lanes_per_direction
        if not (1 <= lo <= hi <= 3):
            raise ValueError(f"Expect `lanes_per_direction` within [1, 3], actually: {self.lanes_per_direction}")
        if self.length[0] < 60 or self.length[0] > self.length[1]:
            raise ValueError(f"Expect `length` a range with lo >= 60 m, actually: {self.length}")


class StreetScene(RenderedScene):
    """An outdoor street; see the module docstring.

    Args:
        seed: The scene seed.
        config: Generator parameters.
    """

    def __init__(self, seed: int = 0, config: StreetConfig | None = None) -> None:
        self.spec, self.seed = "street", int(seed)
        self.config = cfg = config or StreetConfig()
        self.camera_height, self.agent_radius = cfg.camera_height, cfg.agent_radius
        self.near, self.far = 0.15, 600.0
        rng = np.random.default_rng([0x53545245, self.seed])
        self._tex: list[np.ndarray] = []
        L = self.length = round(float(rng.uniform(*cfg.length)), 1)
        n = self.lanes_per_direction = int(rng.integers(cfg.lanes_per_direction[0], cfg.lanes_per_direction[1] + 1))
        lw = self.lane_width = round(float(rng.uniform(*cfg.lane_width)), 2)
        self.parking = (rng.random() < cfg.parking_prob, rng.random() < cfg.parking_prob)  # (x < 0, x > 0)
        pw = 2.2
        self.road_left = -(n * lw + (pw if self.parking[0] else 0.3))
        self.road_right = n * lw + (pw if self.parking[1] else 0.3)
        self.sidewalk = round(float(rng.uniform(*cfg.sidewalk)), 2)
        self.lanes = [((i + 0.5) * lw, 1) for i in range(n)] + [(-(i + 0.5) * lw, -1) for i in range(n)]
        self.crossing = None
        if rng.random() < cfg.crossing_prob:
            cw = round(2 * lw * float(rng.integers(1, 3)) + 1.0, 2)
            self.crossing = (round(float(rng.uniform(0.35, 0.65)) * L, 1), cw)  # (z centre, width)
        self.mb = MeshBuilder()
        xs0, xs1 = self.road_left - self.sidewalk, self.road_right + self.sidewalk
        # 10 cm cells: the street is long, and its obstacles are large.
        self._occ = OccupancyBuilder((xs0 - 1.0, xs1 + 1.0), (-1.0, L + 1.0), 0.1)
        self._materials(rng)
        # Draw order, near and small first: props and vehicles, buildings, pavements, road and ground.
        self.mb.priority = 2
        self._road(rng)
        self._sidewalks(rng)
        self.mb.priority = 1
        self._buildings(rng)
        self.mb.priority = 0
        self._props(rng)
        self._vehicles(rng)
        self.vertices = self.mb.build()
        self.textures = np.stack(self._tex)
        self._lighting(rng)
        self._occupancy = self._occ.build(cfg.agent_radius)
        self._bounds = np.array([[xs0 - 25.0, -self._max_height, 0.0], [xs1 + 25.0, GROUND_DROP, L]])
        del self.mb, self._occ

    # ------------------------------------------------------------- materials

    def _texture(self, family: str, rng: np.random.Generator) -> int:
        self._tex.append(make_texture(family, rng))
        return len(self._tex) - 1

    def _materials(self, rng: np.random.Generator) -> None:
        t = self._texture
        self.asphalt = Material(layer=t("asphalt", rng), specular=0.15, shininess=12, uv_scale=0.25)
        self.paint_white = Material(color=(0.92, 0.92, 0.9), specular=0.3, shininess=24)
        self.paint_yellow = Material(color=(0.95, 0.75, 0.15), specular=0.3, shininess=24)
        self.pavement = Material(layer=t("concrete", rng), specular=0.05, uv_scale=float(rng.uniform(0.3, 0.6)))
        self.curb = Material(color=tuple(rng.uniform(0.55, 0.75, 1).repeat(3)), specular=0.05)
        self.ground = Material(layer=t("grass", rng), specular=0.05, uv_scale=0.2)
        self.facades = [t("facade", rng) for _ in range(6)]
        self.shops = [t("shopfront", rng) for _ in range(3)]
        self.roof = Material(layer=t("concrete", rng), color=(0.6, 0.6, 0.62), specular=0.05, uv_scale=0.2)
        self.bark = Material(layer=t("wood", rng), color=(0.6, 0.5, 0.4), uv_scale=2.0, specular=0.05)
        self.leaves = [Material(layer=t("foliage", rng), uv_scale=1.0, specular=0.15) for _ in range(2)]
        self.metal = Material(layer=t("metal", rng), color=(0.5, 0.52, 0.55), specular=0.7, shininess=48)
        self.glass = Material(color=(0.08, 0.1, 0.13), specular=1.0, shininess=96)
        self.tyre = Material(color=(0.05, 0.05, 0.05), specular=0.1, shininess=8)

    # ------------------------------------------------------------------ road

    def _paint_rects(self) -> list[tuple[float, float, float, float, Material]]:
        """Markings on the main road as (x0, x1, z0, z1, material)."""
        n, lw, L = self.lanes_per_direction, self.lane_width, self.length
        gaps = [] if self.crossing is None else [(self.crossing[0] - self.crossing[1] / 2 - 4.5, self.crossing[0] + self.crossing[1] / 2 + 4.5)]
        runs = [(0.0, L)] if not gaps else [(0.0, gaps[0][0]), (gaps[0][1], L)]
        rects = []
        for z0, z1 in runs:
            rects += [(-0.2, -0.08, z0, z1, self.paint_yellow), (0.08, 0.2, z0, z1, self.paint_yellow)]
            for side in (-1, 1):
                edge = side * n * lw
                rects.append((edge - 0.08, edge + 0.08, z0, z1, self.paint_white))
                for k in range(1, n):
                    x = side * k * lw
                    z = z0 + 1.0
                    while z + 3.0 < z1:
                        rects.append((x - 0.06, x + 0.06, z, z + 3.0, self.paint_white))
                        z += 9.0
        if self.crossing is not None:
            zc, cw = self.crossing
            for sgn in (-1, 1):
                za, zb = sorted((zc + sgn * (cw / 2 + 0.5), zc + sgn * (cw / 2 + 3.5)))
                x = self.road_left + 0.3
                while x + 0.5 < self.road_right - 0.3:
                    rects.append((x, x + 0.5, za, zb, self.paint_white))
                    x += 1.0
                # Stop line across the lanes that approach the crossing on this side.
                zs = zc + sgn * (cw / 2 + 4.0)
                xa, xb = (0.2, n * lw) if sgn < 0 else (-n * lw, -0.2)
                rects.append((xa, xb, zs - 0.2, zs + 0.2, self.paint_white))
        return rects

    def _partition(self, x0: float, x1: float, z0: float, z1: float, rects: list[tuple[float, float, float, float, Material]], base: Material) -> None:
        """Cover [x0, x1] x [z0, z1] at y = 0 with quads of ``base`` and of the paint ``rects`` (no overlaps)."""
        rects = [(max(a, x0), min(b, x1), max(c, z0), min(d, z1), m) for a, b, c, d, m in rects]
        rects = [r for r in rects if r[1] - r[0] > 1e-6 and r[3] - r[2] > 1e-6]
        xs = np.unique(np.round([x0, x1] + [v for r in rects for v in r[:2]], 6))
        zs = np.unique(np.round([z0, z1] + [v for r in rects for v in r[2:4]], 6))
        for a, b in zip(xs[:-1], xs[1:]):
            xm = 0.5 * (a + b)
            col = [r for r in rects if r[0] <= xm <= r[1]]
            run_start, run_mat = zs[0], None
            for c, d in zip(zs[:-1], zs[1:]):
                zm = 0.5 * (c + d)
                mat = next((r[4] for r in col if r[2] <= zm <= r[3]), base)
                if run_mat is None:
                    run_mat = mat
                elif mat is not run_mat:
                    self.mb.quad((a, 0.0, run_start), (b - a, 0, 0), (0, 0, c - run_start), run_mat)
                    run_start, run_mat = c, mat
            self.mb.quad((a, 0.0, run_start), (b - a, 0, 0), (0, 0, zs[-1] - run_start), run_mat)

    def _road(self, rng: np.random.Generator) -> None:
        L, mb = self.length, self.mb
        xl, xr = self.road_left, self.road_right
        self._partition(xl, xr, 0.0, L, self._paint_rects(), self.asphalt)
        self._occ.floor_rect(xl, 0.0, xr, L, 0.0)
        far = 300.0
        # The road runs on beyond the street into open country; the ground lies just below it.
        mb.quad((xl, 0.0, -far), (xr - xl, 0, 0), (0, 0, far), self.asphalt)
        mb.quad((xl, 0.0, L), (xr - xl, 0, 0), (0, 0, far), self.asphalt)
        G = 400.0
        mb.priority, before = 3, mb.priority
        mb.quad((-G, GROUND_DROP, -G), (2 * G, 0, 0), (0, 0, 2 * G + L), self.ground)
        mb.priority = before
        if self.crossing is not None:
            zc, cw = self.crossing
            xs = self.sidewalk
            ext = 60.0
            for sgn in (-1, 1):
                a, b = (xr, xr + ext) if sgn > 0 else (xl - ext, xl)
                rects = []
                x = a + 0.3 if sgn > 0 else b - 0.3 - 0.5
                zebra_end = xr + xs if sgn > 0 else xl - xs
                while (x + 0.5 < zebra_end - 0.3) if sgn > 0 else (x > zebra_end + 0.3):
                    rects.append((x, x + 0.5, zc - cw / 2 + 0.3, zc + cw / 2 - 0.3, self.paint_white))
                    x += sgn * 1.0
                far_a, far_b = (zebra_end + 1.0, b) if sgn > 0 else (a, zebra_end - 1.0)
                z = far_a
                while z + 3.0 < far_b:
                    rects.append((z, z + 3.0, zc - 0.06, zc + 0.06, self.paint_yellow))
                    z += 8.0
                self._partition(a, b, zc - cw / 2, zc + cw / 2, rects, self.asphalt)
                self._occ.floor_rect(a, zc - cw / 2, b, zc + cw / 2, 0.0)

    # ------------------------------------------------------------- sidewalks

    def _sidewalk_spans(self) -> list[tuple[float, float]]:
        L = self.length
        if self.crossing is None:
            return [(0.0, L)]
        zc, cw = self.crossing
        return [(0.0, zc - cw / 2), (zc + cw / 2, L)]

    def _slab(self, x0: float, x1: float, z0: float, z1: float) -> None:
        h = CURB + GROUND_DROP
        self.mb.box((0.5 * (x0 + x1), GROUND_DROP - h / 2, 0.5 * (z0 + z1)), (x1 - x0, h, z1 - z0), self.curb, top=self.pavement, skip=("+y",))
        self._occ.floor_rect(x0, z0, x1, z1, -CURB)

    def _sidewalks(self, rng: np.random.Generator) -> None:
        sw = self.sidewalk
        for z0, z1 in self._sidewalk_spans():
            self._slab(self.road_left - sw, self.road_left, z0, z1)
            self._slab(self.road_right, self.road_right + sw, z0, z1)
        if self.crossing is not None:
            zc, cw = self.crossing
            for a, b in ((self.road_right + sw, self.road_right + 60.0), (self.road_left - 60.0, self.road_left - sw)):
                self._slab(a, b, zc - cw / 2 - sw, zc - cw / 2)
                self._slab(a, b, zc + cw / 2, zc + cw / 2 + sw)

    # ------------------------------------------------------------- buildings

    def _building(self, rng: np.random.Generator, side: int, z0: float, z1: float) -> None:
        """A block on ``side`` (-1: x < 0) covering z0..z1 with its front on the sidewalk's outer edge."""
        mb = self.mb
        depth = float(rng.uniform(10.0, 20.0))
        storey = float(rng.uniform(3.0, 3.6))
        floors = int(rng.integers(2, 10))
        ground = float(rng.uniform(3.6, 4.5))
        h = ground + (floors - 1) * storey
        self._max_height = max(self._max_height, h + 1.0)
        front = self.road_right + self.sidewalk if side > 0 else self.road_left - self.sidewalk
        back = front + side * depth
        xa, xb = sorted((front, back))
        face = Material(layer=self.facades[int(rng.integers(len(self.facades)))], color=tuple(rng.uniform(0.85, 1.0, 3)), specular=0.6, shininess=64, uv_scale=1.0 / storey)
        cx, cz = 0.5 * (xa + xb), 0.5 * (z0 + z1)
        y0 = GROUND_DROP
        # Upper storeys as a box; the street-facing ground storey is a shop front or facade band.
        mb.box((cx, -(ground + h) / 2, cz), (xb - xa, h - ground, z1 - z0), face, top=self.roof)
        shop = rng.random() < 0.6
        gmat = Material(layer=self.shops[int(rng.integers(len(self.shops)))], specular=0.6, shininess=64, uv_scale=1.0 / ground) if shop else face
        mb.box((cx, (y0 - ground) / 2, cz), (xb - xa, ground + y0, z1 - z0), gmat, skip=("-y", "+y"))
        # A cornice along the roof line.
        mb.box((front + side * 0.15, -h - 0.15, cz), (0.5, 0.3, z1 - z0 + 0.3), self.roof)
        self._occ.obstacle_rect((cx, cz), (xb - xa, z1 - z0))

    def _buildings(self, rng: np.random.Generator) -> None:
        self._max_height = 10.0
        spans = self._sidewalk_spans()
        if self.crossing is not None:  # the crossing street's sidewalks run along the corner blocks
            sw = self.sidewalk
            spans = [(spans[0][0], spans[0][1] - sw), (spans[1][0] + sw, spans[1][1])]
        for side in (-1, 1):
            for z0, z1 in spans:
                z = z0
                while z1 - z > 4.0:
                    w = min(float(rng.uniform(8.0, 25.0)), z1 - z)
                    if z1 - z - w < 6.0:
                        w = z1 - z
                    self._building(rng, side, z, z + w)
                    z += w + (float(rng.uniform(1.5, 4.0)) if rng.random() < 0.25 else 0.0)

    # ----------------------------------------------------------------- props

    def _props(self, rng: np.random.Generator) -> None:
        mb, occ, L = self.mb, self._occ, self.length
        spans = self._sidewalk_spans()
        lamp_head = Material(color=(1.0, 0.95, 0.8), emissive=1.0)
        for side in (-1, 1):
            curb_x = self.road_right + 0.5 if side > 0 else self.road_left - 0.5
            inner_x = self.road_right + self.sidewalk - 0.6 if side > 0 else self.road_left - self.sidewalk + 0.6
            for z0, z1 in spans:
                spacing = float(rng.uniform(18.0, 30.0))
                z = z0 + float(rng.uniform(3.0, spacing))
                while z < z1 - 3.0:  # street lamps
                    hgt = float(rng.uniform(6.0, 8.0))
                    mb.cylinder((curb_x, -CURB, z), 0.09, hgt, self.metal, segments=10, caps=False)
                    arm = 1.6
                    mb.box((curb_x - side * arm / 2, -CURB - hgt + 0.05, z), (arm, 0.1, 0.1), self.metal)
                    mb.box((curb_x - side * (arm - 0.2), -CURB - hgt + 0.15, z), (0.6, 0.12, 0.3), lamp_head)
                    occ.obstacle_circle((curb_x, z), 0.09)
                    z += spacing
                z = z0 + float(rng.uniform(2.0, 8.0))
                while z < z1 - 2.0:  # trees, signs, bins and hydrants between the lamps
                    kind = rng.choice(["tree", "tree", "sign", "bin", "hydrant", "none"])
                    x = curb_x + side * float(rng.uniform(0.0, 0.4))
                    if kind == "tree":
                        th, cr = float(rng.uniform(2.0, 3.5)), float(rng.uniform(1.2, 2.2))
                        mb.cylinder((x, -CURB, z), 0.15, th + cr * 0.5, self.bark, segments=8, caps=False)
                        leaf = self.leaves[int(rng.integers(2))]
                        mb.sphere((x, -CURB - th - cr * 0.6, z), cr, leaf, segments=10, rings=6)
                        occ.obstacle_circle((x, z), 0.15)
                    elif kind == "sign":
                        hgt = float(rng.uniform(2.2, 3.0))
                        mb.cylinder((x, -CURB, z), 0.04, hgt, self.metal, segments=6, caps=False)
                        col = [(0.8, 0.1, 0.1), (0.1, 0.3, 0.8), (0.95, 0.8, 0.1), (0.95, 0.95, 0.95)][int(rng.integers(4))]
                        disc = Material(color=col, specular=0.5, shininess=32)
                        mb.cylinder((x, -CURB - hgt + 0.3, z - 0.03), 0.3, 0.03, disc, segments=16, rotation=np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0.0]]))
                        occ.obstacle_circle((x, z), 0.05)
                    elif kind == "bin":
                        x = inner_x
                        mb.box((x, -CURB - 0.45, z), (0.5, 0.9, 0.5), Material(color=tuple(rng.uniform(0.1, 0.5, 3)), specular=0.3))
                        occ.obstacle_rect((x, z), (0.5, 0.5))
                    elif kind == "hydrant":
                        red = Material(color=(0.75, 0.08, 0.06), specular=0.6, shininess=32)
                        mb.cylinder((x, -CURB, z), 0.12, 0.6, red, segments=12)
                        mb.sphere((x, -CURB - 0.6, z), 0.12, red, segments=10, rings=5)
                        occ.obstacle_circle((x, z), 0.12)
                    z += float(rng.uniform(5.0, 12.0))
        if self.crossing is not None:  # traffic lights on the corners
            zc, cw = self.crossing
            for sx, sz in ((1, -1), (-1, 1), (1, 1), (-1, -1)):
                x = (self.road_right + 0.4) if sx > 0 else (self.road_left - 0.4)
                z = zc + sz * (cw / 2 + 0.4)
                mb.cylinder((x, -CURB, z), 0.07, 3.2, self.metal, segments=8, caps=False)
                mb.box((x, -CURB - 3.6, z), (0.3, 0.9, 0.3), Material(color=(0.1, 0.1, 0.1), specular=0.4))
                for k, col in enumerate([(1.0, 0.15, 0.1), (1.0, 0.75, 0.1), (0.1, 1.0, 0.3)]):
                    lit = k == int(rng.integers(3))
                    mat = Material(color=col if lit else tuple(0.25 * np.array(col)), emissive=1.0 if lit else 0.0, specular=0.5)
                    mb.sphere((x, -CURB - 3.9 + 0.28 * k, z - sz * 0.16), 0.09, mat, segments=10, rings=5)
                occ.obstacle_circle((x, z), 0.07)

    def _vehicles(self, rng: np.random.Generator) -> None:
        lw, n = self.lane_width, self.lanes_per_direction
        for side, on in zip((-1, 1), self.parking):
            if not on:
                continue
            x = side * (n * lw + 1.1)
            for z0, z1 in self._sidewalk_spans():
                z = z0 + float(rng.uniform(1.0, 6.0))
                while True:
                    kind = rng.choice(["car", "car", "car", "van", "truck"])
                    length = {"car": rng.uniform(3.8, 4.8), "van": rng.uniform(4.8, 5.6), "truck": rng.uniform(6.5, 8.5)}[kind]
                    if z + length > z1 - 1.0:
                        break
                    if rng.random() < 0.8:
                        self._vehicle(rng, kind, x, z + length / 2, float(length), side)
                    z += length + float(rng.uniform(0.8, 4.0))

    def _vehicle(self, rng: np.random.Generator, kind: str, x: float, z: float, length: float, side: int) -> None:
        mb = self.mb
        width = float(rng.uniform(1.7, 1.9)) if kind == "car" else float(rng.uniform(1.9, 2.3))
        paint = Material(color=tuple(float(c) for c in rng.uniform(0.05, 0.9, 3)), specular=0.9, shininess=80)
        clear = 0.3
        body_h = {"car": 0.7, "van": 1.6, "truck": 0.5}[kind]
        mb.box((x, -clear - body_h / 2, z), (width, body_h, length), paint)
        if kind == "car":
            cab_l = length * float(rng.uniform(0.45, 0.55))
            mb.box((x, -clear - body_h - 0.27, z - 0.1 * side), (width - 0.15, 0.55, cab_l), self.glass, top=paint)
        elif kind == "truck":
            cab_l = 2.0
            top = -clear - body_h
            mb.box((x, top - 0.9, z + (length / 2 - cab_l / 2) * side), (width, 1.8, cab_l), paint)
            cargo = Material(color=tuple(float(c) for c in rng.uniform(0.5, 0.95, 3)), specular=0.2)
            mb.box((x, top - 1.3, z - side * (cab_l + 0.2) / 2), (width, 2.6, length - cab_l - 0.2), cargo)
        else:
            mb.box((x, -clear - body_h + 0.35, z + side * length / 2), (width - 0.2, 0.5, 0.04), self.glass)
        wheel_r = 0.33 if kind == "car" else 0.4
        axle = rot_z(math.pi / 2)  # cylinder axis from y to x
        for sz in (-1, 1):
            for sx in (-1, 1):
                zc = z + sz * (length / 2 - 0.25 - wheel_r)
                # The turned cylinder extends 0.22 m along +x from its base; keep it flush with the body.
                base_x = x + sx * width / 2 - (0.2 if sx > 0 else 0.02)
                mb.cylinder((base_x, -wheel_r, zc), wheel_r, 0.22, self.tyre, segments=10, rotation=axle)
        self._occ.obstacle_rect((x, z), (width, length))

    # -------------------------------------------------------------- lighting

    def _lighting(self, rng: np.random.Generator) -> None:
        elev = math.radians(float(rng.uniform(15.0, 70.0)))
        azim = float(rng.uniform(-math.pi, math.pi))
        sun = np.array([math.cos(elev) * math.sin(azim), -math.sin(elev), math.cos(elev) * math.cos(azim)])
        overcast = float(rng.uniform(0.0, 1.0))
        sun_col = (1.0 - 0.6 * overcast) * np.array([1.0, 0.95, 0.85]) * float(rng.uniform(0.8, 1.0))
        zenith = (1 - overcast) * np.array([0.22, 0.42, 0.85]) + overcast * np.array([0.55, 0.58, 0.62])
        horizon = (1 - overcast) * np.array([0.72, 0.82, 0.95]) + overcast * np.array([0.78, 0.8, 0.82])
        amb = 0.35 + 0.25 * overcast
        self.sky = Sky(
            zenith=tuple(zenith),
            horizon=tuple(horizon),
            sun_dir=tuple(sun),
            sun_color=tuple(sun_col * (1.0 - overcast)),
            clouds=float(0.15 + 0.6 * overcast),
            cloud_offset=tuple(rng.uniform(0.0, 100.0, 2)),
        )
        self.lighting = Lighting(
            ambient_up=tuple(amb * zenith / zenith.max()),
            ambient_down=tuple(0.25 * np.array([0.9, 0.85, 0.75])),
            sun_dir=tuple(sun),
            sun_color=tuple(0.9 * sun_col),
            fog_color=tuple(horizon),
            fog_density=float(rng.uniform(0.002, 0.008)),
        )

    # ----------------------------------------------------------------- views

    def reference_points(self) -> list[np.ndarray]:
        """The centre of the first +z lane, a third of the way along the street."""
        return [np.array([self.lanes[0][0], 0.0, self.length / 3.0])]
