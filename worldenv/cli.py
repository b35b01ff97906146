"""The ``worldenv`` command line.

Each subcommand lives in the module that owns its idea and is imported only
when it runs, so ``worldenv --help`` stays fast and optional dependencies are
needed only by the subcommands that use them. A subcommand module provides
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "datagen": ("worldenv.scenes.datagen", "render sharded RGB-D training clips from ground-truth scenes (resumable)"),
    "demo": ("worldenv.demo", "PointNav in the default world with the default model: writes a video, prints success, SPL, steps/s"),
    "rollout": ("worldenv.rollout", "run an agent in an environment and write a video (--side-by-side: model | oracle | warp)"),
    "bench": ("worldenv.bench", "environment steps/s for B = 1, 8, 16 and each dynamics (--json)"),
    "train": ("worldenv.train.cli", "train the world model: data | codec | teacher | student (torchrun for DDP, resumable)"),
    "eval": ("worldenv.eval.cli", "evaluate a world model against the oracle: fidelity (PSNR/SSIM/AbsRel, drift, loops)"),
}


def build_parser() -> argparse.ArgumentParser:
    from worldenv import __version__

    parser = argparse.ArgumentParser(
        prog="worldenv",
        description="A Gymnasium environment whose dynamics is a learned 3D-aware world model.",
    )
    parser.add_argument("--version", action="version", version=f"worldenv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Argument definitions are cheap to import; the heavy work is in run().
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
