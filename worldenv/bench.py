"""``worldenv bench``: environment steps per second for B = 1, 8, 16 and each dynamics.

    worldenv bench                       # table
    worldenv bench --json                # ... and one JSON object as the last line
    python benchmarks/env.py --json      # the same

B = 1 is the single :class:`~worldenv.envs.WorldEnv`; B > 1 is
:class:`~worldenv.envs.WorldVectorEnv`. A step is one batched step of all B
worlds: ``steps/s`` counts batched steps, ``frames/s`` = steps/s × B counts
frames produced. Actions are random forward moves and turns in the Free task
(no episode ends inside the timed window). Each row also gives the mean
milliseconds per stage of the step. When the default checkpoint is missing,
the model rows use a randomly initialised model of the default config (the
speed does not depend on the weights) and say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["bench", "add_arguments", "run", "main"]

STAGES = ("controls", "collide", "render", "model", "oracle", "fuse", "task")


def _model(checkpoint: str, size: int) -> tuple[Any, str]:
    from worldenv.model import ModelConfig, WorldModel

    try:
        return WorldModel.from_pretrained(checkpoint, device="cpu"), checkpoint
    except FileNotFoundError:
        print(f"note: no checkpoint {checkpoint!r}; timing a random-init model of the default config", file=sys.stderr)
        return WorldModel(ModelConfig(height=size, width=size)).eval(), "random-init (default ModelConfig)"


def bench_one(dynamics: str, B: int, size: int, steps: int, warmup: int, model: Any, scene: str, device: str) -> dict[str, float]:
    """Time ``steps`` batched steps of B worlds after ``warmup`` steps."""
    import numpy as np

    from worldenv.envs import WorldEnv, WorldVectorEnv

    kw: dict[str, Any] = dict(
        task="free", scene=scene, scene_pool=1, dynamics=dynamics, obs_size=size, device=device,
        max_episode_steps=steps + warmup + 1,
    )  # fmt: skip
    if dynamics == "model":
        kw["checkpoint"] = model
    env: Any = WorldEnv(**kw) if B == 1 else WorldVectorEnv(num_envs=B, **kw)
    world = env.world
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    stage = dict.fromkeys(STAGES, 0.0)
    for i in range(warmup + steps):
        a = rng.integers(1, 4, size=B)  # move_forward, turn_left, turn_right
        if i == warmup:
            t0 = time.perf_counter()
        env.step(int(a[0]) if B == 1 else a)
        if i >= warmup:
            for k in STAGES:
                stage[k] += world.timings.get(k, 0.0)
    dt = time.perf_counter() - t0
    env.close()
    sps = steps / dt
    return {"steps_per_s": sps, "frames_per_s": sps * B, "ms_per_step": 1e3 / sps, **{f"ms_{k}": v / steps for k, v in stage.items()}}


def bench(
    sizes: tuple[int, ...] = (1, 8, 16),
    dynamics: tuple[str, ...] = ("model", "warp", "oracle"),
    obs_size: int = 128,
    steps: int = 30,
    warmup: int = 5,
    checkpoint: str = "default",
    scene: str = "rooms",
    device: str = "cpu",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the benchmark grid; returns the rows and the flat JSON summary."""
    import torch

    model, used = _model(checkpoint, obs_size) if "model" in dynamics else (None, "")
    rows, flat = [], {"obs_size": obs_size, "threads": torch.get_num_threads(), "checkpoint": used}
    for dyn in dynamics:
        for B in sizes:
            r = bench_one(dyn, B, obs_size, steps if dyn == "model" else 4 * steps, warmup, model, scene, device)
            rows.append({"dynamics": dyn, "B": B, **r})
            flat[f"{dyn}_steps_per_s_b{B}"] = round(r["steps_per_s"], 2)
            flat[f"{dyn}_frames_per_s_b{B}"] = round(r["frames_per_s"], 2)
    return rows, flat


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = "| dynamics | B | steps/s | frames/s | ms/step | " + " | ".join(f"{k} ms" for k in STAGES) + " |"
    sep = "|---" * (5 + len(STAGES)) + "|"
    lines = [head, sep]
    for r in rows:
        stages = " | ".join(f"{r[f'ms_{k}']:.1f}" for k in STAGES)
        lines.append(f"| {r['dynamics']} | {r['B']} | {r['steps_per_s']:.1f} | {r['frames_per_s']:.1f} | {r['ms_per_step']:.1f} | {stages} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1,8,16", help="comma-separated batch sizes B (default 1,8,16)")
    parser.add_argument("--dynamics", default="model,warp,oracle", help="comma-separated dynamics")
    parser.add_argument("--obs-size", type=int, default=128, help="frame side in pixels (default 128)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row (x4 for warp and oracle)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per row")
    parser.add_argument("--checkpoint", default="default", help="world model checkpoint")
    parser.add_argument("--scene", default="rooms", help="scene spec")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> int:
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    rows, flat = bench(
        tuple(int(b) for b in args.sizes.split(",")), tuple(args.dynamics.split(",")), args.obs_size,
        args.steps, args.warmup, args.checkpoint, args.scene, args.device,
    )  # fmt: skip
    print(f"env steps at {args.obs_size}x{args.obs_size}, {flat['threads']} torch threads, model: {flat['checkpoint'] or '-'}")
    print(format_rows(rows))
    if "model_steps_per_s_b1" in flat and "oracle_steps_per_s_b1" in flat:
        print(f"model / oracle steps/s at B=1: {flat['model_steps_per_s_b1'] / flat['oracle_steps_per_s_b1']:.3f}")
    if args.json:
        print(json.dumps(flat))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/env.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
