"""Resumable training state: modules, optimizers, EMA, RNG and step in one safetensors file.

A resume checkpoint is ``<run>/resume.safetensors``: every tensor (module
weights, optimizer moments, EMA shadows, torch RNG states) under a prefixed
name, and everything else (step, optimizer hyper-parameters, NumPy generator
states, the run config) as JSON in the file's metadata. It is written to a
temporary file and renamed, so a run killed at any moment leaves either the
previous checkpoint or the new one, never a torn file. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from worldenv._io import atomic_write

__all__ = ["EMA", "save_state", "load_state", "RESUME_NAME"]

RESUME_NAME = "resume.safetensors"


class EMA:
    """Exponential moving average of a module's floating-point weights.

    Args:
        module: The module whose weights are averaged.
        decay: Weight of the old average per update.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"Expect `decay` in [0, 1), actually: {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> dict[str, Any]:
    sd = opt.state_dict()
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}.state.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(prefix: str, meta: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for name, v in tensors.items():
        if name.startswith(head):
            idx, k = name[len(head) :].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(
    path: str | os.PathLike[str],
    *,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    emas: dict[str, EMA],
    rngs: dict[str, np.random.Generator],
    torch_generators: dict[str, torch.Generator],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a resume checkpoint atomically.

    Args:
        path: Destination ``.safetensors``.
        step: Optimizer steps done.
        modules: Trained (and frozen-but-needed) modules by name.
        optimizers: Optimizers by name.
        emas: EMA shadows by name.
        rngs: NumPy generators by name (their bit-generator states go to JSON).
        torch_generators: torch generators by name (``"global"`` is torch's default generator's state).
        extra: More JSON-ready state (e.g. the run config).

    Returns:
        The written path.
    """
    tensors: dict[str, Tensor] = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"module.{name}.{k}"] = v.detach().cpu().contiguous()
    for name, e in emas.items():
        for k, v in e.shadow.items():
            tensors[f"ema.{name}.{k}"] = v.detach().cpu().contiguous()
    opt_meta = {name: _flatten_optimizer(f"opt.{name}", o, tensors) for name, o in optimizers.items()}
    for name, g in torch_generators.items():
        tensors[f"rng.{name}"] = g.get_state()
    meta = {
        "step": int(step),
        "optimizers": opt_meta,
        "rngs": {name: r.bit_generator.state for name, r in rngs.items()},
        "extra": extra or {},
    }
    metadata = {"format": "worldenv-train-state", "state": json.dumps(meta)}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def load_state(
    path: str | os.PathLike[str],
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    emas: dict[str, EMA],
    rngs: dict[str, np.random.Generator],
    torch_generators: dict[str, torch.Generator],
) -> tuple[int, dict[str, Any]]:
    """Restore a :func:`save_state` checkpoint in place.

    Returns:
        The step and the ``extra`` JSON.
    """
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        if md.get("format") != "worldenv-train-state":
            raise ValueError(f"Expect a worldenv training state in {path}, actually: format {md.get('format')!r}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(md["state"])
    for name, m in modules.items():
        head = f"module.{name}."
        m.load_state_dict({k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)})
    for name, e in emas.items():
        head = f"ema.{name}."
        for k in e.shadow:
            e.shadow[k].copy_(tensors[head + k])
    for name, o in optimizers.items():
        o.load_state_dict(_unflatten_optimizer(f"opt.{name}", meta["optimizers"][name], tensors))
    for name, r in rngs.items():
        r.bit_generator.state = meta["rngs"][name]
    for name, g in torch_generators.items():
        g.set_state(tensors[f"rng.{name}"])
    return int(meta["step"]), meta["extra"]
