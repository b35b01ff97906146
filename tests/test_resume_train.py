"""A training run killed mid-way restarts from its last checkpoint and ends with the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from test_train_data import _clip
from worldenv.train.data import write_clip_cache

TINY = ["dim=32", "layers=1", "heads=2", "codec_width=8", "codec_max_width=8", "height=32", "width=32", "window=2"]


def _cmd(data: str, out: str, stage: str = "teacher", extra: tuple[str, ...] = ()) -> list[str]:
    model = [a for kv in TINY for a in ("--model", kv)]
    return [sys.executable, "-m", "worldenv", "train", stage, "--data", data, "--out", out, "--steps", "40",
            "--ckpt-every", "5", "--batch", "2", "--threads", "1", "--no-progress", "--log-every", "1",
            "--frames", "3", *model, *extra]  # fmt: skip


def _step(path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["state"])["step"]


@pytest.mark.timeout(240)
def test_killed_run_resumes_to_identical_weights(tmp_path):
    data = str(write_clip_cache(tmp_path / "clips.npz", [_clip(s) for s in range(6)]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    init = ("--init", "")
    subprocess.run(_cmd(data, str(tmp_path / "full"), extra=init), env=env, check=True, capture_output=True, timeout=200)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, str(out), extra=init), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    resume = out / "resume.safetensors"
    deadline = time.time() + 150
    while time.time() < deadline and not (resume.exists() and _step(resume) >= 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    killed_at = _step(resume)
    assert 10 <= killed_at < 40 and killed_at % 5 == 0

    r = subprocess.run(_cmd(data, str(out), extra=init), env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"resumed {resume} at step {killed_at}" in r.stdout
    first_logged = int(r.stdout.split("step ", 2)[2].split()[0]) if r.stdout.count("step ") > 1 else None
    assert first_logged == killed_at + 1  # continues right after the checkpoint: at most one interval lost

    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"resumed run differs from the uninterrupted one in {k}"


def test_a_kill_between_the_generator_and_state_writes_resumes_the_matching_generators(tmp_path):
    # Each checkpoint writes the generators first, then the state: a kill in between leaves
    # generators one checkpoint ahead of the state, which must not be the ones restored.
    from torch import nn

    from worldenv.train.run import Run, RunConfig

    data = str(write_clip_cache(tmp_path / "clips.npz", [_clip(s) for s in range(2)]))
    cfg = RunConfig(out=str(tmp_path / "run"), data=data, ckpt_every=5, threads=1)
    run = Run(cfg, {"stage": "test"})
    net = nn.Linear(2, 2)
    run.resume({"net": net}, {}, {})
    run.rng.random(3)
    run.checkpoint(5)
    at_5 = (run.rng.bit_generator.state, run.gen.get_state().clone())
    run.rng.random(7)
    run.gen.manual_seed(123)
    # The kill: step 10's generators are on disk, its state is not.
    run._rng_path(10).write_text(
        json.dumps({"step": 10, "numpy": {"run": run.rng.bit_generator.state}, "torch": {"noise": run.gen.get_state().tolist()}})
    )
    again = Run(cfg, {"stage": "test"})
    assert again.resume({"net": nn.Linear(2, 2)}, {}, {}) == 5
    assert again.rng.bit_generator.state == at_5[0]
    assert torch.equal(again.gen.get_state(), at_5[1])
    again.checkpoint(10, force=True)
    assert sorted(p.name for p in (tmp_path / "run").glob("rng-*.json")) == ["rng-0-10.json"]
