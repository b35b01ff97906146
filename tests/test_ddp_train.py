"""Every stage under torchrun with two CPU processes (gloo): replicas hold identical weights afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

from test_train_data import _clip
from worldenv.train.data import write_clip_cache

TINY = ["dim=32", "layers=1", "heads=2", "codec_width=8", "codec_max_width=8", "height=32", "width=32", "window=2"]

SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from safetensors.torch import save_file
    from worldenv.train.cli import add_arguments, build_config
    import argparse

    out, data = sys.argv[1], sys.argv[2]
    model = [a for kv in {tiny!r} for a in ("--model", kv)]
    common = ["--data", data, "--batch", "2", "--no-progress", "--threads", "1", "--log-every", "1", "--frames", "3"]

    def cfg(stage, *extra):
        p = argparse.ArgumentParser()
        add_arguments(p)
        return build_config(p.parse_args([stage, *common, *model, *extra]))

    from worldenv.train.codec import train_codec
    from worldenv.train.teacher import train_teacher
    from worldenv.train.student import train_student

    results = {{}}
    results["codec"] = train_codec(cfg("codec", "--out", out + "/codec", "--steps", "3", "--frames-per-step", "4"))
    results["teacher"] = train_teacher(cfg("teacher", "--out", out + "/teacher", "--steps", "3", "--init", out + "/codec/model.safetensors", "--clip-frames", "3"))
    results["student"] = train_student(cfg("student", "--out", out + "/student", "--steps", "3", "--regress-steps", "1",
                                           "--teacher", out + "/teacher/model.safetensors", "--rollout", "3", "--chunk", "2", "--ode-steps", "2"))
    rank = int(__import__("os").environ["RANK"])
    for name, m in results.items():
        save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, f"{{out}}/{{name}}-replica{{rank}}.safetensors")
    """
)


@pytest.mark.timeout(300)
def test_two_process_replicas_identical(tmp_path):
    data = write_clip_cache(tmp_path / "clips.npz", [_clip(s) for s in range(6)])
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(tiny=TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
           str(script), str(tmp_path / "out"), str(data)]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in ("codec", "teacher", "student"):
        a = load_file(tmp_path / "out" / f"{stage}-replica0.safetensors")
        b = load_file(tmp_path / "out" / f"{stage}-replica1.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all(), f"{stage}: replicas differ in {k}"
    # the run really trained: the student moved away from its teacher
    s = load_file(tmp_path / "out" / "student-replica0.safetensors")
    t = load_file(tmp_path / "out" / "teacher-replica0.safetensors")
    assert any(not (s[k] == t[k]).all() for k in s if k.startswith("dit."))
