"""Camera trajectories through scenes, all returned as ``c2w`` arrays ``(T, 4, 4)`` float64.

* ``random_walk``: collision-free exploration with persistent forward runs,
  turns (away from obstacles when blocked) and a slowly drifting pitch.
* ``follow_path`` / ``pointnav``: the shortest path on the occupancy grid,
  driven Habitat-style: turn towards the next waypoint, then move.
* ``loop``: out through two waypoints and back to the exact start pose (the
  last pose equals the first), for loop-closure evaluation.
* ``orbit`` (pure geometry) and ``scene_orbit`` (a collision-free circle
  around open floor): cameras on a circle looking at its centre.
* ``lane_drive``: a car driving along a lane of a street scene, weaving
  gently inside the lane.

Agents walk on the floor with the camera ``scene.camera_height`` above it;
positions between consecutive poses are collision-free for the scene's
agent radius (``scene.collide``). Every random choice comes from ``rng``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from worldenv.geometry import look_at, rot_y, se3
from worldenv.scenes.base import RenderedScene, Scene

__all__ = [
    "random_walk",
    "follow_path",
    "pointnav",
    "loop",
    "orbit",
    "scene_orbit",
    "lane_drive",
    "make_trajectory",
    "TRAJECTORY_KINDS",
]


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _need_map(scene: Scene) -> RenderedScene:
    if not isinstance(scene, RenderedScene) or scene.occupancy is None:
        raise ValueError(f"Expect a scene with an occupancy map, actually: {scene!r} has none")
    return scene


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"Expect `steps` to be a positive int, actually: {steps!r}")
    return int(steps)


class _Walker:
    """Accumulates poses of an agent that turns in place and moves in straight lines."""

    def __init__(self, scene: RenderedScene, p: np.ndarray, yaw: float, pitch: float = 0.0) -> None:
        self.scene, self.p, self.yaw, self.pitch = scene, np.asarray(p, np.float64).copy(), float(yaw), float(pitch)
        self.poses = [scene.pose_at(self.p, self.yaw, self.pitch)]

    def emit(self) -> None:
        self.poses.append(self.scene.pose_at(self.p, self.yaw, self.pitch))

    def turn_to(self, target: float, max_turn: float) -> None:
        while True:
            d = _wrap(target - self.yaw)
            if abs(d) <= max_turn:
                if abs(d) > 1e-12:
                    self.yaw = target
                    self.emit()
                return
            self.yaw = _wrap(self.yaw + math.copysign(max_turn, d))
            self.emit()

    def move_to(self, q: np.ndarray, step: float) -> None:
        a = self.p.copy()
        d = q - a
        L = float(math.hypot(d[0], d[2]))
        n = int(math.ceil(L / step - 1e-9))
        for k in range(1, n + 1):
            self.p = q.copy() if k == n else a + d * (k * step / L)
            self.emit()

    def go(self, waypoints: np.ndarray, step: float, max_turn: float) -> None:
        for w in waypoints:
            d = w - self.p
            if math.hypot(d[0], d[2]) < 1e-9:
                continue
            self.turn_to(math.atan2(d[0], d[2]), max_turn)
            self.move_to(w, step)


def random_walk(
    scene: Scene,
    steps: int,
    rng: np.random.Generator,
    start: np.ndarray | None = None,
    step_size: float = 0.25,
    turn_deg: float = 15.0,
    max_pitch_deg: float = 10.0,
) -> np.ndarray:
    """Collision-free exploration of ``steps`` poses.

    Args:
        scene: A scene with an occupancy map.
        steps: Number of poses T.
        rng: Source of every random choice.
        start: Starting ``c2w`` ``(4, 4)``; a random navigable pose if None.
        step_size: Forward motion per step in metres.
        turn_deg: Turn per step in degrees.
        max_pitch_deg: Bound of the drifting pitch.

    Returns:
        ``(T, 4, 4)`` float64.
    """
    sc, T = _need_map(scene), _check_steps(steps)
    occ = sc.occupancy
    if start is None:
        p, yaw = occ.sample_navigable(rng)[0], float(rng.uniform(-math.pi, math.pi))
    else:
        p, yaw = np.asarray(start, np.float64)[:3, 3].copy(), math.atan2(start[0, 2], start[2, 2])
    turn, max_pitch = math.radians(turn_deg), math.radians(max_pitch_deg)
    w = _Walker(sc, p, yaw)

    def ahead(yaw_: float, dist: float) -> np.ndarray:
        return w.p + dist * np.array([math.sin(yaw_), 0.0, math.cos(yaw_)])

    mode, left, sign = "forward", int(rng.integers(4, 16)), 1.0
    while len(w.poses) < T:
        if left <= 0 and mode != "escape":
            mode = str(rng.choice(["forward", "turn", "look"], p=[0.75, 0.2, 0.05]))
            left = int(rng.integers(4, 16)) if mode == "forward" else int(rng.integers(1, 7))
            sign = float(rng.choice([-1.0, 1.0]))
        left -= 1
        w.pitch = float(np.clip(0.9 * w.pitch + rng.normal(0.0, math.radians(1.5)), -max_pitch, max_pitch))
        if mode == "forward":
            yaw_new = w.yaw + float(rng.normal(0.0, math.radians(3.0)))
            q = ahead(yaw_new, step_size)
            if occ.collide(w.p, q):
                # Blocked: turn towards the side with more room until the way ahead is clear.
                room = []
                for s_ in (-1.0, 1.0):
                    f = occ.step_towards(w.p, ahead(w.yaw + s_ * math.pi / 4, 1.5))
                    room.append(float(np.linalg.norm((f - w.p)[[0, 2]])))
                sign = -1.0 if room[0] > room[1] else 1.0 if room[1] > room[0] else float(rng.choice([-1.0, 1.0]))
                mode, left = "escape", 2 * int(math.ceil(math.pi / turn))
                w.yaw = _wrap(w.yaw + sign * turn)
            else:
                w.p, w.yaw = q, _wrap(yaw_new)
        elif mode in ("turn", "escape"):
            w.yaw = _wrap(w.yaw + sign * turn)
            if mode == "escape" and (not occ.collide(w.p, ahead(w.yaw, 2 * step_size)) or left <= 0):
                mode, left = "forward", int(rng.integers(4, 16))
        w.emit()
    return np.stack(w.poses[:T])


def follow_path(
    scene: Scene, start: np.ndarray, goal: np.ndarray, step_size: float = 0.25, turn_deg: float = 15.0
) -> np.ndarray:
    """Poses ``(N, 4, 4)`` driving the shortest path from pose ``start`` ``(4, 4)`` to floor point ``goal`` ``(3,)``.

    The agent turns in place towards each waypoint (at most ``turn_deg`` per step) and then moves
    ``step_size`` per step; N depends on the path.
    """
    sc = _need_map(scene)
    start = np.asarray(start, np.float64)
    p = start[:3, 3]
    yaw = math.atan2(start[0, 2], start[2, 2])
    floor = sc.occupancy.cell_center(*sc.occupancy.to_cell(p))
    w = _Walker(sc, np.array([p[0], floor[1], p[2]]), yaw)
    w.go(sc.occupancy.shortest_path(p, goal), step_size, math.radians(turn_deg))
    return np.stack(w.poses)


def _look_around(poses: list[np.ndarray], count: int, turn: float) -> list[np.ndarray]:
    """``count`` poses turning left and back from the last pose, ending where it started."""
    base = poses[-1]
    out_n = count // 2
    yaws = [turn * k for k in range(1, out_n + 1)] + [turn * (out_n - k) for k in range(1, out_n + 1)]
    yaws += [0.0] * (count - 2 * out_n)  # an odd count pauses once at the end
    return [se3(rot_y(a) @ base[:3, :3], base[:3, 3]) for a in yaws]


def pointnav(scene: Scene, steps: int, rng: np.random.Generator, step_size: float = 0.25, turn_deg: float = 15.0) -> np.ndarray:
    """``steps`` poses along the shortest path between a sampled start and goal, looking around at the goal."""
    sc, T = _need_map(scene), _check_steps(steps)
    reach = max(1.0, 0.7 * T * step_size)
    start, goal, _ = sc.sample_start_goal(rng, min(1.0, 0.5 * reach), reach)
    P = list(follow_path(sc, start, goal, step_size, turn_deg))
    if len(P) < T:
        P += _look_around(P, T - len(P), math.radians(turn_deg))
    return np.stack(P[:T])


def loop(
    scene: Scene, steps: int, rng: np.random.Generator, start: np.ndarray | None = None, step_size: float = 0.25, turn_deg: float = 15.0
) -> np.ndarray:
    """``steps`` poses that leave the start, pass two waypoints and return; the last pose equals the first."""
    sc, T = _need_map(scene), _check_steps(steps)
    occ = sc.occupancy
    turn = math.radians(turn_deg)
    if start is None:
        s = occ.sample_navigable(rng)[0]
        yaw0 = float(rng.uniform(-math.pi, math.pi))
    else:
        s = occ.cell_center(*occ.to_cell(np.asarray(start)[:3, 3]))
        yaw0 = math.atan2(start[0, 2], start[2, 2])
    reach = 0.3 * T * step_size
    for _ in range(6):
        field = occ.distance_field(s)
        cand = np.flatnonzero(np.isfinite(field) & (field >= 0.3 * reach) & (field <= reach))
        if cand.size >= 2:
            a, b = cand[rng.choice(cand.size, 2, replace=False)]
            A = occ.cell_center(a // occ.shape[1], a % occ.shape[1])
            B = occ.cell_center(b // occ.shape[1], b % occ.shape[1])
            w = _Walker(sc, s, yaw0)
            w.go(occ.shortest_path(s, A), step_size, turn)
            mid = len(w.poses)
            w.go(occ.shortest_path(A, B)[1:], step_size, turn)
            w.go(occ.shortest_path(B, s)[1:], step_size, turn)
            w.turn_to(yaw0, turn)
            if len(w.poses) <= T:
                P = w.poses[:mid] + _look_around(w.poses[:mid], T - len(w.poses), turn) + w.poses[mid:]
                P[-1] = P[0].copy()
                return np.stack(P)
        reach *= 0.5
    # No room for a walk of this length: turn a full circle in place instead.
    P = [sc.pose_at(s, yaw0 + 2 * math.pi * k / max(T - 1, 1)) for k in range(T)]
    P[-1] = P[0].copy()
    return np.stack(P)


def orbit(
    center: np.ndarray,
    radius: float,
    steps: int,
    height: float = 0.0,
    turns: float = 1.0,
    start_angle: float = 0.0,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Cameras on a horizontal circle looking at ``target`` (default ``center``).

    Args:
        center: Circle centre ``(3,)``.
        radius: Circle radius in metres.
        steps: Number of poses; angle k is ``start_angle + 2 pi turns k / steps``.
        height: Vertical offset of the circle from ``center`` (negative is up).
        turns: Revolutions covered by the ``steps`` poses.
        start_angle: Angle of the first camera (0 is on the +z side of the centre).
        target: The point every camera looks at.
    """
    T = _check_steps(steps)
    c = np.asarray(center, np.float64)
    t = c if target is None else np.asarray(target, np.float64)
    a = start_angle + 2 * math.pi * turns * np.arange(T) / T
    eyes = c + np.stack([radius * np.sin(a), np.full(T, height), radius * np.cos(a)], -1)
    return np.stack([look_at(e, t) for e in eyes])


