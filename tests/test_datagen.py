"""``worldenv datagen``: sharded clips, manifest, resuming, kill safety, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from worldenv.cli import main
from worldenv.geometry import intrinsics_from_fov
from worldenv.scenes import load_scene
from worldenv.scenes.datagen import DatagenConfig, generate
from worldenv.scenes.shards import MANIFEST, ShardDataset, read_manifest, read_shard
from worldenv.scenes.trajectories import make_trajectory


def _cfg(out: Path, **kw) -> DatagenConfig:
    base = dict(scene="rooms", episodes=4, steps=4, size=24, out=str(out), seed=5, episodes_per_scene=2)
    base.update(kw)
    return DatagenConfig(**base)


def test_generate_writes_shards_and_manifest(tmp_path):
    cfg = _cfg(tmp_path)
    manifest = generate(cfg, progress=False)
    assert manifest["complete"] and [e["file"] for e in manifest["shards"]] == ["shard-00000.npz", "shard-00001.npz"]
    assert manifest["scene_seeds"] == [5, 6] and [e["scene_seed"] for e in manifest["shards"]] == [5, 6]
    assert read_manifest(tmp_path) == manifest
    ds = ShardDataset(tmp_path)
    assert len(ds) == 4
    clip = ds.clip(3)
    assert clip.rgb.shape == (4, 24, 24, 3) and clip.depth.shape == (4, 24, 24) and clip.depth.dtype == np.float32
    assert clip.scene_seed == 6 and clip.clip_index == 3 and clip.spec == "rooms"
    # Any clip can be rebuilt from its scene seed and clip index alone.
    scene = load_scene("rooms", seed=6)
    kind, P = make_trajectory("mix", scene, 4, np.random.default_rng([5, 6, 3]))
    assert kind == clip.trajectory and np.array_equal(P, clip.c2w)
    rgb, depth = scene.render_batch(P, intrinsics_from_fov(24, 24, 90.0), 24)
    assert np.array_equal(rgb, clip.rgb) and np.array_equal(depth, clip.depth)
    assert not list(tmp_path.glob(".*tmp*"))


def test_resume_skips_finished_shards(tmp_path):
    cfg = _cfg(tmp_path, episodes=6)
    first = generate(cfg, progress=False, max_shards=1)
    assert not first["complete"] and len(first["shards"]) == 1
    done = tmp_path / "shard-00000.npz"
    stamp = done.stat().st_mtime_ns
    (tmp_path / ".shard-00001.npz.tmp4242").write_bytes(b"half a shard from a killed run")
    final = generate(cfg, progress=False)
    assert final["complete"] and len(final["shards"]) == 3
    assert done.stat().st_mtime_ns == stamp  # not rewritten
    assert not list(tmp_path.glob(".*tmp*"))
    again = generate(cfg, progress=False)  # nothing left to do
    assert again["shards"] == final["shards"]


def test_missing_shard_files_are_rebuilt_identically(tmp_path):
    cfg = _cfg(tmp_path)
    generate(cfg, progress=False)
    f = tmp_path / "shard-00001.npz"
    before = f.read_bytes()
    f.unlink()
    generate(cfg, progress=False)
    assert f.read_bytes() == before


def test_interrupted_write_leaves_no_shard(tmp_path, monkeypatch):
    real = np.savez

    def dies(file, **arrays):
        file.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies)
    with pytest.raises(KeyboardInterrupt):
        generate(_cfg(tmp_path), progress=False)
    assert not list(tmp_path.glob("shard-*.npz")) and not list(tmp_path.glob(".*tmp*"))
    m = read_manifest(tmp_path)
    assert m is None or m["shards"] == []
    monkeypatch.setattr(np, "savez", real)
    assert generate(_cfg(tmp_path), progress=False)["complete"]


def test_other_configuration_is_refused(tmp_path):
    generate(_cfg(tmp_path, episodes=2), progress=False)
    with pytest.raises(ValueError, match="another --out"):
        generate(_cfg(tmp_path, episodes=2, size=32), progress=False)


def test_config_is_validated(tmp_path):
    with pytest.raises(ValueError, match="`episodes`"):
        _cfg(tmp_path, episodes=0)
    with pytest.raises(ValueError, match="`trajectory`"):
        _cfg(tmp_path, trajectory="fly")
    with pytest.raises(ValueError, match="drive"):
        _cfg(tmp_path, trajectory="drive")
    with pytest.raises(ValueError, match="ground truth"):
        _cfg(tmp_path, scene="capture:tum:/data")


def test_street_clips(tmp_path):
    m = generate(_cfg(tmp_path, scene="street", episodes=2, steps=3, size=16, episodes_per_scene=2, trajectory="drive"), progress=False)
    arrays, meta = read_shard(tmp_path / m["shards"][0]["file"])
    assert meta["trajectories"] == ["drive", "drive"] and arrays["rgb"].shape == (2, 3, 16, 16, 3)
    assert (arrays["depth"] == 0).any()  # the sky


def test_cli_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["datagen", "--scene", "rooms", "--episodes", "2", "--steps", "3", "--size", "16", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "2 clips in 1 shards" in capsys.readouterr().out
    assert main(["datagen", "--episodes", "0", "--out", str(out), "--no-progress"]) == 2
    assert "`episodes`" in capsys.readouterr().out


def test_cli_import_is_light():
    code = (
        "import argparse, sys, worldenv.scenes.datagen as d; d.add_arguments(argparse.ArgumentParser()); "
        "print('torch' in sys.modules, 'moderngl' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"], out


def test_killed_run_resumes(tmp_path):
    """SIGKILL a real run after its first shard; the rerun keeps finished shards and completes."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "worldenv", "datagen", "--scene", "rooms", "--episodes", "16", "--steps", "6", "--size", "24"]
    cmd += ["--episodes-per-scene", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            m = read_manifest(out) if (out / MANIFEST).exists() else None
            if m is not None and len(m["shards"]) >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no shard finished within 120 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    m = read_manifest(out)
    listed = {e["file"]: e["bytes"] for e in m["shards"]}
    for f in out.glob("shard-*.npz"):  # every shard under its final name is whole
        read_shard(f)
    stamps = {f: (out / f).stat().st_mtime_ns for f in listed}
    cfg = DatagenConfig(scene="rooms", episodes=16, steps=6, size=24, episodes_per_scene=1, out=str(out))
    final = generate(cfg, progress=False)
    assert final["complete"] and len(final["shards"]) == 16
    for f, ns in stamps.items():
        assert (out / f).stat().st_mtime_ns == ns and (out / f).stat().st_size == listed[f]
    assert json.loads((out / MANIFEST).read_text())["complete"] is True
