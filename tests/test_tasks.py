"""Tasks: Habitat's PointNav/ImageNav definitions, Explore's reward, Replay open and closed loop, Free."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_env_fixtures import SIZE, rooms, street, one_thread  # noqa: F401

from worldenv.envs import Explore, Frame, PointNav, Replay, WorldEnv
from worldenv.envs.tasks import relative_polar
from worldenv.geometry import rot_y, se3, write_kitti_poses

pytestmark = pytest.mark.usefixtures("one_thread")


def frame_at(c2w, stop=False, step=1, depth=None, K=None):
    K = np.array([[32.0, 0, 31.5], [0, 32.0, 31.5], [0, 0, 1]]) if K is None else K
    depth = np.zeros((SIZE, SIZE), np.float32) if depth is None else depth
    return Frame(c2w, K, np.zeros((SIZE, SIZE, 3), np.uint8), depth, stop=stop, step=step)


def test_pointgoal_is_polar_with_positive_angles_to_the_left():
    eye = np.eye(4)  # at the origin, looking along +z; +x is to the right
    d, a = relative_polar(eye, np.array([-1.0, 0.0, 1.0]))
    assert d == pytest.approx(math.sqrt(2)) and a == pytest.approx(math.pi / 4)
    d, a = relative_polar(eye, np.array([2.0, 0.5, 0.0]))  # height is ignored
    assert d == pytest.approx(2.0) and a == pytest.approx(-math.pi / 2)
    turned = se3(rot_y(math.pi / 2), np.zeros(3))  # yaw +90°: now looking along +x
    assert relative_polar(turned, np.array([2.0, 0.0, 0.0]))[1] == pytest.approx(0.0, abs=1e-12)


def test_pointnav_success_spl_and_reward_follow_habitat(rooms):
    task = PointNav()
    start = task.reset(rooms, np.random.default_rng(2))
    task.begin(frame_at(start))
    d0 = task.start_distance
    assert 1.0 <= d0 <= 10.0
    path = rooms.occupancy.shortest_path(start[:3, 3], task.goal)
    total, pose = 0.0, start
    for k, p in enumerate(path[1:], 1):
        pose = start.copy()
        pose[[0, 2], 3] = p[[0, 2]]
        r, term, met = task.step(frame_at(pose, stop=k == len(path) - 1, step=k))
        total += r
    assert term and met["success"] == 1.0
    assert met["distance_to_goal"] <= 0.2
    # The string-pulled path is no longer than the grid geodesic, so SPL is 1.
    assert met["path_length"] <= d0 + 1e-9 and met["spl"] == pytest.approx(1.0)
    assert met["softspl"] == pytest.approx(1.0 - met["distance_to_goal"] / d0)
    # Rewards telescope: d0 - d_end - 0.01 per step + 2.5.
    assert total == pytest.approx(d0 - met["distance_to_goal"] - 0.01 * (len(path) - 1) + 2.5)


def test_pointnav_stop_far_from_the_goal_fails(rooms):
    task = PointNav()
    start = task.reset(rooms, np.random.default_rng(3))
    task.begin(frame_at(start))
    r, term, met = task.step(frame_at(start, stop=True))
    assert term and met["success"] == 0.0 and met["spl"] == 0.0
    assert r == pytest.approx(-0.01)


def test_pointnav_env_reward_is_the_geodesic_decrease(rooms):
    env = WorldEnv(scene=rooms, task="pointnav", dynamics="oracle", obs_size=SIZE)
    _, info = env.reset(seed=5)
    assert env.action_space.n == 4  # Habitat's stop, move_forward, turn_left, turn_right
    before = info["distance_to_goal"]
    _, r, term, _, info = env.step(1)
    assert not term
    assert r == pytest.approx(before - info["distance_to_goal"] - 0.01)
    assert info["distance_to_goal"] == pytest.approx(rooms.geodesic_distance(info["pose"][:3, 3], info["goal"]))


def test_imagenav_goal_image_is_the_view_at_the_goal(rooms):
    env = WorldEnv(scene=rooms, task="imagenav", dynamics="oracle", obs_size=SIZE)
    obs, _ = env.reset(seed=1)
    task = env.task
    rgb, _ = rooms.render(task.goal_pose, rooms.default_intrinsics(SIZE), SIZE)
    np.testing.assert_array_equal(obs["imagegoal"], rgb)
    np.testing.assert_allclose(task.goal_pose[[0, 2], 3], task.goal[[0, 2]])
    assert task.success_distance == 1.0


def test_explore_rewards_new_voxels_only(rooms):
    task = Explore()
    start = task.reset(rooms, np.random.default_rng(0))
    K = rooms.default_intrinsics(SIZE)
    _, depth = rooms.render(start, K, SIZE)
    f = frame_at(start, depth=depth, K=K)
    task.begin(f)
    r, term, met = task.step(f)
    assert r == 0.0 and not term  # the same view again shows nothing new
    turned = start @ se3(rot_y(math.pi), np.zeros(3))
    _, depth2 = rooms.render(turned, K, SIZE)
    r, _, met = task.step(frame_at(turned, depth=depth2, K=K))
    assert r > 0 and met["new_voxels"] * 0.01 == pytest.approx(r)
    assert met["explored_voxels"] > met["new_voxels"]


def test_replay_open_loop_follows_the_log_exactly(street):
    env = WorldEnv(scene=street, task="replay", dynamics="oracle", obs_size=SIZE, task_options={"mode": "open_loop", "length": 12})
    _, info = env.reset(seed=0)
    log = env.task.log
    np.testing.assert_array_equal(info["pose"], log[0])
    for t in range(1, 12):
        _, r, term, trunc, info = env.step(env.action_space.sample())  # the action is ignored
        np.testing.assert_array_equal(info["pose"], log[t])
        assert r == 0.0 and info["deviation"] == 0.0
    assert term and not trunc


def test_replay_closed_loop_penalises_deviation_and_ends_when_lost(street):
    env = WorldEnv(scene=street, task="replay", dynamics="oracle", obs_size=SIZE, task_options={"max_deviation": 1.0})
    obs, _ = env.reset(seed=0)
    assert obs["waypoint"][1] > 0  # the next logged pose is ahead
    rewards = []
    for _ in range(20):  # stand still while the log drives away at 0.5 m per step
        _, r, term, _, info = env.step(np.zeros(6, np.float32))
        rewards.append(r)
        if term:
            break
    assert term and info["deviation"] > 1.0
    assert rewards[0] == pytest.approx(-(0.5 + 0.5 * 0.0), abs=0.1)
    assert all(b < a for a, b in zip(rewards, rewards[1:]))


def test_replay_reads_a_kitti_pose_file(street, tmp_path):
    log = Replay(length=8).reset(street, np.random.default_rng(1))
    poses = np.stack([log @ se3(None, np.array([0.0, 0.0, 0.3 * k])) for k in range(5)])
    write_kitti_poses(tmp_path / "poses.txt", poses)
    env = WorldEnv(
        scene=street, task="replay", dynamics="oracle", obs_size=SIZE,
        task_options={"mode": "open_loop", "trajectory": f"kitti:{tmp_path / 'poses.txt'}"},
    )  # fmt: skip
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(info["pose"], poses[0], atol=1e-9)
    for t in range(1, 5):
        *_, info = env.step(env.action_space.sample())
        np.testing.assert_allclose(info["pose"], poses[t], atol=1e-9)
    with pytest.raises(ValueError, match="Expect `trajectory` '<format>:<path>'"):
        Replay(trajectory="orb:poses.txt")


def test_free_has_no_reward_and_truncates(rooms):
    env = WorldEnv(scene=rooms, task="free", dynamics="warp", obs_size=SIZE, max_episode_steps=3)
    env.reset(seed=0)
    assert env.action_space.n == 9
    outs = [env.step(2) for _ in range(3)]
    assert [o[1] for o in outs] == [0.0, 0.0, 0.0]
    assert [o[3] for o in outs] == [False, False, True] and not any(o[2] for o in outs)
