"""Step kernels with three interchangeable backends: native (C++), cuda (CuPy), reference (torch).

* :func:`splat`: points with a world radius -> image, depth, mask through a
  hard z-buffer (nearest wins, ties to the lower index).
* :func:`fuse`: RGB-D frames -> a bounded voxel-hash :class:`PointMap` with
  CLOCK eviction.

Each call picks its backend lazily (``backend=`` keyword, else the
``WORLDENV_BACKEND`` environment variable, else cuda for CUDA tensors and
native for CPU tensors) and falls back, warning once, when one is missing.
Importing this package compiles and loads nothing.
"""

from __future__ import annotations

from worldenv.kernels._backend import available_backends
from worldenv.kernels.fuse import DEFAULT_RADIUS_SCALE, PointMap, fuse, fuse_reference, touch
from worldenv.kernels.splat import DEFAULT_MAX_RADIUS_PX, DEFAULT_NEAR, splat, splat_reference

__all__ = [
    "splat",
    "splat_reference",
    "fuse",
    "touch",
    "fuse_reference",
    "PointMap",
    "available_backends",
    "DEFAULT_NEAR",
    "DEFAULT_MAX_RADIUS_PX",
    "DEFAULT_RADIUS_SCALE",
]
