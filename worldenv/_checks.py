"""Argument checks shared by the public boundaries.

Every check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong
shape, device or value) naming the argument, what was expected and what came,
in the form ``Expect `K` to have shape (B, 3, 3), actually: (2, 3)``. They are
called once at a public boundary; code inside trusts what passed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "check_tensor",
    "check_finite",
    "check_same_device",
    "check_size",
    "check_intrinsics",
    "check_positive",
    "check_pinhole",
]

# Dimensions in a shape spec are an int (exact), None (any) or a name (must
# agree with every other use of that name in one call).
Dim = int | str | None


def _fmt_shape(shape: Sequence[Dim]) -> str:
    parts = ["*" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[Dim] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: torch.device | str | None = None,
    dims: dict[str, int] | None = None,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given shape, dtype and device.

    Args:
        name: The argument's name, used in the error message.
        value: What the caller passed.
        shape: Expected shape; an entry is an int (exact), ``None`` (any) or a
            symbolic name that must match the same name in ``dims``.
        dtype: One dtype or a sequence of accepted dtypes.
        device: Expected device (compared by type and index when given).
        dims: Symbolic sizes already bound in this call; new names are bound
            in place so that later checks agree.

    Returns:
        ``value``, for chaining.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"Expect `{name}` to be a torch.Tensor, actually: {type(value).__name__}")
    if dtype is not None:
        accepted = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in accepted:
            want = " or ".join(str(d) for d in accepted)
            raise TypeError(f"Expect `{name}` to have dtype {want}, actually: {value.dtype}")
    if shape is not None:
        bound = dims if dims is not None else {}
        ok = value.dim() == len(shape)
        if ok:
            for want, got in zip(shape, value.shape):
                if want is None:
                    continue
                if isinstance(want, str):
                    if want in bound and bound[want] != got:
                        ok = False
                        break
                    bound.setdefault(want, int(got))
                elif want != got:
                    ok = False
                    break
        if not ok:
            spec = [bound.get(d, d) if isinstance(d, str) else d for d in shape]
            raise ValueError(
                f"Expect `{name}` to have shape {_fmt_shape(spec)}, actually: {tuple(value.shape)}"
            )
    if device is not None:
        want_dev = torch.device(device)
        got_dev = value.device
        same = want_dev.type == got_dev.type and (
            want_dev.index is None or got_dev.index is None or want_dev.index == got_dev.index
        )
        if not same:
            raise ValueError(f"Expect `{name}` on device {want_dev}, actually: {got_dev}")
    return value


def check_finite(name: str, value: torch.Tensor | np.ndarray) -> None:
    """Raise ``ValueError`` if ``value`` holds NaN or infinity."""
    finite = torch.isfinite(value).all() if isinstance(value, torch.Tensor) else np.isfinite(value).all()
    if not bool(finite):
        raise ValueError(f"Expect `{name}` to be finite, actually: it contains NaN or inf")


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """Check that all tensors live on one device and return it."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"Expect `{name}` on the same device as `{first_name}` ({first.device}), actually: {t.device}"
            )
    return first.device


MAX_IMAGE_SIDE = 8192


def check_size(name: str, size: object) -> tuple[int, int]:
    """Check an image size ``(H, W)`` (or one int for a square) and return it as a tuple."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"Expect `{name}` to be an int or a pair of ints (H, W), actually: {size!r}")
    h, w = int(size[0]), int(size[1])
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise ValueError(
            f"Expect `{name}` to have sides in [1, {MAX_IMAGE_SIDE}], actually: ({h}, {w})"
        )
    return h, w


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Check a finite positive (or non-negative) scalar."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"Expect `{name}` to be a number, actually: {type(value).__name__}")
    v = float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        rel = "non-negative" if allow_zero else "positive"
        raise ValueError(f"Expect `{name}` to be finite and {rel}, actually: {value}")
    return v


def check_intrinsics(name: str, K: torch.Tensor) -> None:
    """Check a batch of pinhole intrinsics ``(..., 3, 3)``: finite, fx and fy non-zero."""
    check_finite(name, K)
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    if bool(((fx == 0) | (fy == 0)).any()):
        raise ValueError(f"Expect `{name}` to have non-zero focal lengths fx and fy, actually: a zero focal length")


def check_pinhole(name: str, K: torch.Tensor | np.ndarray) -> np.ndarray:
    """Check pinhole intrinsics ``(..., 3, 3)`` as the kernels use them and return them.

    On top of :func:`check_intrinsics`: positive focal lengths, zero skew and a
    last row ``[0, 0, 1]`` (the kernels read only fx, fy, cx, cy, so anything
    else would be silently ignored). The checks run in NumPy on a float64 CPU
    copy (a few values: cheaper than torch ops), which is returned.
    """
    k = K.detach().to("cpu", torch.float64).numpy() if isinstance(K, torch.Tensor) else np.asarray(K, np.float64)
    if not np.isfinite(k).all():
        raise ValueError(f"Expect `{name}` to be finite, actually: it contains NaN or inf")
    fx, fy = k[..., 0, 0], k[..., 1, 1]
    if ((fx == 0) | (fy == 0)).any():
        raise ValueError(f"Expect `{name}` to have non-zero focal lengths fx and fy, actually: a zero focal length")
    if ((fx < 0) | (fy < 0)).any():
        raise ValueError(f"Expect `{name}` to have positive focal lengths fx and fy, actually: a negative one")
    rest = np.stack([k[..., 0, 1], k[..., 1, 0], k[..., 2, 0], k[..., 2, 1], k[..., 2, 2] - 1], -1)
    if (rest != 0).any():
        raise ValueError(
            f"Expect `{name}` to be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), actually: other non-zero entries"
        )
    return k
