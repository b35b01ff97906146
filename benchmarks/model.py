"""Time one world-model step and its parts: warp encode, DiT per denoising step, cache update, decode.

Runs the default :class:`~worldenv.model.ModelConfig` (or one changed with
``--set key=value``) with random weights (timing does not depend on weights)
at B = 1 and B = 16, on CPU and, when available, CUDA. Each figure is the
median over ``--repeats`` runs after ``--warmup`` runs; ``p10`` is shown beside
it because a shared machine adds noise that only ever makes things slower.

    python benchmarks/model.py                 # table
    python benchmarks/model.py --json          # table, then one JSON object as the last line
    python benchmarks/model.py --set layers=6 --set dim=320 --batch 1

The JSON has ``step_ms_b1_cpu`` (a whole model step, B = 1, CPU) and
``<part>_ms_b<B>_<device>`` (median) and ``<part>_p10_ms_b<B>_<device>`` for
every part measured.

On a small shared CPU, OpenMP threads that sleep between the many small
parallel regions of a B = 1 step cost a lot: ``OMP_WAIT_POLICY=ACTIVE`` in the
environment (read once, when torch loads OpenMP) typically makes a step faster
and steadier there. This script reports the policy in effect but does not set it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import fields

import torch
import torch.nn.functional as F

from worldenv.model import ModelConfig, WorldModel
from worldenv.model.camera import plucker_rays, prope_matrices, relative_pose
from worldenv.model.codec import frames_to_model, model_to_frames
from worldenv.model.sampler import token_coverage

BUDGET_MS = 41.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[float, float]:
    """Median and 10th percentile of ``fn``'s wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[len(times) // 10]


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["layers=6", "timesteps=1.0,0.2"]`` -> typed ModelConfig kwargs."""
    types = {f.name: f.type for f in fields(ModelConfig)}
    out: dict[str, object] = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in types:
            sys.exit(f"unknown ModelConfig field {key!r}; fields: {sorted(types)}")
        default = getattr(ModelConfig(), key)
        if isinstance(default, bool):
            out[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            out[key] = tuple(float(v) for v in raw.split(","))
        elif isinstance(default, int):
            out[key] = int(raw)
        elif isinstance(default, float):
            out[key] = float(raw)
        else:
            out[key] = raw
    return out


def make_inputs(cfg: ModelConfig, B: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random reference view and a warp with holes, at a slightly moved camera."""
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.height, cfg.width
    f = 0.9 * W
    K = torch.tensor([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
    c2w = torch.eye(4).repeat(B, 1, 1)
    c2w_next = c2w.clone()
    c2w_next[:, 2, 3] = 0.1
    inputs = {
        "rgb": torch.rand(B, H, W, 3, generator=g),
        "depth": 0.5 + 5.0 * torch.rand(B, H, W, generator=g),
        "c2w": c2w,
        "K": K,
        "warp_rgb": torch.rand(B, H, W, 3, generator=g),
        "warp_depth": 0.5 + 5.0 * torch.rand(B, H, W, generator=g),
        "warp_mask": torch.rand(B, H, W, generator=g) > 0.2,
        "c2w_next": c2w_next,
    }
    return {k: v.to(device) for k, v in inputs.items()}


@torch.no_grad()
def bench_one(
    cfg: ModelConfig, B: int, device: torch.device, warmup: int, repeats: int, compile: bool
) -> dict[str, tuple[float, float]]:
    """Time the parts of a step for one batch size on one device."""
    model = WorldModel(cfg, compile=compile).to(device).eval()
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():  # random non-zero weights so no branch is trivially cheap
        p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    x = make_inputs(cfg, B, device)
    model.reset(x["rgb"], x["depth"], x["c2w"], x["K"])
    s = model._streams
    assert s is not None
    dc = model.dit.config
    gen = torch.Generator(device=device).manual_seed(0)

    def encode() -> torch.Tensor:
        with model._autocast():
            m = x["warp_mask"][:, None].float()
            xw = frames_to_model(x["warp_rgb"], x["warp_depth"], cfg.depth_near, cfg.depth_far) * m
            z = model._encode_fn(xw).float()
            return torch.cat([z, F.avg_pool2d(m, cfg.codec_factor)], dim=1)

    cond = encode()
    rel = relative_pose(s.c2w_ref, x["c2w_next"])
    proj = prope_matrices(rel, s.kn)[0][:, None] if dc.prope else None
    camera = model.dit.prepare_camera(plucker_rays(rel, s.dirs)[:, None], proj)
    z = cond[:, : cfg.latent_channels]
    t = token_coverage(cond[:, -1:], dc.patch_size, cfg.coverage_levels)

    def dit_step() -> object:
        with model._autocast():
            return model._stream_fn(z, t, cond, camera, s.cache, s.cache.attn_mask())

    def cache_update() -> None:
        with model._autocast():
            if cfg.cache_update == "clean":
                model._stream_fn(z, s.zero_t, s.zero_cond, camera, s.cache, s.cache.attn_mask(), True)
            s.cache.commit()

    def decode() -> object:
        with model._autocast():
            return model_to_frames(model._decode_fn(z), cfg.depth_near, cfg.depth_far)

    def step() -> object:
        return model.step(x["warp_rgb"], x["warp_depth"], x["warp_mask"], x["c2w_next"], generator=gen)

    out = {}
    for name, fn in (
        ("encode", encode),
        ("dit_step", dit_step),
        ("cache_update", cache_update),
        ("decode", decode),
        ("step", step),
    ):
        out[name] = measure(fn, device, warmup, repeats)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="batch sizes B")
    ap.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when available)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores this process may use)")
    ap.add_argument("--compile", action="store_true", help="time with torch.compile")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="change a ModelConfig field"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    cfg = ModelConfig(**parse_overrides(args.overrides))
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    dc = cfg.dit_config()
    n_dit = sum(p.numel() for p in WorldModel(cfg).dit.parameters())
    n_codec = sum(p.numel() for p in WorldModel(cfg).codec.parameters())
    print(
        f"config: {cfg.height}x{cfg.width}, codec /{cfg.codec_factor} -> "
        f"{dc.latent_size[0]}x{dc.latent_size[1]}x{cfg.latent_channels}, patch {cfg.patch_size} -> "
        f"{dc.tokens} tokens/frame, DiT dim {cfg.dim} x {cfg.layers} layers x {cfg.heads} heads "
        f"({n_dit / 1e6:.2f} M params), codec {n_codec / 1e6:.2f} M params, R={cfg.num_ref_frames} W={cfg.window}, "
        f"steps {cfg.timesteps}, cache_update={cfg.cache_update}, prope={cfg.prope}"
    )
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(
        f"torch {torch.__version__}, {threads} CPU threads, OMP_WAIT_POLICY={policy}, compile={args.compile}; "
        f"median (p10) ms over {args.repeats} repeats\n"
    )
    parts = ("encode", "DiT/step", "cache upd", "decode")
    header = (
        f"{'device':<6} {'B':>3} | " + " ".join(f"{p:>15}" for p in parts) + f" | {'whole step':>15} {'steps/s':>8}"
    )
    print(header)
    print("-" * len(header))
    result: dict[str, float] = {}
    for dev_name in devices:
        device = torch.device(dev_name)
        for B in args.batch:
            r = bench_one(cfg, B, device, args.warmup, args.repeats, args.compile)
            cells = " ".join(
                f"{r[k][0]:7.2f} ({r[k][1]:5.2f})" for k in ("encode", "dit_step", "cache_update", "decode")
            )
            step_ms = r["step"][0]
            print(f"{dev_name:<6} {B:>3} | {cells} | {step_ms:7.2f} ({r['step'][1]:5.2f}) {1e3 * B / step_ms:8.1f}")
            for k, (med, p10) in r.items():
                result[f"{k}_ms_b{B}_{device.type}"] = round(med, 3)
                result[f"{k}_p10_ms_b{B}_{device.type}"] = round(p10, 3)
    if "step_ms_b1_cpu" in result:
        ms = result["step_ms_b1_cpu"]
        verdict = "within" if ms <= BUDGET_MS else "OVER"
        print(f"\nB=1 CPU whole step: {ms:.2f} ms ({1e3 / ms:.1f} steps/s), {verdict} the {BUDGET_MS:.0f} ms budget")
        print("(DiT/step is one denoising forward; a step runs len(timesteps) of them, plus the cache update.)")
    if args.json:
        result.update(
            {"threads": threads, "omp_wait_policy": policy, "dit_params": n_dit, "codec_params": n_codec}  # type: ignore[dict-item]
        )
        result["config"] = cfg.to_dict()  # type: ignore[assignment]
        print(json.dumps(result))


if __name__ == "__main__":
    main()
