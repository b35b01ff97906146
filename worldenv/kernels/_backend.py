"""Backend selection for the kernels.

Every kernel has three implementations behind one signature: ``reference``
(pure torch; the test oracle and the fallback), ``native`` (C++/OpenMP in
``worldenv._native``, CPU tensors) and ``cuda`` (CUDA source compiled by
CuPy, CUDA tensors). The choice is made per call, lazily:

1. the kernel's ``backend=`` keyword, else
2. the ``WORLDENV_BACKEND`` environment variable (``reference``, ``native`` or
   ``cuda``), else
3. ``cuda`` for CUDA tensors and ``native`` for CPU tensors.

A backend that cannot run (the extension or CuPy is missing, or the tensors
live on the wrong device) falls back, with one warning per reason and process,
to the next one that can: ``native`` for CPU tensors when it is built, else
``reference``. Nothing is imported or compiled before the first call.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Literal

import torch

__all__ = ["BACKENDS", "ENV_VAR", "Backend", "available_backends", "select_backend"]

Backend = Literal["reference", "native", "cuda"]
BACKENDS: tuple[str, ...] = ("reference", "native", "cuda")
ENV_VAR = "WORLDENV_BACKEND"

# Import results, cached after the first attempt (None = unavailable).
_native: ModuleType | None = None
_native_tried = False
_cupy: ModuleType | None = None
_cupy_tried = False
# Reasons already warned about; a fallback warns once per reason and process.
_warned: set[str] = set()


def load_native() -> ModuleType | None:
    """Return the ``worldenv._native`` extension, or ``None`` when it is not built."""
    global _native, _native_tried
    if not _native_tried:
        _native_tried = True
        try:
            _native = importlib.import_module("worldenv._native")
        except ImportError:
            _native = None
    return _native


def load_cupy() -> ModuleType | None:
    """Return the ``cupy`` module when it imports and a CUDA device is visible, else ``None``."""
    global _cupy, _cupy_tried
    if not _cupy_tried:
        _cupy_tried = True
        _cupy = None
        if torch.cuda.is_available():
            try:
                _cupy = importlib.import_module("cupy")
            except Exception:  # noqa: BLE001 - a broken CuPy install raises more than ImportError
                _cupy = None
    return _cupy


def available_backends() -> tuple[str, ...]:
    """Backends that can run in this process, in order of preference for their device.

    Returns:
        A subset of ``("reference", "native", "cuda")``; ``reference`` is always there.
    """
    out = ["reference"]
    if load_native() is not None:
        out.append("native")
    if load_cupy() is not None:
        out.append("cuda")
    return tuple(out)


def _warn_once(reason: str, message: str) -> None:
    if reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _clear_warnings() -> None:
    """Forget which fallbacks have warned (for tests)."""
    _warned.clear()


def _requested(backend: str | None) -> str | None:
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"Expect `backend` to be one of {BACKENDS} or None, actually: {backend!r}")
        return backend
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if not env:
        return None
    if env not in BACKENDS:
        raise ValueError(f"Expect the environment variable {ENV_VAR} to be one of {BACKENDS}, actually: {env!r}")
    return env


def _cpu_fallback(kernel: str, why: str, reason: str) -> str:
    if load_native() is not None:
        _warn_once(reason, f"worldenv.kernels.{kernel}: {why}; using the native backend.")
        return "native"
    _warn_once(reason, f"worldenv.kernels.{kernel}: {why}; using the reference backend.")
    return "reference"


def select_backend(kernel: str, device: torch.device, backend: str | None = None) -> str:
    """Pick the backend for one call of ``kernel`` on tensors living on ``device``.

    Args:
        kernel: The kernel's name, for warnings.
        device: Where the call's tensors live.
        backend: An explicit choice; ``None`` reads ``WORLDENV_BACKEND`` and
            then falls back to the device's default.

    Returns:
        ``"reference"``, ``"native"`` or ``"cuda"``: a backend that can run the call.

    Raises:
        ValueError: ``backend`` or ``WORLDENV_BACKEND`` names no backend.
    """
    want = _requested(backend)
    on_cuda = device.type == "cuda"
    if want is None:
        want = "cuda" if on_cuda else "native"
    if want == "reference":
        return "reference"
    if want == "native":
        if on_cuda or device.type != "cpu":
            _warn_once(
                "native-device",
                f"worldenv.kernels.{kernel}: the native backend runs on CPU tensors only, got {device.type} "
                "tensors; using the reference backend.",
            )
            return "reference"
        if load_native() is None:
            _warn_once(
                "native-missing",
                f"worldenv.kernels.{kernel}: the native extension worldenv._native is not built "
                "(reinstall with `pip install -e .`); using the slower reference backend.",
            )
            return "reference"
        return "native"
    # want == "cuda"
    if not on_cuda:
        if device.type == "cpu":
            return _cpu_fallback(kernel, "the cuda backend needs CUDA tensors, got CPU tensors", "cuda-device")
        _warn_once(
            "cuda-device",
            f"worldenv.kernels.{kernel}: the cuda backend needs CUDA tensors, got {device.type} tensors; "
            "using the reference backend.",
        )
        return "reference"
    if load_cupy() is None:
        _warn_once(
            "cuda-missing",
            f"worldenv.kernels.{kernel}: CuPy is not installed (`pip install worldenv[cuda]`); "
            "using the reference backend on the GPU.",
        )
        return "reference"
    return "cuda"
