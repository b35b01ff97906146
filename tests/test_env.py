"""WorldEnv: checkers for every registered id, determinism, bad input, snapshots and a soak."""

from __future__ import annotations

import gc
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded
from test_env_fixtures import SIZE, rooms, street, tiny_checkpoint, tiny_model, one_thread  # noqa: F401

import worldenv
from worldenv.envs import WorldEnv

pytestmark = pytest.mark.usefixtures("one_thread")


def make(env_id: str, ckpt, dynamics: str = "model", **kw):
    scene = "street" if "Replay" in env_id else "rooms"
    return gym.make(env_id, scene=scene, scene_pool=1, dynamics=dynamics, obs_size=SIZE, checkpoint=str(ckpt), **kw)


@pytest.mark.parametrize("env_id", sorted(worldenv.ENV_IDS))
def test_gymnasium_and_sb3_checkers_pass(env_id, tiny_checkpoint, rooms, street):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(env_id, tiny_checkpoint)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="render_mode='human' needs a display")
        check_env(env.unwrapped)
    sb3_check_env(env.unwrapped, warn=False)
    assert env.spec.vector_entry_point == "worldenv.envs.vector:WorldVectorEnv"


def test_registered_ids_are_the_five_tasks():
    ids = [i for i in gym.registry if i.startswith("worldenv/")]
    assert sorted(ids) == sorted(
        ["worldenv/PointNav-v0", "worldenv/ImageNav-v0", "worldenv/Explore-v0", "worldenv/Replay-v0", "worldenv/Free-v0"]
    )


def test_observations_match_their_spaces_with_depth_and_pose(tiny_checkpoint, rooms):
    env = make("worldenv/PointNav-v0", tiny_checkpoint, depth=True, pose=True)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"rgb", "depth", "pose", "pointgoal"}
    assert env.observation_space.contains(obs)
    assert obs["rgb"].shape == (SIZE, SIZE, 3) and obs["rgb"].dtype == np.uint8
    np.testing.assert_allclose(obs["pose"], info["pose"], atol=1e-5)
    # The start frame is ground truth: its depth is the scene's.
    _, depth = rooms.render(info["pose"], rooms.default_intrinsics(SIZE), SIZE)
    np.testing.assert_array_equal(obs["depth"][..., 0], np.clip(depth, 0, 100))
    for _ in range(3):
        obs, *_ = env.step(1)
        assert env.observation_space.contains(obs)
    assert {"pose", "collided", "memory_points", "distance_to_goal", "spl", "softspl", "success"} <= set(info)


def test_timings_in_info_on_request(tiny_checkpoint, rooms):
    env = make("worldenv/Free-v0", tiny_checkpoint, timings=True)
    env.reset(seed=0)
    *_, info = env.step(1)
    assert set(info["timings"]) >= {"controls", "collide", "render", "model", "fuse", "task", "total"}
    assert info["timings"]["model"] > 0 and info["timings"]["total"] >= info["timings"]["model"]


