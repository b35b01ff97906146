"""WorldVectorEnv: native batching, SAME_STEP autoreset, agreement with WorldEnv, snapshots."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from test_env_fixtures import SIZE, rooms, tiny_checkpoint, one_thread  # noqa: F401

import worldenv  # noqa: F401
from worldenv.envs import WorldVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")


def make_vec(num_envs: int, ckpt=None, dynamics: str = "oracle", env_id: str = "worldenv/PointNav-v0", **kw):
    extra = {"checkpoint": str(ckpt)} if ckpt is not None else {}
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
        scene="rooms", scene_pool=1, dynamics=dynamics, obs_size=SIZE, **extra, **kw,
    )  # fmt: skip


def test_make_vec_builds_the_native_vector_env_with_same_step_autoreset(rooms):
    envs = make_vec(3)
    assert isinstance(envs, WorldVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, info = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert obs["rgb"].shape == (3, SIZE, SIZE, 3)
    assert info["_pose"].all() and info["pose"].shape == (3, 4, 4)


def test_one_batched_model_render_and_fuse_call_per_step(tiny_checkpoint, rooms):
    envs = make_vec(3, tiny_checkpoint, dynamics="model")
    envs.reset(seed=0)
    w = envs.world
    calls = {"model": 0, "render": 0, "fuse": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    w.model.step = counted("model", w.model.step)
    w.memory.render = counted("render", w.memory.render)
    w.memory.fuse = counted("fuse", w.memory.fuse)
    for _ in range(4):
        envs.step(np.array([1, 2, 3]))
    assert calls == {"model": 4, "render": 4, "fuse": 4}


def test_streams_replay_single_env_episodes_including_autoreset(rooms):
    """Stream i of reset(seed=s) is WorldEnv's episode for seed s + i; its next episode follows on."""
    B, seed = 2, 11
    envs = make_vec(B, max_episode_steps=6)
    singles = [gym.make("worldenv/PointNav-v0", scene="rooms", scene_pool=1, dynamics="oracle", obs_size=SIZE, max_episode_steps=6) for _ in range(B)]
    obs, _ = envs.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    resets = 0
    for _ in range(9):  # crosses the 6-step truncation (and any STOP) once at least
        actions = rng.integers(1, 4, size=B)
        actions[1] = 0 if rng.random() < 0.1 else actions[1]
        obs, reward, term, trunc, info = envs.step(actions)
        for i, env in enumerate(singles):
            o, r, te, tr, inf = env.step(int(actions[i]))
            assert r == reward[i] and te == term[i] and tr == trunc[i]
            if te or tr:
                resets += 1
                np.testing.assert_array_equal(info["final_obs"][i]["rgb"], o["rgb"])
                assert info["final_info"]["success"][i] == inf["success"]
                o, inf = env.reset()
            np.testing.assert_array_equal(obs["rgb"][i], o["rgb"])
            np.testing.assert_array_equal(obs["pointgoal"][i], o["pointgoal"])
            np.testing.assert_array_equal(info["pose"][i], inf["pose"])
    assert resets >= 2


def test_same_seed_gives_identical_batched_model_episodes(tiny_checkpoint, rooms):
    runs = []
    for _ in range(2):
        envs = make_vec(2, tiny_checkpoint, dynamics="model")
        obs, _ = envs.reset(seed=3)
        frames = [obs["rgb"]]
        for a in ([1, 2], [1, 1], [3, 1], [1, 1]):
            obs, *_ = envs.step(np.array(a))
            frames.append(obs["rgb"])
        runs.append(np.stack(frames))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][-1, 0], runs[0][-1, 1])


def test_partial_reset_leaves_other_streams_alone(rooms):
    envs = make_vec(2)
    envs.reset(seed=0)
    obs, *_ = envs.step(np.array([1, 1]))
    obs2, info = envs.reset(options={"reset_mask": np.array([True, False])})
    np.testing.assert_array_equal(obs2["rgb"][1], obs["rgb"][1])
    assert info["_pose"].tolist() == [True, False]
    assert envs.world.steps.tolist() == [0, 1]


def test_bad_batches_raise_clear_errors(rooms):
    envs = make_vec(2)
    with pytest.raises(gym.error.ResetNeeded):
        envs.step(np.array([1, 1]))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"Expect one action per environment \(2\), actually: 3"):
        envs.step(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"Expect `action` in \[0, 4\)"):
        envs.step(np.array([1, 9]))
    with pytest.raises(ValueError, match="Expect `seed` to be an int or 2 ints"):
        envs.reset(seed=[1, 2, 3])


def test_vector_snapshot_restored_twice_gives_the_same_continuation(tiny_checkpoint, rooms):
    envs = make_vec(2, tiny_checkpoint, dynamics="model", env_id="worldenv/Free-v0")
    envs.reset(seed=1)
    envs.step(np.array([1, 2]))
    state = envs.get_state()
    outs = []
    for _ in range(2):
        envs.set_state(state)
        frames = [envs.step(np.array(a))[0]["rgb"] for a in ([1, 1], [3, 4], [1, 8])]
        outs.append(np.stack(frames))
    np.testing.assert_array_equal(outs[0], outs[1])

