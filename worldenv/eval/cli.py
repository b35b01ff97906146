"""``worldenv eval fidelity``: model vs warp-only vs oracle on held-out scenes (see :mod:`worldenv.eval.fidelity`).

Example::

    worldenv eval fidelity --json                      # the shipped model, 200-step protocol
    worldenv eval fidelity --model runs/student/model.safetensors --seeds 2 --steps 100
"""

from __future__ import annotations

import argparse
import json
import math

EVALS = ("fidelity",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=EVALS, help="what to evaluate")
    parser.add_argument("--model", default="default", help="'default' or a checkpoint (default: %(default)s)")
    parser.add_argument("--scene", default="rooms", help="procedural scene family (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=4, help="held-out scenes, seeds 1,000,000.. (default: %(default)s)")
    parser.add_argument("--kinds", default="explore,loop", help="trajectory kinds (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=200, help="steps per trajectory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="trajectory and noise seed (default: %(default)s)")
    # The choices are worldenv.memory.MEMORY_UPDATES, spelled out so that --help does not import torch.
    parser.add_argument(
        "--memory-update", default="holes", choices=("holes", "all"),
        help="generated frames enter the memory only where the warp had holes, or everywhere (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--voxel-size", type=float, default=0.02, help="memory voxel edge in metres (default: %(default)s)")
    parser.add_argument("--out", default="outputs/fidelity", help="writes fidelity.json and fidelity.png here")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")


def run(args: argparse.Namespace) -> int:
    from worldenv.eval.fidelity import FidelityConfig, evaluate_fidelity
    from worldenv.train.data import HELDOUT_SEED_START

    cfg = FidelityConfig(
        model=args.model,
        scene=args.scene,
        seeds=tuple(HELDOUT_SEED_START + i for i in range(args.seeds)),
        kinds=tuple(k for k in args.kinds.split(",") if k),
        steps=args.steps,
        seed=args.seed,
        memory_update=args.memory_update,
        voxel_size=args.voxel_size,
        out=args.out,
    )
    result = evaluate_fidelity(cfg)
    s = result["summary"]
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}))
    else:
        for k, v in s.items():
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
        print(f"wrote {args.out}/fidelity.json and fidelity.png")
    return 0
