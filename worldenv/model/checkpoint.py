"""Safetensors checkpoints with the model config in their metadata; pickle is never loaded.

A checkpoint is one ``.safetensors`` file whose metadata holds the JSON of the
:class:`~worldenv.model.world_model.ModelConfig` under ``"config"``, or a
directory with ``model.safetensors`` and, optionally, ``config.json`` beside it
(used when the file's metadata has no config). Saving is atomic: a temporary
file in the same directory, then ``os.replace``, so a crash never leaves a
half-written checkpoint under the final name.

Loading refuses pickle-based files (``torch.save`` output, ``.pt``/``.pth``/
``.bin``/``.ckpt``/``.pkl``, zip archives, raw pickles) before reading any
tensor: unpickling can execute arbitrary code, and ``torch.load`` is never
called anywhere in worldenv.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from worldenv._io import atomic_write, atomic_write_text

__all__ = [
    "DEFAULT_CHECKPOINT",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "FORMAT",
    "resolve_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "check_state_dict",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "worldenv.model/1"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "default.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_MAX_HEADER = 100 * 1024 * 1024


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """The safetensors file behind a name or path.

    Args:
        name_or_path: ``"default"`` (the checkpoint shipped in the package), a
            ``.safetensors`` file, or a directory holding ``model.safetensors``.

    Raises:
        FileNotFoundError: If nothing is there (for ``"default"``: how to get one).
    """
    if isinstance(name_or_path, str) and name_or_path == "default":
        if not DEFAULT_CHECKPOINT.is_file():
            raise FileNotFoundError(
                f"No default checkpoint is installed (expected {DEFAULT_CHECKPOINT}). "
                "Train one with `worldenv train` (its output directory holds model.safetensors), "
                "then pass that path: WorldModel.from_pretrained('runs/<run>/model.safetensors')."
            )
        return DEFAULT_CHECKPOINT
    path = Path(name_or_path)
    if path.is_dir():
        inner = path / WEIGHTS_NAME
        if not inner.is_file():
            raise FileNotFoundError(f"Expect a checkpoint directory to hold {WEIGHTS_NAME}, actually: {path} has none")
        return inner
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}: expect 'default', a .safetensors file or a directory with {WEIGHTS_NAME}"
        )
    return path


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save weights and config atomically.

    Args:
        path: A ``.safetensors`` file, or a directory (then ``model.safetensors``
            and ``config.json`` are written inside it).
        state_dict: Tensors by name.
        config: JSON-serialisable model config, stored in the metadata.
        extra_metadata: More string metadata (e.g. a model card's fields).

    Returns:
        The path of the written safetensors file.
    """
    path = Path(path)
    as_dir = path.suffix != ".safetensors"
    weights = path / WEIGHTS_NAME if as_dir else path
    config_json = json.dumps(dict(config), sort_keys=True)
    metadata = {"format": FORMAT, "config": config_json, **dict(extra_metadata or {})}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    if as_dir:
        atomic_write_text(path / CONFIG_NAME, json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return weights


def _refuse_pickle(path: Path) -> None:
    """Raise ``ValueError`` if ``path`` is, or looks like, a pickle / torch.save file."""
    why = (
        "worldenv never loads pickle files, because unpickling can run arbitrary code. "
        "Convert the weights in an environment you trust with "
        "safetensors.torch.save_file(state_dict, 'model.safetensors') and pass that file."
    )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"Refusing to load {path}: a '{path.suffix}' file is a pickle / torch.save checkpoint. {why}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        raise ValueError(f"Refusing to load {path}: it is a zip archive (torch.save format). {why}")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise ValueError(f"Refusing to load {path}: it is a pickle stream. {why}")
    size = os.path.getsize(path)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if not (2 <= n <= min(_MAX_HEADER, size - 8)) or head[8:9] != b"{":
        raise ValueError(f"Expect {path} to be a safetensors file, actually: its header is not a safetensors header")


def load_checkpoint(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load a checkpoint's config and tensors, never unpickling anything.

    Args:
        path: A checkpoint name or path (see :func:`resolve_checkpoint`).
        device: Where to put the tensors.

    Returns:
        ``(config, tensors)``.

    Raises:
        FileNotFoundError: If there is no checkpoint there.
        ValueError: If it is a pickle file, not a safetensors file, or has no config.
    """
    file = resolve_checkpoint(path)
    _refuse_pickle(file)
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"Expect {file} to be a readable safetensors file, actually: {e}") from e
    if "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise ValueError(f"Expect the 'config' metadata of {file} to be JSON, actually: {e}") from e
    elif (file.parent / CONFIG_NAME).is_file():
        config = json.loads((file.parent / CONFIG_NAME).read_text(encoding="utf-8"))
    else:
        raise ValueError(
            f"Expect {file} to carry its config (safetensors metadata 'config' or {CONFIG_NAME} beside it), "
            "actually: none"
        )
    if not isinstance(config, dict):
        raise ValueError(f"Expect the config of {file} to be a JSON object, actually: {type(config).__name__}")
    return config, tensors


def check_state_dict(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Check names, shapes and kinds of loaded tensors against a model's state dict.

    Names are checked in sorted order and the first mismatch is reported.

    Args:
        expected: The model's ``state_dict()``.
        got: Tensors from the checkpoint.
        source: What ``got`` came from, for the message.

    Raises:
        ValueError: Naming the first missing, unknown or mis-shaped tensor.
    """
    for name in sorted(set(expected) | set(got)):
        if name not in got:
            raise ValueError(
                f"Expect {source} to hold tensor `{name}` with shape {tuple(expected[name].shape)}, "
                "actually: it is missing"
            )
        if name not in expected:
            raise ValueError(f"Expect {source} to hold only the model's tensors, actually: unknown tensor `{name}`")
        want, have = expected[name], got[name]
        if tuple(want.shape) != tuple(have.shape):
            raise ValueError(
                f"Expect tensor `{name}` in {source} to have shape {tuple(want.shape)}, actually: {tuple(have.shape)}"
            )
        if want.is_floating_point() != have.is_floating_point():
            raise ValueError(
                f"Expect tensor `{name}` in {source} to have a dtype like {want.dtype}, actually: {have.dtype}"
            )
