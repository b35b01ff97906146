"""CUDA kernels: every source compiles, the loader finds them, and (with a GPU) they match the reference."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_fuse import by_key, random_frames
from test_splat import assert_same, random_scene

from worldenv.kernels import PointMap, _backend, fuse, splat
from worldenv.kernels import cuda as cuda_loader

CUDA_DIR = Path(__file__).resolve().parents[1] / "csrc" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None)


def test_sources_exist_and_the_loader_finds_them():
    assert {p.stem for p in SOURCES} >= {"splat", "fuse"}
    for p in SOURCES:
        assert cuda_loader.source_path(p.stem) == p
    with pytest.raises(FileNotFoundError, match="nope.cu not found"):
        cuda_loader.source_path("nope")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_source_compiles_to_ptx(source, tmp_path):
    # The options NVRTC gets at run time (cuda.NVRTC_OPTIONS), minus NVRTC-only spellings.
    cmd = [NVCC, "--ptx", *cuda_loader.NVRTC_OPTIONS, str(source), "-o", str(tmp_path / "out.ptx")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    kernels = {"splat": ["splat_points", "splat_resolve"], "fuse": ["fuse_unproject", "fuse_first_pixel", "fuse_overwrite", "fuse_clock"]}
    for name in kernels[source.stem]:
        assert f".entry {name}(" in ptx, f"{name} missing from {source.name}"
    assert "fma.rn.f32" not in ptx  # --fmad=false: no contraction, as on the CPU


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or _backend.load_cupy() is None,
    reason="needs a CUDA device and CuPy (pip install worldenv[cuda])",
)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("seed", range(3))
def test_cuda_splat_matches_reference(seed):
    args = random_scene(seed, B=3, N=20_000, C=3, H=40, W=56)
    ref = splat(*args, (40, 56), backend="reference")
    got = splat(*[a.cuda() for a in args], (40, 56), backend="cuda")
    # Packed depth|index keys make ties deterministic, so exact equality is expected.
    assert_same(ref, tuple(t.cpu() for t in got))


@needs_cuda
@pytest.mark.cuda
def test_cuda_fuse_matches_reference():
    frames = random_frames(0, 8)
    ref = PointMap.empty(2, 600, 3)
    got = PointMap.empty(2, 600, 3, device="cuda")
    for i, (feats, depth, c2w, K) in enumerate(frames):
        mask = torch.tensor([True, i % 3 != 1])
        fuse(ref, feats, depth, c2w, K, voxel_size=0.05, batch_mask=mask, backend="reference")
        fuse(got, feats.cuda(), depth.cuda(), c2w.cuda(), K.cuda(), voxel_size=0.05, batch_mask=mask.cuda(), backend="cuda")
    got = got.to("cpu")
    assert torch.equal(ref.count, got.count) and torch.equal(ref.frame, got.frame)
    for b in range(2):  # same voxel set with the same contents
        r, g = by_key(ref, b), by_key(got, b)
        for name in r:
            assert torch.equal(r[name], g[name]), name
