"""The rollout, demo and bench commands: videos, printed metrics, the JSON line."""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest
from test_env_fixtures import SIZE, rooms, tiny_checkpoint, one_thread  # noqa: F401

from worldenv.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rollout_writes_a_video_and_prints_metrics(tmp_path, tiny_checkpoint, rooms, capsys):
    out = tmp_path / "run.mp4"
    rc = main([
        "rollout", "--env", "worldenv/PointNav-v0", "--agent", "random", "--steps", "12", "--out", str(out),
        "--checkpoint", str(tiny_checkpoint), "--obs-size", str(SIZE), "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    video = iio.imread(out)
    text = capsys.readouterr().out
    frames = int(text.split("(")[1].split(" frames")[0])
    assert video.shape[1:] == (SIZE, SIZE, 3) and video.shape[0] == frames >= 13
    assert "success" in text and "SPL" in text and "steps/s" in text


def test_rollout_side_by_side_shows_model_oracle_and_warp(tmp_path, tiny_checkpoint, rooms, capsys):
    out = tmp_path / "cmp.gif"
    rc = main([
        "rollout", "--agent", "scripted", "--steps", "5", "--out", str(out), "--side-by-side",
        "--checkpoint", str(tiny_checkpoint), "--obs-size", str(SIZE), "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    video = iio.imread(out)
    assert video.shape[1:3] == (SIZE, 3 * SIZE + 4)  # three panels and two separators
    # The oracle and warp panels agree at the start (the warp is the start view itself) and the model differs.
    first = video[0][..., :3].astype(int)
    oracle, warp = first[:, SIZE + 2 : 2 * SIZE + 2], first[:, 2 * SIZE + 4 :]
    assert abs(oracle - warp).mean() < 3


def test_demo_explains_a_missing_checkpoint(tmp_path, capsys):
    rc = main(["demo", "--steps", "2", "--out", str(tmp_path / "d.mp4"), "--checkpoint", str(tmp_path / "none.safetensors")])
    assert rc == 1
    assert "dynamics='oracle' or 'warp'" in capsys.readouterr().err


def test_bench_prints_a_json_last_line(tiny_checkpoint, rooms, capsys):
    rc = main([
        "bench", "--sizes", "1,2", "--dynamics", "model,oracle", "--obs-size", str(SIZE), "--steps", "2",
        "--warmup", "1", "--checkpoint", str(tiny_checkpoint), "--json",
    ])  # fmt: skip
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    data = json.loads(lines[-1])
    for key in ("model_steps_per_s_b1", "model_frames_per_s_b2", "oracle_steps_per_s_b1"):
        assert data[key] > 0
    assert data["model_frames_per_s_b2"] == pytest.approx(2 * data["model_steps_per_s_b2"], rel=0.01)