def _episode(env, seed: int, actions: list[int]):
    obs, _ = env.reset(seed=seed)
    out = [obs["rgb"].copy()]
    rewards, poses = [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append(obs["rgb"].copy())
        rewards.append(r)
        poses.append(info["pose"])
        if term or trunc:
            break
    return np.stack(out), np.array(rewards), np.stack(poses)


@pytest.mark.parametrize("dynamics", ["model", "oracle"])
def test_same_seed_gives_bit_identical_episodes(dynamics, tiny_checkpoint, rooms):
    actions = [1, 1, 3, 1, 2, 1, 1, 3, 1, 1]
    a = _episode(make("worldenv/PointNav-v0", tiny_checkpoint, dynamics), 7, actions)
    b = _episode(make("worldenv/PointNav-v0", tiny_checkpoint, dynamics), 7, actions)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = _episode(make("worldenv/PointNav-v0", tiny_checkpoint, dynamics), 8, actions)
    assert not np.array_equal(a[0][0], c[0][0]), "another seed should start elsewhere"


def test_procedural_scene_is_drawn_from_the_reset_seed(tiny_checkpoint):
    env = gym.make("worldenv/Free-v0", scene="rooms", scene_pool=2, dynamics="warp", obs_size=SIZE)
    seeds = {env.reset(seed=s)[1]["scene_seed"] for s in range(8)}
    assert seeds == {0, 1}
    assert env.reset(seed=5)[1]["scene_seed"] == env.reset(seed=5)[1]["scene_seed"]


def test_model_instance_is_accepted(rooms):
    env = WorldEnv(scene=rooms, task="free", obs_size=SIZE, checkpoint=tiny_model())
    env.reset(seed=0)
    obs, *_ = env.step(1)
    assert obs["rgb"].shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (np.nan, TypeError, "Expect `action` to be an int"),
        (float("inf"), TypeError, "Expect `action` to be an int"),
        (7, ValueError, r"Expect `action` in \[0, 4\)"),
        (-1, ValueError, r"Expect `action` in \[0, 4\)"),
        (np.array([1, 2]), TypeError, "Expect `action` to be an int"),
    ],
)
def test_bad_discrete_actions_raise_clear_errors(action, error, match, rooms):
    env = WorldEnv(scene=rooms, task="pointnav", dynamics="warp", obs_size=SIZE)
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([0, 0, np.nan, 0, 0, 0]), "finite"),
        (np.array([0, 0, np.inf, 0, 0, 0]), "finite"),
        (np.array([0, 0, 2.0, 0, 0, 0]), r"within \[-1, 1\]"),
        (np.zeros(5), r"shape \(6,\)"),
    ],
)
def test_bad_continuous_actions_raise_clear_errors(action, match, rooms):
    env = WorldEnv(scene=rooms, task="free", controls="continuous", dynamics="warp", obs_size=SIZE)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_step_before_reset_and_after_the_end_raise(rooms):
    env = WorldEnv(scene=rooms, task="pointnav", dynamics="warp", obs_size=SIZE)
    with pytest.raises(ResetNeeded, match="before `reset`"):
        env.step(1)
    env.reset(seed=0)
    *_, term, _, _ = env.step(0)  # STOP ends a PointNav episode
    assert term
    with pytest.raises(ResetNeeded, match="episode has ended"):
        env.step(1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dynamics": "dream"}, ValueError, "Expect `dynamics` to be one of"),
        ({"obs_size": 0}, ValueError, "Expect `obs_size`"),
        ({"task": "fly"}, ValueError, "Expect `task` to be one of"),
        ({"controls": "joystick"}, ValueError, "Expect `controls` to be one of"),
        ({"render_mode": "ascii"}, ValueError, "Expect `render_mode`"),
        ({"max_episode_steps": 0}, ValueError, "Expect `max_episode_steps` to be positive, actually: 0"),
        ({"task_options": {"radius": 1}}, ValueError, "Expect `task_options`"),
        ({"memory_update": "never"}, ValueError, "Expect `memory_update` to be one of"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match, rooms):
    args = {"scene": rooms, "dynamics": "warp", "obs_size": SIZE, "task": "pointnav", **kwargs}
    with pytest.raises(error, match=match):
        WorldEnv(**args)


def test_model_size_mismatch_and_missing_checkpoint_are_explained(tiny_checkpoint, rooms, tmp_path):
    with pytest.raises(ValueError, match="Expect `obs_size` 32 to match the world model's frame size"):
        WorldEnv(scene=rooms, obs_size=32, checkpoint=str(tiny_checkpoint))
    with pytest.raises(FileNotFoundError, match="dynamics='oracle' or 'warp'"):
        WorldEnv(scene=rooms, obs_size=SIZE, checkpoint=str(tmp_path / "none.safetensors"))


def test_collision_blocks_the_move_and_is_reported(rooms):
    env = WorldEnv(scene=rooms, task="free", dynamics="oracle", obs_size=SIZE, controls_options={"forward_step": 0.25})
    env.reset(seed=1)
    blocked = 0
    for _ in range(200):  # walk straight: sooner or later a wall is hit
        before = env.unwrapped.world.c2w[0].copy()
        *_, info = env.step(1)
        if info["collided"]:
            blocked += 1
            np.testing.assert_array_equal(info["pose"][:3, 3], before[:3, 3])
            break
        assert not rooms.collide(before[:3, 3], info["pose"][:3, 3])
    assert blocked == 1


def test_depth_collision_without_a_map_blocks_moves_into_near_surfaces(rooms):
    env = WorldEnv(scene=rooms, task="free", dynamics="warp", obs_size=SIZE)
    env.reset(seed=0)
    w = env.world
    w.depths[0] = 0.3  # a wall 0.3 m ahead fills the view
    move = w.c2w[0][:3, 2] * np.array([1, 0, 1]) * 0.25
    assert w._depth_collide(0, move)
    w.depths[0] = 5.0
    assert not w._depth_collide(0, move)
    assert not w._depth_collide(0, -move)  # backwards, away from what is seen


def test_render_returns_the_last_frame(rooms):
    env = WorldEnv(scene=rooms, task="free", dynamics="oracle", obs_size=SIZE, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs["rgb"])


def test_human_render_mode_shows_each_frame_in_a_window(monkeypatch, rooms):
    pygame = pytest.importorskip("pygame")
    monkeypatch.setenv("DISPLAY", ":0")  # a display is announced; SDL's dummy driver draws off-screen
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = WorldEnv(scene=rooms, task="free", dynamics="oracle", obs_size=SIZE, render_mode="human")
    try:
        for i in range(3):
            obs = env.reset(seed=0)[0] if i == 0 else env.step(1)[0]  # move_forward
            shown = pygame.surfarray.array3d(pygame.display.get_surface()).swapaxes(0, 1)  # (H s, W s, 3)
            scale = shown.shape[0] // SIZE
            assert scale > 1 and shown.shape == (SIZE * scale, SIZE * scale, 3)
            np.testing.assert_array_equal(shown[::scale, ::scale], obs["rgb"])
        assert env.render() is None
    finally:
        env.close()
    assert not pygame.display.get_init()


def test_human_render_mode_without_a_display_warns_once_and_runs(monkeypatch, rooms):
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    env = WorldEnv(scene=rooms, task="free", dynamics="oracle", obs_size=SIZE, render_mode="human")
    with pytest.warns(UserWarning, match="needs a display"):
        env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step(1)
        assert env.render() is None
    env.close()


@pytest.mark.parametrize("dynamics", ["model", "oracle"])
def test_snapshot_restored_twice_gives_the_same_continuation(dynamics, tiny_checkpoint, rooms):
    env = make("worldenv/Explore-v0", tiny_checkpoint, dynamics).unwrapped
    env.reset(seed=4)
    for a in [0, 0, 1, 0]:
        env.step(a)
    state = env.get_state()
    runs = []
    for _ in range(2):
        env.set_state(state)
        frames, rewards = [], []
        for a in [0, 2, 0, 0, 1, 0]:
            obs, r, *_ = env.step(a)
            frames.append(obs["rgb"])
            rewards.append(r)
        runs.append((np.stack(frames), np.array(rewards), env.get_state()["world"]["memory"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    for k in runs[0][2]:
        assert (runs[0][2][k] == runs[1][2][k]).all()
    # A branch that takes other actions diverges, and returning to the snapshot undoes it.
    env.set_state(state)
    other, *_ = env.step(1)
    env.set_state(state)
    again, *_ = env.step(0)
    np.testing.assert_array_equal(again["rgb"], runs[0][0][0])
    assert not np.array_equal(other["rgb"], again["rgb"])


def _rss() -> int:
    """Resident set size of this process in bytes (Linux), covering torch's and the GL stack's allocations."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _soak(env, steps: int, sample_every: int) -> list[int]:
    """Random actions for ``steps`` steps; the process's RSS every ``sample_every`` steps."""
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    rss = []
    for i in range(steps):
        _, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            env.reset()
        if i % sample_every == sample_every - 1:
            gc.collect()
            rss.append(_rss())
    return rss


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_soak_5000_steps_keeps_memory_flat(rooms):
    env = WorldEnv(scene=rooms, task="explore", dynamics="oracle", obs_size=32, max_episode_steps=100, memory_capacity=2**14)
    rss = _soak(env, 5000, 500)
    # After warm-up (the scene caches 8 distance fields: 8 episodes) the process does not grow with steps.
    assert max(rss[2:]) - rss[2] < 8_000_000, rss
    assert int(env.world.memory.pointmap.count.max()) <= 2**14


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_model_dynamics_soak_keeps_memory_flat(tiny_checkpoint, rooms):
    env = WorldEnv(scene=rooms, task="free", obs_size=SIZE, checkpoint=str(tiny_checkpoint), max_episode_steps=100, memory_capacity=2**13)
    rss = _soak(env, 1000, 100)
    assert max(rss[2:]) - rss[2] < 8_000_000, rss


@pytest.fixture
def capture(tmp_path, rooms):
    """A captured scene: frames rendered along a walk in the rooms scene, stored as a worldenv shard."""
    from worldenv.scenes import load_scene
    from worldenv.scenes.shards import write_shard
    from worldenv.scenes.trajectories import random_walk

    poses = random_walk(rooms, 6, np.random.default_rng(0))
    K = rooms.default_intrinsics(SIZE)
    rgb, depth = rooms.render_batch(poses, K, SIZE)
    path = tmp_path / "walk.npz"
    write_shard(path, rgb[None], depth[None], poses[None], np.tile(K, (1, 6, 1, 1)), np.zeros(1), np.zeros(1), {"spec": "rooms"})
    return load_scene(f"capture:worldenv:{path}", align_gravity=False), rgb


def test_captured_scene_starts_from_a_captured_frame_and_collides_with_depth(capture, tiny_checkpoint):
    scene, frames = capture
    env = WorldEnv(scene=scene, task="free", obs_size=SIZE, checkpoint=str(tiny_checkpoint))
    obs, info = env.reset(seed=0)
    assert any(np.array_equal(obs["rgb"], f) for f in frames)
    obs, *_ = env.step(1)
    assert obs["rgb"].shape == (SIZE, SIZE, 3)
    env.world.depths[0] = 0.2  # a surface right in front: the next forward move is blocked
    before = env.world.c2w[0].copy()
    *_, info = env.step(env.controls.config.actions.index("move_forward"))
    assert info["collided"] and np.array_equal(info["pose"][:3, 3], before[:3, 3])
    with pytest.raises(ValueError, match="Expect a scene with ground truth for dynamics='oracle'"):
        WorldEnv(scene=scene, task="free", dynamics="oracle", obs_size=SIZE).reset(seed=0)


@pytest.mark.parametrize("memory_update", ["holes", "all"])
def test_memory_update_decides_whether_generated_frames_overwrite_the_memory(memory_update, tiny_checkpoint, rooms):
    env = WorldEnv(scene=rooms, task="free", controls="pose", controls_options={"mode": "relative"}, obs_size=SIZE,
                   checkpoint=str(tiny_checkpoint), memory_update=memory_update)  # fmt: skip
    env.reset(seed=2)
    world = env.unwrapped.world
    c2w, K = torch.from_numpy(world.c2w), torch.from_numpy(world.K)
    before, _, valid = world.memory.render(c2w, K, SIZE)
    n0 = int(world.memory.num_points[0])
    env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))  # stand still: the model re-generates the reference view
    after, _, _ = world.memory.render(c2w, K, SIZE)
    n1 = int(world.memory.num_points[0])
    if memory_update == "holes":  # only the warp's few holes became points; what was seen is kept
        assert 0 <= n1 - n0 <= int((~valid).sum())
        assert torch.equal(after[valid], before[valid])
    else:  # the generated frame overwrote the reference's voxels
        assert not torch.equal(after[valid], before[valid])
