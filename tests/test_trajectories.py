"""Trajectories: collision-free walks, shortest paths, closed loops, orbits and lane-following drives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldenv.scenes import load_scene
from worldenv.scenes.trajectories import (
    TRAJECTORY_KINDS,
    follow_path,
    lane_drive,
    loop,
    make_trajectory,
    orbit,
    pointnav,
    random_walk,
    scene_orbit,
)


@pytest.fixture(scope="module")
def rooms():
    return load_scene("rooms", seed=4)


@pytest.fixture(scope="module")
def street():
    return load_scene("street", seed=3)


def _valid_poses(P: np.ndarray) -> None:
    assert P.dtype == np.float64 and P.ndim == 3 and P.shape[1:] == (4, 4)
    R = P[:, :3, :3]
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)
    assert np.allclose(P[:, 3], [0, 0, 0, 1])
    # No roll: the camera's x axis stays level.
    assert np.allclose(P[:, 1, 0], 0.0, atol=1e-9)


def _collision_free(scene, P: np.ndarray) -> None:
    pos = P[:, :3, 3]
    assert scene.occupancy.is_navigable(pos).all()
    assert not np.any(scene.collide(pos[:-1], pos[1:]))


def _camera_height_ok(scene, P: np.ndarray) -> None:
    pos = P[:, :3, 3]
    floor = scene.occupancy.floor_height(pos)
    assert np.allclose(floor - pos[:, 1], scene.camera_height)


@pytest.mark.parametrize("seed", range(4))
def test_random_walk_is_collision_free(rooms, seed):
    P = random_walk(rooms, 80, np.random.default_rng(seed))
    assert P.shape == (80, 4, 4)
    _valid_poses(P)
    _collision_free(rooms, P)
    _camera_height_ok(rooms, P)
    steps = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
    assert steps.max() <= 0.25 + 1e-9 and (steps > 0.2).mean() > 0.3  # it does explore
    pitch = np.degrees(np.arcsin(np.clip(-P[:, 1, 2], -1, 1)))
    assert np.abs(pitch).max() <= 10.0 + 1e-9


def test_random_walk_is_deterministic_and_seeded(rooms):
    a = random_walk(rooms, 30, np.random.default_rng(7))
    b = random_walk(rooms, 30, np.random.default_rng(7))
    c = random_walk(rooms, 30, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_random_walk_from_a_given_start(rooms):
    start, _, _ = rooms.sample_start_goal(np.random.default_rng(0), 1.0, 5.0)
    P = random_walk(rooms, 10, np.random.default_rng(0), start=start)
    assert np.allclose(P[0], start)


@pytest.mark.parametrize("seed", range(3))
def test_follow_path_reaches_the_goal(rooms, seed):
    start, goal, geo = rooms.sample_start_goal(np.random.default_rng(seed), 3.0, 10.0)
    P = follow_path(rooms, start, goal, step_size=0.25, turn_deg=15.0)
    _valid_poses(P)
    _collision_free(rooms, P)
    end = P[-1, :3, 3]
    assert math.hypot(end[0] - goal[0], end[2] - goal[2]) < 1e-9
    travelled = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1).sum()
    assert travelled <= geo + 0.1  # the string-pulled path is no longer than the grid geodesic
    yaw = np.arctan2(P[:, 0, 2], P[:, 2, 2])
    turns = np.abs((np.diff(yaw) + np.pi) % (2 * np.pi) - np.pi)
    assert turns.max() <= math.radians(15.0) + 1e-9
    moved = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1) > 0
    assert not np.any(moved & (turns > 1e-9))  # Habitat-like: turn or move, never both


def test_pointnav_has_the_requested_length(rooms):
    P = pointnav(rooms, 50, np.random.default_rng(3))
    assert P.shape == (50, 4, 4)
    _collision_free(rooms, P)


@pytest.mark.parametrize("steps", [12, 40, 120])
def test_loops_return_to_their_start(rooms, steps):
    for seed in range(3):
        P = loop(rooms, steps, np.random.default_rng(seed))
        assert P.shape == (steps, 4, 4)
        assert np.array_equal(P[0], P[-1])
        _valid_poses(P)
        _collision_free(rooms, P)
        steps_m = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
        assert steps_m.max() <= 0.25 + 1e-9


def test_long_loops_leave_the_start(rooms):
    P = loop(rooms, 120, np.random.default_rng(1))
    far = np.linalg.norm(P[:, :3, 3] - P[0, :3, 3], axis=1).max()
    assert far > 1.5


def test_orbit_geometry():
    c = np.array([1.0, -1.0, 2.0])
    P = orbit(c, 2.0, 16, height=-0.5)
    _valid_poses(P)
    eye = P[:, :3, 3]
    assert np.allclose(np.linalg.norm((eye - c)[:, [0, 2]], axis=1), 2.0)
    assert np.allclose(eye[:, 1], c[1] - 0.5)
    to_c = c - eye
    to_c /= np.linalg.norm(to_c, axis=1, keepdims=True)
    assert np.allclose(np.sum(P[:, :3, 2] * to_c, axis=1), 1.0)  # every camera looks at the centre
    ang = np.arctan2(eye[:, 0] - c[0], eye[:, 2] - c[2])
    assert np.allclose(np.diff(np.unwrap(ang)), 2 * np.pi / 16)


def test_scene_orbit_is_collision_free(rooms):
    for seed in range(3):
        P = scene_orbit(rooms, 24, np.random.default_rng(seed))
        _collision_free(rooms, P)
        _camera_height_ok(rooms, P)


@pytest.mark.parametrize("seed", range(4))
def test_lane_drive_stays_in_its_lane(street, seed):
    rng = np.random.default_rng(seed)
    P = lane_drive(street, 60, rng)
    _valid_poses(P)
    x = P[:, 0, 3]
    lanes = np.array([lx for lx, _ in street.lanes])
    lane = int(np.argmin(np.abs(lanes - x[0])))
    xc, heading = street.lanes[lane]
    assert np.all(np.abs(x - xc) <= 0.5 * street.lane_width - 1.0)  # a car's half width stays inside
    assert np.allclose(P[:, 1, 3], -street.camera_height)
    dz = np.diff(P[:, 2, 3])
    assert np.all(dz * heading > 0)  # always forward, in the lane's direction
    assert np.all(P[:, 2, 2] * heading > 0.95)  # looking down the road
    assert 0 <= P[:, 2, 3].min() and P[:, 2, 3].max() <= street.length
    assert not np.any(street.collide(P[:-1, :3, 3], P[1:, :3, 3]))


def test_lane_drive_picks_lanes_and_refuses_other_scenes(street, rooms):
    for i, (xc, heading) in enumerate(street.lanes):
        P = lane_drive(street, 10, np.random.default_rng(0), lane=i, weave=0.0)
        assert np.allclose(P[:, 0, 3], xc) and np.sign(P[-1, 2, 3] - P[0, 2, 3]) == heading
    with pytest.raises(ValueError, match="`lane`"):
        lane_drive(street, 10, np.random.default_rng(0), lane=len(street.lanes))
    with pytest.raises(ValueError, match="street"):
        lane_drive(rooms, 10, np.random.default_rng(0))


def test_make_trajectory_kinds(rooms, street):
    for kind in TRAJECTORY_KINDS:
        scene = street if kind == "drive" else rooms
        name, P = make_trajectory(kind, scene, 20, np.random.default_rng(0))
        assert name == kind and P.shape == (20, 4, 4)
    kinds = {make_trajectory("mix", street, 8, np.random.default_rng(s))[0] for s in range(20)}
    assert "drive" in kinds and kinds <= {"drive", "explore", "orbit"}
    with pytest.raises(ValueError, match="trajectory kind"):
        make_trajectory("teleport", rooms, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`steps`"):
        random_walk(rooms, 0, np.random.default_rng(0))


def test_trajectories_need_a_map(tmp_path):
    from worldenv.geometry import intrinsics_from_fov
    from worldenv.scenes.shards import write_shard

    write_shard(
        tmp_path / "s.npz",
        np.zeros((1, 2, 4, 4, 3), np.uint8),
        np.zeros((1, 2, 4, 4), np.float32),
        np.tile(np.eye(4), (1, 2, 1, 1)),
        np.tile(intrinsics_from_fov(4, 4, 90.0), (1, 2, 1, 1)),
        np.zeros(1),
        np.zeros(1),
        {},
    )
    cap = load_scene(f"capture:worldenv:{tmp_path / 's.npz'}")
    with pytest.raises(ValueError, match="occupancy"):
        random_walk(cap, 5, np.random.default_rng(0))
