"""The shipped default model: loadable by name, the default shape, within the package size budget."""

from __future__ import annotations

from pathlib import Path

import torch

import worldenv.model
from worldenv.model import ModelConfig, WorldModel


def test_default_checkpoint_loads_and_is_small():
    path = Path(worldenv.model.__file__).parent / "weights" / "default.safetensors"
    assert path.stat().st_size <= 50 * 2**20
    model = WorldModel.from_pretrained("default", device="cpu")
    assert model.config.to_dict() == ModelConfig().to_dict()
    # trained, not freshly initialised: codec latent statistics were set from data
    assert not torch.allclose(model.codec.latent_std, torch.ones_like(model.codec.latent_std))
