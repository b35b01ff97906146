"""worldenv.sb3: stable-baselines3 sees the batched WorldVectorEnv as a VecEnv."""

from __future__ import annotations

import numpy as np
import pytest
from test_env_fixtures import SIZE, rooms, one_thread  # noqa: F401

pytest.importorskip("stable_baselines3")

from worldenv.envs import WorldVectorEnv  # noqa: E402
from worldenv.sb3 import SB3VecEnv, make_sb3_env  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def make(num_envs: int = 2, **kw) -> SB3VecEnv:
    return make_sb3_env("worldenv/PointNav-v0", num_envs=num_envs, scene="rooms", scene_pool=1, dynamics="oracle", obs_size=SIZE, **kw)


def test_spaces_and_reset(rooms):
    venv = make()
    assert venv.num_envs == 2 and isinstance(venv.venv, WorldVectorEnv)
    venv.seed(3)
    obs = venv.reset()
    assert obs["rgb"].shape == (2, SIZE, SIZE, 3) and obs["pointgoal"].shape == (2, 2)
    assert venv.observation_space.contains({k: v[0] for k, v in obs.items()})
    assert len(venv.reset_infos) == 2 and "distance_to_goal" in venv.reset_infos[0]


def test_seed_makes_resets_reproducible(rooms):
    a, b = make(), make()
    a.seed(5)
    b.seed(5)
    np.testing.assert_array_equal(a.reset()["rgb"], b.reset()["rgb"])


def test_done_streams_carry_terminal_observation_and_the_ended_episodes_info(rooms):
    venv = make(max_episode_steps=3)
    venv.seed(0)
    venv.reset()
    infos = []
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(np.array([0, 2]))  # stream 0 STOPs at once; stream 1 turns until the time limit
        assert rewards.dtype == np.float32 and dones.dtype == bool
        if dones[0]:
            term0 = infos[0]
            assert "terminal_observation" in term0 and term0["TimeLimit.truncated"] is False
            assert term0["success"] == 0.0 and term0["episode_step"] == 1
            # The returned observation is the next episode's first, not the terminal one.
            assert venv.reset_infos[0]["episode_step"] == 0
    assert dones[1] and infos[1]["TimeLimit.truncated"] is True
    np.testing.assert_array_equal(infos[1]["terminal_observation"]["rgb"].shape, (SIZE, SIZE, 3))
    assert venv.env_is_wrapped(object) == [False, False]
    assert venv.get_attr("num_envs") == [2, 2]


def test_rejects_other_vector_envs():
    with pytest.raises(TypeError, match="Expect `venv` to be a WorldVectorEnv"):
        SB3VecEnv(object())  # type: ignore[arg-type]
