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


@pytest.mark.parametrize("env_id, keys", [("worldenv/PointNav-v0", {"rgb", "pointgoal"}), ("worldenv/ImageNav-v0", {"rgb", "imagegoal"})])
def test_nav_encoder_trains_saves_and_loads(tmp_path, rooms, env_id, keys):
    import torch
    from stable_baselines3 import PPO

    from worldenv.sb3 import NavEncoder

    venv = make_sb3_env(env_id, num_envs=2, scene="rooms", scene_pool=1, dynamics="oracle", obs_size=SIZE, depth=True)
    assert keys | {"depth"} == set(venv.observation_space.spaces)
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, tensorboard_log=str(tmp_path),
                policy_kwargs={"features_extractor_class": NavEncoder, "features_extractor_kwargs": {"cnn_features": 16}})  # fmt: skip
    enc = model.policy.features_extractor
    # 16 per image (rgb, depth, maybe imagegoal) + (d, cos, sin) and its 32-unit embedding for pointgoal.
    assert enc.features_dim == 16 * (len(keys - {"pointgoal"}) + 1) + (35 if "pointgoal" in keys else 0)
    model.learn(32)
    model.save(tmp_path / "ppo.zip")
    again = PPO.load(tmp_path / "ppo.zip", device="cpu")
    assert isinstance(again.policy.features_extractor, NavEncoder)
    saved, loaded = model.policy.state_dict(), again.policy.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    obs = venv.reset()
    a, _ = model.predict(obs, deterministic=True)
    b, _ = again.predict(obs, deterministic=True)
    assert np.array_equal(a, b)
    venv.close()


def test_nav_encoder_reads_the_goal_as_distance_cos_sin():
    import torch
    from gymnasium import spaces

    from worldenv.sb3 import NavEncoder

    space = spaces.Dict({
        "rgb": spaces.Box(0, 255, (3, 64, 64), np.uint8),  # as SB3 hands it over: transposed, scaled to [0, 1]
        "pointgoal": spaces.Box(-np.inf, np.inf, (2,), np.float32),
    })  # fmt: skip
    enc = NavEncoder(space, cnn_features=8)
    rgb = torch.rand(2, 3, 64, 64)
    goal = torch.tensor([[1.5, np.pi - 1e-4], [1.5, -np.pi + 1e-4]])
    f = enc({"rgb": torch.cat([rgb[:1], rgb[:1]]), "pointgoal": goal})
    assert f.shape == (2, 8 + 3 + 32)
    # Keys in the Dict space's (sorted) order: (d, cos a, sin a) and its embedding, then rgb's 8 features.
    torch.testing.assert_close(f[:, :3], torch.tensor([[1.5, -1.0, 1e-4], [1.5, -1.0, -1e-4]]), atol=1e-6, rtol=0)
    # Just either side of +-pi the goal is nearly the same direction, so the features barely differ.
    assert (f[0] - f[1]).abs().max() < 1e-3


def test_nav_encoder_rejects_small_images():
    from gymnasium import spaces

    from worldenv.sb3 import NavEncoder

    space = spaces.Dict({"rgb": spaces.Box(0, 255, (16, 16, 3), np.uint8)})
    with pytest.raises(ValueError, match="rgb"):
        NavEncoder(space)
