"""Shared fixtures for the kernel and memory tests."""

from __future__ import annotations

import pytest
import torch

from worldenv.kernels import _backend


@pytest.fixture(autouse=True)
def _isolated_backend(monkeypatch: pytest.MonkeyPatch):
    """Each test starts without WORLDENV_BACKEND and with no fallback warned yet."""
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)
    _backend._clear_warnings()
    yield
    _backend._clear_warnings()


@pytest.fixture
def native():
    """The native extension; tests that compare against it skip when it is not built."""
    mod = _backend.load_native()
    if mod is None:
        pytest.skip("worldenv._native is not built (pip install -e .)")
    return mod


@pytest.fixture
def threads(native):
    """Set the native thread count inside a test and restore it afterwards."""
    before = native.max_threads()
    yield native.set_num_threads
    native.set_num_threads(before)


def pinhole(f: float, H: int, W: int, B: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(B, 3, 3) intrinsics with focal f and the principal point at the image centre."""
    K = torch.tensor([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(B, 3, 3).clone()


def random_pose(g: torch.Generator, B: int = 1, angle: float = 0.5, shift: float = 0.5) -> torch.Tensor:
    """(B, 4, 4) float64 camera-to-world poses: a random rotation up to `angle` rad and shift."""
    axis = torch.randn(B, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    theta = (torch.rand(B, 1, generator=g, dtype=torch.float64) * angle)[..., None]
    S = torch.zeros(B, 3, 3, dtype=torch.float64)
    S[:, 0, 1], S[:, 0, 2], S[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    S = S - S.transpose(1, 2)
    R = torch.eye(3, dtype=torch.float64) + torch.sin(theta) * S + (1 - torch.cos(theta)) * (S @ S)
    T = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = (torch.rand(B, 3, generator=g, dtype=torch.float64) * 2 - 1) * shift
    return T