def scene_orbit(scene: Scene, steps: int, rng: np.random.Generator, radius: tuple[float, float] = (0.5, 1.5)) -> np.ndarray:
    """A collision-free orbit at camera height around open floor, looking at a point 1 m above its centre."""
    from scipy.ndimage import distance_transform_edt

    sc, T = _need_map(scene), _check_steps(steps)
    occ = sc.occupancy
    clear = distance_transform_edt(occ.main_component) * occ.cell
    r = float(rng.uniform(*radius))
    cells = np.flatnonzero(clear >= r + 2 * occ.cell)
    if cells.size == 0:
        r = max(float(clear.max()) - 2 * occ.cell, 0.1)
        cells = np.flatnonzero(clear >= r + 2 * occ.cell)
    k = cells[rng.integers(cells.size)]
    c = occ.cell_center(k // occ.shape[1], k % occ.shape[1])
    h = sc.camera_height
    return orbit(c, r, T, height=-h, start_angle=float(rng.uniform(0, 2 * math.pi)), turns=float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.5, 1.0)), target=c + np.array([0.0, -1.0, 0.0]))


def lane_drive(
    scene: Scene, steps: int, rng: np.random.Generator, step_size: float = 0.5, lane: int | None = None, weave: float = 0.25
) -> np.ndarray:
    """A car camera driving ``steps`` poses along a lane of a street scene.

    Args:
        scene: A ``StreetScene``.
        steps: Number of poses.
        rng: Source of random choices.
        step_size: Distance per step in metres (shortened if the street is too short).
        lane: Index into ``scene.lanes``; random if None.
        weave: Amplitude of the gentle side-to-side motion in metres (kept inside the lane).
    """
    from worldenv.scenes.street import StreetScene

    if not isinstance(scene, StreetScene):
        raise ValueError(f"Expect a street scene for lane_drive, actually: {scene!r}")
    T = _check_steps(steps)
    li = int(rng.integers(len(scene.lanes))) if lane is None else int(lane)
    if not 0 <= li < len(scene.lanes):
        raise ValueError(f"Expect `lane` in [0, {len(scene.lanes)}), actually: {lane}")
    xc, heading = scene.lanes[li]
    L, margin = scene.length, 6.0
    step = min(step_size, (L - 2 * margin) / max(T - 1, 1))
    total = step * (T - 1)
    z0 = float(rng.uniform(margin, L - margin - total)) if heading > 0 else float(rng.uniform(margin + total, L - margin))
    s = np.arange(T) * step
    amp = min(weave, 0.5 * scene.lane_width - 1.2) * float(rng.uniform(0.3, 1.0))
    amp = max(amp, 0.0)
    lam, phi = float(rng.uniform(25.0, 60.0)), float(rng.uniform(0, 2 * math.pi))
    x = xc + amp * np.sin(2 * math.pi * s / lam + phi)
    dx = amp * 2 * math.pi / lam * np.cos(2 * math.pi * s / lam + phi)
    z = z0 + heading * s
    yaw = np.arctan2(dx, float(heading))
    eye = np.stack([x, np.full(T, -scene.camera_height), z], -1)
    return se3(rot_y(yaw), eye)


