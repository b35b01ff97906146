"""CuPy loader for the CUDA kernels in ``csrc/cuda/*.cu``.

The sources are compiled by NVRTC through ``cupy.RawModule`` on first use and
the module is cached per source file (CuPy also caches the binary on disk).
Kernels are launched on torch's current stream, with tensors passed by their
device pointers, so they order correctly with the surrounding torch work and
no data is copied.

Sources are looked up in ``<repo>/csrc/cuda`` (a source checkout) and then in
``worldenv/_cuda`` (where wheels install them). They are compiled with
``--fmad=false`` so that, like the CPU build's ``-ffp-contract=off``, no
multiply-add is fused and float results follow the reference op by op.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldenv.kernels._backend import load_cupy

__all__ = ["source_dirs", "source_path", "get_kernel", "launch", "ptr", "BLOCK"]

BLOCK = 256
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17", "--fmad=false")

_modules: dict[str, Any] = {}


def source_dirs() -> list[Path]:
    """Directories searched for ``*.cu`` files, in order."""
    package = Path(__file__).resolve().parents[1]  # .../worldenv
    return [package.parent / "csrc" / "cuda", package / "_cuda"]


def source_path(module: str) -> Path:
    """Path of ``<module>.cu``.

    Raises:
        FileNotFoundError: The source is in none of :func:`source_dirs`.
    """
    for d in source_dirs():
        p = d / f"{module}.cu"
        if p.is_file():
            return p
    searched = ", ".join(str(d) for d in source_dirs())
    raise FileNotFoundError(f"CUDA source {module}.cu not found (searched {searched}); reinstall worldenv")


def _require_cupy() -> Any:
    cp = load_cupy()
    if cp is None:
        raise RuntimeError("The cuda backend needs CuPy and a CUDA device: `pip install worldenv[cuda]`")
    return cp


def get_kernel(module: str, name: str) -> Any:
    """Return the ``extern "C"`` kernel ``name`` of ``<module>.cu``, compiling the module on first use."""
    cp = _require_cupy()
    mod = _modules.get(module)
    if mod is None:
        code = source_path(module).read_text()
        mod = cp.RawModule(code=code, options=NVRTC_OPTIONS)
        _modules[module] = mod
    return mod.get_function(name)


def ptr(t: torch.Tensor) -> np.uint64:
    """A tensor's device pointer as a kernel argument (the tensor must stay alive for the launch)."""
    return np.uint64(t.data_ptr())


def launch(module: str, name: str, n: int, args: Sequence[Any], device: torch.device, block: int = BLOCK) -> None:
    """Launch ``name`` with at least ``n`` threads on torch's current stream of ``device``.

    Kernels use grid-stride loops, so the grid is capped; ``n == 0`` launches nothing.
    """
    if n <= 0:
        return
    cp = _require_cupy()
    kernel = get_kernel(module, name)
    grid = min((n + block - 1) // block, 65535 * 8)
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cp.cuda.Device(index):
        stream = cp.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream)
        with stream:
            kernel((grid,), (block,), tuple(args))
