"""Evaluate a saved policy with dynamics ``model`` and ``oracle`` side by side on the same episodes.

    python agents/ppo_eval.py --model ppo_worldenv.zip --episodes 50

Prints a table of success, SPL and return per dynamics, and the last line as
JSON. The episodes (scene, start, goal) come from seeds ``seed .. seed + episodes - 1``
and are the same under every dynamics, so the columns differ only by what
the policy saw.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from args import parse_args  # noqa: E402


@dataclass
class Args:
    """Evaluate a policy under several dynamics."""

    model: str = field(default="ppo_worldenv.zip", metadata={"help": "SB3 model .zip, or 'random' / 'scripted'"})
    env_id: str = field(default="worldenv/PointNav-v0", metadata={"help": "registered worldenv id"})
    dynamics: str = field(default="model,oracle", metadata={"help": "comma-separated dynamics to compare"})
    checkpoint: str = field(default="default", metadata={"help": "world model checkpoint (dynamics=model)"})
    scene: str = field(default="rooms", metadata={"help": "scene spec"})
    scene_pool: int = field(default=8, metadata={"help": "procedural scenes: seeds drawn from [0, scene_pool)"})
    obs_size: int = field(default=128, metadata={"help": "frame side in pixels (the default world model makes 128)"})
    max_episode_steps: int = field(default=200, metadata={"help": "episode truncation"})
    min_geodesic: float = field(default=1.0, metadata={"help": "PointNav: shortest start-goal distance (m)"})
    max_geodesic: float = field(default=5.0, metadata={"help": "PointNav: longest start-goal distance (m)"})
    episodes: int = field(default=50, metadata={"help": "episodes per dynamics"})
    seed: int = field(default=10_000, metadata={"help": "first episode seed (keep apart from training seeds)"})


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(Args, argv)
    import gymnasium as gym

    import worldenv  # noqa: F401
    from worldenv.envs.policies import evaluate, format_results, make_policy

    policy = make_policy(args.model if args.model in ("random", "scripted") else f"ppo:{args.model}")
    task_options = {"min_geodesic": args.min_geodesic, "max_geodesic": args.max_geodesic} if "Nav" in args.env_id else {}

    def make_env(dynamics: str) -> gym.Env:
        kw = dict(
            scene=args.scene, scene_pool=args.scene_pool, dynamics=dynamics, obs_size=args.obs_size,
            max_episode_steps=args.max_episode_steps, task_options=task_options,
        )  # fmt: skip
        if dynamics == "model":
            kw["checkpoint"] = args.checkpoint
        return gym.make(args.env_id, **kw)

    seeds = tuple(range(args.seed, args.seed + args.episodes))
    results = evaluate(policy, make_env, tuple(args.dynamics.split(",")), seeds)
    print(f"{args.model} on {args.env_id}, {args.episodes} episodes (seeds {seeds[0]}..{seeds[-1]})")
    print(format_results(results))
    out = {r.dynamics: {"success": r.success, "spl": r.spl, "return": r.ret, "length": r.length} for r in results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
