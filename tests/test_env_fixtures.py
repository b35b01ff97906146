"""Shared helpers of the environment tests: a tiny random-weight world model and cached scenes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worldenv.envs.world import load_scene_cached
from worldenv.model import ModelConfig, WorldModel

SIZE = 64


def tiny_model(size: int = SIZE, seed: int = 0) -> WorldModel:
    """A world model with a tiny config and random weights (frames are noise, but shaped right)."""
    cfg = ModelConfig(
        height=size, width=size, codec_factor=8, latent_channels=4, codec_width=8, codec_max_width=16,
        patch_size=2, dim=32, layers=2, heads=2, window=3,
    )  # fmt: skip
    model = WorldModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights: the adaLN-Zero init would make every frame the same
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    tiny_model().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def rooms():
    return load_scene_cached("rooms", 0)


@pytest.fixture(scope="session")
def street():
    return load_scene_cached("street", 0)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: tiny models gain nothing from more, and the CI box is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
