"""Checkpoints: safetensors + config metadata, atomic saves, strict validation, no pickle ever."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import worldenv.model.checkpoint as ckpt
from worldenv.model import ModelConfig, WorldModel
from worldenv.model.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint


def tiny_model(seed: int = 0) -> WorldModel:
    cfg = ModelConfig(
        height=16, width=16, codec_factor=4, latent_channels=4, codec_width=8, codec_max_width=8,
        patch_size=2, dim=16, layers=1, heads=1, window=2,
    )  # fmt: skip
    model = WorldModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.codec.latent_std.fill_(1.5)
    return model


def first_frame(model: WorldModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rgb, depth = torch.rand(1, 16, 16, 3, generator=g), 1 + torch.rand(1, 16, 16, generator=g)
    K = torch.tensor([[[16.0, 0, 7.5], [0, 16.0, 7.5], [0, 0, 1]]])
    model.reset(rgb, depth, torch.eye(4)[None], K)
    return model.step(
        rgb, depth, torch.ones(1, 16, 16, dtype=torch.bool), torch.eye(4)[None], torch.Generator().manual_seed(1)
    )[0]


@pytest.fixture(autouse=True)
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here fails if anything calls torch.load."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("as_dir", [False, True])
def test_round_trip(tmp_path: Path, as_dir: bool) -> None:
    model = tiny_model()
    path = tmp_path / ("ckpt" if as_dir else "model.safetensors")
    model.save_pretrained(path)
    loaded = WorldModel.from_pretrained(path, device="cpu")
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert torch.equal(first_frame(loaded), first_frame(model))
    weights = path / "model.safetensors" if as_dir else path
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == ckpt.FORMAT
    assert json.loads(meta["config"]) == model.config.to_dict()
    if as_dir:
        assert json.loads((path / "config.json").read_text()) == model.config.to_dict()
    assert sorted(p.name for p in weights.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_config_json_beside_weights_is_used_when_metadata_has_none(tmp_path: Path) -> None:
    model = tiny_model()
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = WorldModel.from_pretrained(tmp_path)
    assert loaded.config == model.config


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.safetensors"
    tiny_model(seed=0).save_pretrained(path)
    before = path.read_bytes()

    def broken(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny_model(seed=1).save_pretrained(path)
    assert path.read_bytes() == before  # the old checkpoint survives a failed save
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left behind


def _write(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, object]) -> Path:
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    return path


def test_wrong_shape_missing_unknown_rejected_with_names(tmp_path: Path) -> None:
    model = tiny_model()
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    name = "dit.blocks.0.fc1.weight"

    bad = dict(sd)
    bad[name] = torch.zeros(3, 3)
    with pytest.raises(
        ValueError,
        match=re.escape(f"Expect tensor `{name}` in checkpoint")
        + r".*"
        + re.escape(f"to have shape {tuple(sd[name].shape)}, actually: (3, 3)"),
    ):
        WorldModel.from_pretrained(_write(tmp_path / "shape.safetensors", bad, cfg))

    missing = {k: v for k, v in sd.items() if k != name}
    with pytest.raises(
        ValueError,
        match=re.escape(f"to hold tensor `{name}` with shape {tuple(sd[name].shape)}, actually: it is missing"),
    ):
        WorldModel.from_pretrained(_write(tmp_path / "missing.safetensors", missing, cfg))

    unknown = {**sd, "dit.extra.weight": torch.zeros(2)}
    with pytest.raises(
        ValueError, match=re.escape("to hold only the model's tensors, actually: unknown tensor `dit.extra.weight`")
    ):
        WorldModel.from_pretrained(_write(tmp_path / "unknown.safetensors", unknown, cfg))

    # The config decides the shapes: a checkpoint of another config does not load as this one.
    other = {**cfg, "dim": 32, "heads": 2}
    with pytest.raises(ValueError, match="to have shape"):
        WorldModel.from_pretrained(_write(tmp_path / "other.safetensors", sd, other))

    with pytest.raises(ValueError, match=re.escape("unknown key(s) ['bogus']")):
        WorldModel.from_pretrained(_write(tmp_path / "cfg.safetensors", sd, {**cfg, "bogus": 1}))

    save_file(sd, str(tmp_path / "noconfig.safetensors"))
    with pytest.raises(ValueError, match="to carry its config"):
        WorldModel.from_pretrained(tmp_path / "noconfig.safetensors")


def test_lower_precision_weights_are_cast(tmp_path: Path) -> None:
    model = tiny_model()
    sd = {k: v.to(torch.bfloat16).contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    loaded = WorldModel.from_pretrained(_write(tmp_path / "bf16.safetensors", sd, model.config.to_dict()))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".pkl"])
def test_pickle_suffixes_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="worldenv never loads pickle"):
        WorldModel.from_pretrained(path)


def test_pickle_and_zip_content_refused_whatever_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # torch.save is fine to call here; torch.load stays forbidden below
    sd = tiny_model().state_dict()
    zipped = tmp_path / "zip.safetensors"
    torch.save(sd, zipped)  # torch.save writes a zip archive of pickles
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ValueError, match=r"it is a zip archive \(torch.save format\).*never loads pickle"):
        WorldModel.from_pretrained(zipped)
    with pytest.raises(ValueError, match="it is a pickle stream.*never loads pickle"):
        WorldModel.from_pretrained(raw)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, this is not a checkpoint")
    with pytest.raises(ValueError, match="to be a safetensors file"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        resolve_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="to hold model.safetensors"):
        resolve_checkpoint(tmp_path)


def test_default_checkpoint_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ckpt, "DEFAULT_CHECKPOINT", tmp_path / "weights" / "default.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint("default")
    msg = str(err.value)
    assert "No default checkpoint is installed" in msg and "`worldenv train`" in msg and "from_pretrained(" in msg
    # Once a default is installed, "default" resolves to it.
    tiny_model().save_pretrained(tmp_path / "weights" / "default.safetensors")
    assert WorldModel.from_pretrained("default").config == tiny_model().config


def test_save_checkpoint_extra_metadata(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", {"a": torch.ones(2)}, {"x": 1}, extra_metadata={"card": "hi"})
    config, tensors = load_checkpoint(path)
    assert config == {"x": 1} and torch.equal(tensors["a"], torch.ones(2))
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["card"] == "hi"