TRAJECTORY_KINDS: dict[str, Callable[[Scene, int, np.random.Generator], np.ndarray]] = {
    "explore": lambda sc, T, rng: random_walk(sc, T, rng),
    "pointnav": lambda sc, T, rng: pointnav(sc, T, rng),
    "loop": lambda sc, T, rng: loop(sc, T, rng),
    "orbit": lambda sc, T, rng: scene_orbit(sc, T, rng),
    "drive": lambda sc, T, rng: lane_drive(sc, T, rng),
}
"""Trajectory kind -> ``(scene, steps, rng) -> (steps, 4, 4)``."""

_MIX = {
    "street": {"drive": 0.6, "explore": 0.3, "orbit": 0.1},
    "default": {"explore": 0.55, "pointnav": 0.2, "loop": 0.1, "orbit": 0.15},
}


def make_trajectory(kind: str, scene: Scene, steps: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A trajectory of ``kind`` (a key of ``TRAJECTORY_KINDS``, or ``"mix"`` to draw one per call).

    ``mix`` draws drives, walks and orbits in street scenes, and walks, point-goal paths,
    loops and orbits elsewhere. Returns the kind used and the poses ``(steps, 4, 4)``.
    """
    if kind == "mix":
        mix = _MIX["street"] if scene.spec == "street" else _MIX["default"]
        names = list(mix)
        kind = names[int(rng.choice(len(names), p=np.array(list(mix.values())) / sum(mix.values())))]
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"Expect a trajectory kind in {sorted(TRAJECTORY_KINDS) + ['mix']}, actually: {kind!r}")
    return kind, TRAJECTORY_KINDS[kind](scene, steps, rng)
