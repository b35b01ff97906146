"""Map a ``@dataclass Args`` onto command-line flags (``field_name`` -> ``--field-name``).

Each field's docstring-style comment is not visible at run time, so a field's
help text comes from ``metadata={"help": ...}`` when given.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"Expect a boolean (true/false), actually: {text!r}")


def parse_args(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls`` (defaults from the dataclass)."""
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind: Any = {bool: _bool, int: int, float: float}.get(type(default), str)
        if default is None:
            kind = str
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=kind, default=default, help=f.metadata.get("help", f"(default: {default})")
        )
    ns = parser.parse_args(argv)
    return cls(**vars(ns))
