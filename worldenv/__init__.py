"""worldenv: a Gymnasium environment whose dynamics is a learned 3D-aware world model."""

from __future__ import annotations

__version__ = "0.1.0"
