"""Furniture for ``rooms`` scenes: objects built from boxes, cylinders and spheres, placed so paths stay open.

Each kind draws its dimensions first, giving a footprint (a turned rectangle
or a disc) that is tested against the room, the doorway keep-out zones and
what is already placed. An accepted object is rasterised into the occupancy
map (everything taller than a rug blocks the agent); if that disconnects a
doorway from the others or cuts off a pocket of floor, the object is removed
again. Objects are built in their own frame, front towards local +z.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from worldenv.scenes.meshbuild import Material

if TYPE_CHECKING:
    from worldenv.scenes.rooms import RoomsScene

__all__ = ["Furnisher"]

# kind -> (weight in rooms, weight in corridors)
KINDS: dict[str, tuple[float, float]] = {
    "dining": (1.0, 0.0),
    "desk": (0.8, 0.0),
    "bed": (0.6, 0.0),
    "sofa": (0.8, 0.0),
    "shelf": (1.0, 0.6),
    "cabinet": (0.8, 0.5),
    "round_table": (0.6, 0.0),
    "floor_lamp": (0.7, 0.5),
    "plant": (0.8, 1.0),
    "ball": (0.5, 0.3),
    "column": (0.3, 0.2),
    "crates": (0.6, 0.3),
    "bench": (0.2, 1.0),
    "stool": (0.5, 0.2),
}
WALL_KINDS = {"bed", "sofa", "shelf", "cabinet", "desk", "bench"}


@dataclass
class _Plan:
    kind: str
    w: float  # footprint along local x (or diameter when round)
    d: float  # along local z
    round: bool
    wall: bool
    build: Callable[[float, float, float], None]


class Furnisher:
    """Places furniture in every room of a ``RoomsScene`` under construction."""

    def __init__(self, scene: RoomsScene, rng: np.random.Generator) -> None:
        self.s, self.rng, self.mb, self.occ = scene, rng, scene.mb, scene._occ
        m = scene._material
        self.woods = [m("wood", rng, scale=float(rng.uniform(0.8, 1.6)), spec=0.35, shine=32) for _ in range(2)]
        self.fabrics = [m("fabric", rng, scale=2.0, spec=0.05, shine=8) for _ in range(2)]
        self.metal = m("metal", rng, scale=1.0, spec=0.9, shine=64)
        self.stone = m("marble", rng, scale=1.0, spec=0.8, shine=64)
        self.leaf = m("foliage", rng, scale=2.5, spec=0.2, shine=16)
        self.rugs = [m(f, rng, scale=float(rng.uniform(0.6, 1.5)), spec=0.0) for f in ("carpet", "wallpaper")]

    # ---------------------------------------------------------------- helpers

    def _color(self, lo: float = 0.15, hi: float = 0.95, spec: float = 0.3, shine: float = 32.0) -> Material:
        return Material(color=tuple(float(c) for c in self.rng.uniform(lo, hi, 3)), specular=spec, shininess=shine)

    def _pick(self, xs: list[Material]) -> Material:
        return xs[int(self.rng.integers(len(xs)))]

    @staticmethod
    def _frame(cx: float, cz: float, yaw: float) -> Callable[[float, float, float], tuple[float, float, float]]:
        cs, sn = math.cos(yaw), math.sin(yaw)

        def to_world(x: float, y: float, z: float) -> tuple[float, float, float]:
            # local x -> (cos, -sin) and local z -> (sin, cos) in world (x, z), as MeshBuilder.box.
            return (cx + x * cs + z * sn, y, cz - x * sn + z * cs)

        return to_world

    def _legs(self, P: Callable, w: float, d: float, h: float, mat: Material, yaw: float, inset: float = 0.05, r: float = 0.025) -> None:
        for sx in (-1, 1):
            for sz in (-1, 1):
                self.mb.box(P(sx * (w / 2 - inset), -h / 2, sz * (d / 2 - inset)), (2 * r, h, 2 * r), mat, yaw=yaw)

    # ------------------------------------------------------------------ kinds

    def _plan(self, kind: str) -> _Plan:
        rng, mb = self.rng, self.mb
        u = rng.uniform
        if kind == "dining":
            w, d, h = u(0.9, 1.8), u(0.7, 1.0), u(0.72, 0.78)
            top, legs = self._pick(self.woods + [self.stone]), self._pick(self.woods + [self.metal])
            chair_mat, seat = self._pick(self.woods), self._pick(self.fabrics)
            sides = [s for s in ((0, 1), (0, -1), (1, 0), (-1, 0)) if rng.random() < 0.8] or [(0, 1)]

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                mb.box(P(0, -h + 0.02, 0), (w, 0.04, d), top, yaw=yaw)
                self._legs(P, w, d, h - 0.04, legs, yaw)
                for sx, sz in sides:
                    px, pz = sx * (w / 2 + 0.25), sz * (d / 2 + 0.25)
                    self._chair(self._frame(*P(px, 0, pz)[::2], yaw + math.atan2(-sx, -sz)), yaw + math.atan2(-sx, -sz), chair_mat, seat)

            return _Plan(kind, w + 1.0, d + 1.0, False, False, build)
        if kind == "desk":
            w, d, h = u(1.0, 1.6), u(0.55, 0.75), u(0.72, 0.76)
            top, leg = self._pick(self.woods), self._pick([self.metal] + self.woods)
            chair_mat, seat = self._pick(self.woods), self._pick(self.fabrics)
            screen = rng.random() < 0.6

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                mb.box(P(0, -h + 0.02, -0.25), (w, 0.04, d), top, yaw=yaw)
                self._legs(self._frame(*P(0, 0, -0.25)[::2], yaw), w, d, h - 0.04, leg, yaw)
                if screen:
                    mb.box(P(0, -h - 0.25, -0.25 - d / 4), (0.55, 0.35, 0.03), Material(color=(0.05, 0.05, 0.07), specular=0.9, shininess=96), yaw=yaw)
                    mb.box(P(0, -h - 0.04, -0.25 - d / 4), (0.05, 0.08, 0.05), self.metal, yaw=yaw)
                self._chair(self._frame(*P(0, 0, d / 2 - 0.1)[::2], yaw + math.pi), yaw + math.pi, chair_mat, seat)

            return _Plan(kind, w, d + 0.5, False, True, build)
        if kind == "bed":
            w, L = u(1.0, 1.9), u(1.95, 2.1)
            frame, sheet, blanket = self._pick(self.woods), self._color(0.75, 0.98, spec=0.05), self._pick(self.fabrics)

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                mb.box(P(0, -0.17, 0), (w, 0.34, L), frame, yaw=yaw)
                mb.box(P(0, -0.42, 0.05), (w - 0.04, 0.16, L - 0.12), sheet, yaw=yaw)
                mb.box(P(0, -0.46, 0.35), (w, 0.1, L * 0.6), blanket, yaw=yaw)
                mb.box(P(0, -0.55, -L / 2 + 0.03), (w + 0.04, 1.1, 0.06), frame, yaw=yaw)
                for k in range(1 if w < 1.3 else 2):
                    off = 0 if w < 1.3 else (k - 0.5) * w / 2
                    mb.box(P(off, -0.55, -L / 2 + 0.3), (min(0.6, w / 2 - 0.05), 0.12, 0.35), sheet, yaw=yaw)

            return _Plan(kind, w + 0.04, L, False, True, build)
        if kind == "sofa":
            w, d = u(1.5, 2.4), u(0.8, 0.95)
            cloth = self._pick(self.fabrics)
            legs = self._pick(self.woods)

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                mb.box(P(0, -0.27, 0.05), (w - 0.3, 0.3, d - 0.2), cloth, yaw=yaw)
                mb.box(P(0, -0.45, -d / 2 + 0.1), (w, 0.8, 0.2), cloth, yaw=yaw)
                for sx in (-1, 1):
                    mb.box(P(sx * (w / 2 - 0.075), -0.35, 0.05), (0.15, 0.6, d - 0.1), cloth, yaw=yaw)
                self._legs(P, w, d, 0.12, legs, yaw, inset=0.08, r=0.02)

            return _Plan(kind, w, d, False, True, build)
        if kind == "shelf":
            w, d, h = u(0.8, 1.6), u(0.3, 0.42), u(1.5, 2.2)
            mat = self._pick(self.woods)
            n = int(rng.integers(3, 6))
            books = [
                [(float(u(0.03, 0.07)), float(u(0.18, 0.3)), self._color(0.1, 0.9, spec=0.2)) for _ in range(int(rng.integers(0, 14)))]
                for _ in range(n)
            ]

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                for sx in (-1, 1):
                    mb.box(P(sx * (w / 2 - 0.01), -h / 2, 0), (0.02, h, d), mat, yaw=yaw)
                mb.box(P(0, -h / 2, -d / 2 + 0.01), (w - 0.04, h, 0.02), mat, yaw=yaw)
                for k in range(n + 1):
                    y = 0.05 + k * (h - 0.07) / n
                    mb.box(P(0, -y, 0), (w - 0.04, 0.02, d - 0.02), mat, yaw=yaw)
                    if k < n:
                        x = -w / 2 + 0.04
                        for bw, bh, bm in books[k]:
                            if x + bw > w / 2 - 0.04:
                                break
                            bh = min(bh, (h - 0.07) / n - 0.04)
                            mb.box(P(x + bw / 2, -y - 0.01 - bh / 2, 0.02), (bw, bh, d - 0.08), bm, yaw=yaw)
                            x += bw + 0.003

            return _Plan(kind, w, d, False, True, build)
        if kind == "cabinet":
            w, d, h = u(0.6, 1.4), u(0.45, 0.6), u(0.75, 1.0)
            body, top = self._color(0.2, 0.95, spec=0.3), self._pick([self.stone] + self.woods)
            knob = self.metal

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                mb.box(P(0, -h / 2 + 0.01, 0), (w, h - 0.02, d), body, yaw=yaw)
                mb.box(P(0, -h + 0.015, 0.01), (w + 0.02, 0.03, d + 0.02), top, yaw=yaw)
                nd = max(1, round(w / 0.45))
                for k in range(nd):
                    x = -w / 2 + (k + 0.5) * w / nd
                    mb.box(P(x, -h / 2, d / 2 + 0.005), (w / nd - 0.02, h - 0.1, 0.01), body, yaw=yaw)
                    mb.sphere(P(x + 0.15 * w / nd, -h * 0.75, d / 2 + 0.025), 0.015, knob, segments=8, rings=4)

            return _Plan(kind, w + 0.02, d + 0.06, False, True, build)
        if kind == "round_table":
            r, h = u(0.35, 0.6), u(0.7, 0.76)
            top, stem = self._pick(self.woods + [self.stone]), self._pick([self.metal] + self.woods)

            def build(cx: float, cz: float, yaw: float) -> None:
                mb.cylinder((cx, -h + 0.04, cz), r, 0.04, top, segments=28)
                mb.cylinder((cx, 0.0, cz), 0.04, h - 0.04, stem, segments=12)
                mb.cylinder((cx, 0.0, cz), 0.25, 0.03, stem, segments=16)

            return _Plan(kind, 2 * r, 2 * r, True, False, build)
        if kind == "floor_lamp":
            hgt = u(1.4, 1.8)
            glow = Material(color=tuple(np.clip(rng.uniform([0.9, 0.75, 0.5], [1.0, 0.95, 0.8]), 0, 1)), emissive=1.0)
            pole = self._pick([self.metal] + self.woods)

            def build(cx: float, cz: float, yaw: float) -> None:
                mb.cylinder((cx, 0.0, cz), 0.16, 0.03, pole, segments=16)
                mb.cylinder((cx, -0.03, cz), 0.018, hgt - 0.03, pole, segments=8)
                mb.cylinder((cx, -hgt + 0.05, cz), 0.22, 0.28, glow, segments=20, top_radius=0.13)

            return _Plan(kind, 0.44, 0.44, True, False, build)
        if kind == "plant":
            pr, ph, fr = u(0.13, 0.25), u(0.25, 0.5), u(0.25, 0.5)
            pot = self._color(0.3, 0.9, spec=0.5, shine=48)

            def build(cx: float, cz: float, yaw: float) -> None:
                mb.cylinder((cx, 0.0, cz), pr * 0.75, ph, pot, segments=16, top_radius=pr)
                mb.sphere((cx, -ph - fr * 0.8, cz), fr, self.leaf, segments=14, rings=8)
                if fr > 0.35:
                    mb.sphere((cx + fr * 0.4, -ph - fr * 1.5, cz), fr * 0.6, self.leaf, segments=12, rings=6)

            return _Plan(kind, 2 * max(pr, fr), 2 * max(pr, fr), True, False, build)
        if kind == "ball":
            r = u(0.1, 0.35)
            mat = self._color(0.1, 1.0, spec=0.8, shine=64)

            def build(cx: float, cz: float, yaw: float) -> None:
                mb.sphere((cx, -r, cz), r, mat)

            return _Plan(kind, 2 * r, 2 * r, True, False, build)
        if kind == "column":
            r = u(0.12, 0.3)
            mat = self._pick([self.stone, self.metal] + self.woods)

            def build(cx: float, cz: float, yaw: float) -> None:
                mb.cylinder((cx, 0.0, cz), r, self.s.height, mat, segments=24, caps=False)

            return _Plan(kind, 2 * r, 2 * r, True, False, build)
        if kind == "crates":
            sizes = [float(u(0.35, 0.7))]
            for _ in range(int(rng.integers(0, 3))):
                sizes.append(float(u(0.3, sizes[-1])))
            mats = [self._pick(self.woods + [self._color()]) for _ in sizes]
            yaws = [float(u(-0.4, 0.4)) for _ in sizes]

            def build(cx: float, cz: float, yaw: float) -> None:
                y = 0.0
                for s, m_, dy in zip(sizes, mats, yaws):
                    mb.box((cx, -y - s / 2, cz), (s, s, s), m_, yaw=yaw + dy)
                    y += s

            return _Plan(kind, sizes[0] * 1.42, sizes[0] * 1.42, True, False, build)
        if kind == "bench":
            w = u(1.0, 1.8)
            mat = self._pick(self.woods)

            def build(cx: float, cz: float, yaw: float) -> None:
                P = self._frame(cx, cz, yaw)
                mb.box(P(0, -0.44, 0), (w, 0.05, 0.4), mat, yaw=yaw)
                self._legs(P, w, 0.4, 0.42, mat, yaw, inset=0.06, r=0.03)

            return _Plan(kind, w, 0.4, False, True, build)
        # stool
        r = u(0.16, 0.22)
        seat, leg = self._pick(self.fabrics + self.woods), self._pick([self.metal] + self.woods)

        def build_stool(cx: float, cz: float, yaw: float) -> None:
            mb.cylinder((cx, -0.6, cz), r, 0.06, seat, segments=16)
            mb.cylinder((cx, 0.0, cz), 0.03, 0.6, leg, segments=8)
            mb.cylinder((cx, 0.0, cz), r * 0.9, 0.02, leg, segments=16)

        return _Plan("stool", 2 * r, 2 * r, True, False, build_stool)

    def _chair(self, P: Callable, yaw: float, frame: Material, seat: Material) -> None:
        mb = self.mb
        mb.box(P(0, -0.45, 0), (0.44, 0.04, 0.44), seat, yaw=yaw)
        self._legs(P, 0.44, 0.44, 0.43, frame, yaw, inset=0.03, r=0.02)
        mb.box(P(0, -0.72, -0.2), (0.44, 0.5, 0.03), frame, yaw=yaw)

    # -------------------------------------------------------------- placement

    def _mask(self, plan: _Plan, cx: float, cz: float, yaw: float, grow: float) -> tuple[tuple[slice, slice], np.ndarray]:
        occ = self.occ
        if plan.round:
            r = plan.w / 2 + grow
            win = occ._window(cx - r, cx + r, cz - r, cz + r)
            return win, (occ._x[win] - cx) ** 2 + (occ._z[win] - cz) ** 2 <= r * r
        return occ._rect_mask((cx, cz), (plan.w / 2 + grow, plan.d / 2 + grow), yaw)

    def _connected(self, anchors: np.ndarray) -> bool:
        from scipy.ndimage import distance_transform_edt, label

        occ = self.occ
        free = np.isfinite(occ.floor_y) & ~occ.blocked
        nav = free & (distance_transform_edt(free) * occ.cell >= self.s.agent_radius + 0.5 * occ.cell)
        labels, n = label(nav, structure=np.ones((3, 3)))
        if n == 0:
            return False
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        main = int(np.argmax(sizes))
        ids = labels[anchors[:, 0], anchors[:, 1]]
        if np.any(ids != main):
            return False
        return bool(sizes[main] >= 0.9 * nav.sum())

    def run(self) -> None:
        s, rng, occ = self.s, self.rng, self.occ
        t = s.config.wall_thickness
        keep = np.zeros_like(occ.blocked)
        anchors = []
        for d in s.doors:
            mid = 0.5 * (d.lo + d.hi)
            for side in (-1, 1):
                if d.axis == "x":
                    win, m = occ._rect_mask((d.line + side * 0.6, mid), (0.6, (d.hi - d.lo) / 2 + 0.15), 0.0)
                    ax, az = d.line + side * (t / 2 + 0.35), mid
                else:
                    win, m = occ._rect_mask((mid, d.line + side * 0.6), ((d.hi - d.lo) / 2 + 0.15, 0.6), 0.0)
                    ax, az = mid, d.line + side * (t / 2 + 0.35)
                keep[win] |= m
                anchors.append(((az - occ.origin[1]) // occ.cell, (ax - occ.origin[0]) // occ.cell))
        anchor_cells = np.array(anchors, dtype=np.int64).reshape(-1, 2)
        names = list(KINDS)
        for gi, r in enumerate(s.rooms):
            self.mb.group = gi
            ax0, az0, ax1, az1 = r.x0 + t / 2, r.z0 + t / 2, r.x1 - t / 2, r.z1 - t / 2
            if not r.corridor and rng.random() < 0.45 and ax1 - ax0 > 1.8 and az1 - az0 > 1.6:
                # A rug: drawn, never an obstacle.
                rw, rd = rng.uniform(1.2, 0.8 * (ax1 - ax0)), rng.uniform(1.0, 0.8 * (az1 - az0))
                c = (rng.uniform(ax0 + rw / 2, ax1 - rw / 2), rng.uniform(az0 + rd / 2, az1 - rd / 2))
                self.mb.box((c[0], -0.005, c[1]), (rw, 0.01, rd), self._pick(self.rugs))
            weights = np.array([KINDS[k][1 if r.corridor else 0] for k in names])
            n_items = int(round(r.area * s.config.furniture_density * rng.uniform(0.6, 1.4) * (0.5 if r.corridor else 1.0)))
            for _ in range(n_items):
                plan = self._plan(names[int(rng.choice(len(names), p=weights / weights.sum()))])
                for _try in range(8):
                    if plan.wall:
                        side = int(rng.integers(4))
                        yaw = (math.pi / 2, -math.pi / 2, 0.0, math.pi)[side]
                        span = (az1 - az0) if side < 2 else (ax1 - ax0)
                        across = (ax1 - ax0) if side < 2 else (az1 - az0)
                        if span < plan.w + 0.05 or across < plan.d + 1.0:
                            continue  # this wall is too short, or the room too narrow to stand in front of it
                        along = rng.uniform(az0 + plan.w / 2, az1 - plan.w / 2) if side < 2 else rng.uniform(ax0 + plan.w / 2, ax1 - plan.w / 2)
                        off = plan.d / 2 + 0.02
                        cx, cz = ((ax0 + off, along), (ax1 - off, along), (along, az0 + off), (along, az1 - off))[side]
                    else:
                        yaw = float(rng.uniform(-math.pi, math.pi))
                        ext = 0.5 * math.hypot(plan.w, plan.d) if not plan.round else plan.w / 2
                        if ax1 - ax0 < 2 * ext + 0.1 or az1 - az0 < 2 * ext + 0.1:
                            break
                        cx, cz = rng.uniform(ax0 + ext + 0.05, ax1 - ext - 0.05), rng.uniform(az0 + ext + 0.05, az1 - ext - 0.05)
                    if not (math.isfinite(cx) and math.isfinite(cz)):
                        continue
                    # The footprint grown by a margin must miss other objects and the doorway
                    # zones; the footprint itself must lie on this room's floor.
                    win, m = self._mask(plan, cx, cz, yaw, 0.06)
                    if np.any(m & (occ.blocked[win] | keep[win])):
                        continue
                    win2, m2 = self._mask(plan, cx, cz, yaw, 0.0)
                    xs, zs = occ._x[win2], occ._z[win2]
                    inside = np.isfinite(occ.floor_y[win2]) & (xs > ax0) & (xs < ax1) & (zs > az0) & (zs < az1)
                    if np.any(m2 & ~inside):
                        continue
                    before = occ.blocked[win2].copy()
                    occ.blocked[win2] |= m2
                    if not self._connected(anchor_cells):
                        occ.blocked[win2] = before
                        continue
                    plan.build(cx, cz, yaw)
                    break
        self.mb.group = -1
