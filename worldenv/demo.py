"""``worldenv demo``: the scripted agent does PointNav in the default world with the default model.

    worldenv demo                      # writes demo.mp4, prints success, SPL and steps/s
    worldenv demo --side-by-side       # model | oracle | warp

The agent steers with the scene's map; the frames it sees (and the video)
come from the world model, so the video shows what the model makes of the
walk and the numbers show the speed of the whole step.
"""

from __future__ import annotations

import argparse
import sys

from worldenv.rollout import RolloutConfig, rollout

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo.mp4", help="video file (default demo.mp4)")
    parser.add_argument("--steps", type=int, default=300, help="environment steps (default 300)")
    parser.add_argument("--agent", default="scripted", help="scripted, random or ppo:<model.zip> (default scripted)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--checkpoint", default="default", help="world model checkpoint (default: the shipped one)")
    parser.add_argument("--dynamics", default="model", choices=("model", "warp", "oracle"), help="dynamics (default model)")
    parser.add_argument("--side-by-side", action="store_true", help="write model | oracle | warp")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def run(args: argparse.Namespace) -> int:
    cfg = RolloutConfig(
        env="worldenv/PointNav-v0", agent=args.agent, steps=args.steps, out=args.out, seed=args.seed,
        dynamics=args.dynamics, side_by_side=args.side_by_side, checkpoint=args.checkpoint, device=args.device,
    )  # fmt: skip
    try:
        summary = rollout(cfg)
    except FileNotFoundError as e:
        print(f"worldenv demo: {e}", file=sys.stderr)
        return 1
    print(f"wrote {cfg.out} ({summary.frames} frames)")
    print(f"PointNav in the default world ({cfg.dynamics} dynamics, {cfg.agent} agent): " + summary.line())
    return 0
