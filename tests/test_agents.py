"""Agents: the scripted policy solves PointNav; the PPO train and eval scripts run end to end (CI smoke)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_env_fixtures import SIZE, rooms, tiny_checkpoint, one_thread  # noqa: F401

from worldenv.envs import WorldEnv
from worldenv.envs.policies import RandomPolicy, ScriptedPolicy, evaluate, run_episode

AGENTS = Path(__file__).resolve().parents[1] / "agents"

pytestmark = pytest.mark.usefixtures("one_thread")


def load_script(name: str):
    sys.path.insert(0, str(AGENTS))
    spec = importlib.util.spec_from_file_location(f"agents_{name}", AGENTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the script runs
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_scripted_policy_solves_pointnav_with_oracle_dynamics(rooms):
    make = lambda d: WorldEnv(scene=rooms, task="pointnav", dynamics=d, obs_size=32)  # noqa: E731
    (res,) = evaluate(ScriptedPolicy(), make, ("oracle",), seeds=tuple(range(6)))
    assert res.success == 1.0 and res.spl > 0.9, res.per_episode


def test_random_policy_is_seeded(rooms):
    env = WorldEnv(scene=rooms, task="explore", dynamics="warp", obs_size=32, max_episode_steps=20)
    a, _ = run_episode(env, RandomPolicy(), seed=3)
    b, _ = run_episode(env, RandomPolicy(), seed=3)
    assert a == b and a["length"] == 20


@pytest.mark.slow
def test_ppo_train_and_eval_scripts_smoke(tmp_path, tiny_checkpoint, rooms, capsys):
    train = load_script("ppo_train")
    path = train.main([
        "--dynamics", "oracle", "--scene-pool", "1", "--obs-size", str(SIZE), "--num-envs", "2",
        "--total-timesteps", "256", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1",
        "--log-dir", str(tmp_path / "tb"), "--save-path", str(tmp_path / "ppo.zip"),
    ])  # fmt: skip
    assert Path(path).exists()
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*")), "TensorBoard logs are written"
    evaluate_script = load_script("ppo_eval")
    out = evaluate_script.main([
        "--model", path, "--dynamics", "model,oracle", "--checkpoint", str(tiny_checkpoint), "--scene-pool", "1",
        "--obs-size", str(SIZE), "--episodes", "2", "--max-episode-steps", "10",
    ])  # fmt: skip
    assert set(out) == {"model", "oracle"}
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == out
    assert "| success |" in "\n".join(printed)
