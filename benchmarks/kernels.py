"""Kernel benchmark: splat and fuse throughput per backend, ratios measured in the same run.

Not a timed test: it prints a table (and, with ``--json``, one JSON object as
its last line). Every number is the median of repeats after a warm-up call;
on a shared machine, read the ratios rather than the absolute times (the
reference and native runs alternate, so they see similar load).

    python benchmarks/kernels.py            # table
    python benchmarks/kernels.py --json     # table, then {"splat_1m_native_over_reference": ..., ...}
    python benchmarks/kernels.py --quick    # a smaller run (smoke test)

Workloads:

* splat: N random points in front of the camera (depth 1-10 m, 10% of them
  outside the view) with the radius fuse gives a point seen from a similar
  distance, ``0.9 * z' / f`` with z' within 30% of z: projected radii of
  about 0.6-1.2 px. Sizes 37k (one 192x192 frame's worth), 1M and 4M points,
  at 128x128 and 256x256.
* fuse: a camera walking around a textured box room (8 x 3 x 8 m), frames of
  128x128 and 256x256 (16k and 65k points), 2 cm voxels, into a map large
  enough that nothing is evicted; points/s counts every pixel fused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

# OpenMP threads that wait at a barrier sleep instead of spinning: on a shared
# machine a spinning thread takes the core of the thread it waits for. Torch
# and worldenv._native share torch's OpenMP runtime, which reads this once
# when it loads (so it must be set before torch is imported), and both
# backends get the same policy. Set OMP_WAIT_POLICY=active to measure the
# default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import torch  # noqa: E402

from worldenv.kernels import PointMap, available_backends, fuse, splat  # noqa: E402


@dataclass
class Args:
    json: bool = False
    """Print one JSON object with the headline numbers as the last line."""
    quick: bool = False
    """Smaller sizes and fewer repeats (a smoke test, not a measurement)."""
    repeats: int = 7
    """Timed repeats of each fast call (the reference gets fewer)."""
    seed: int = 0
    """Seed of the synthetic scenes."""


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def intrinsics(size: int) -> torch.Tensor:
    f = size / 2  # 90 degrees
    return torch.tensor([[[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def splat_scene(n: int, size: int, seed: int, device: str = "cpu"):
    """n points in front of an identity camera at size x size; see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    f = size / 2
    z = 1.0 + 9.0 * torch.rand(1, n, generator=g)
    uv = (torch.rand(1, n, 2, generator=g) * 1.1 - 0.05) * size  # ~10% outside the view
    x = (uv[..., 0] - size / 2) / f * z
    y = (uv[..., 1] - size / 2) / f * z
    xyz = torch.stack([x, y, z], -1)
    z_seen = z * (0.7 + 0.6 * torch.rand(1, n, generator=g))
    radius = 0.9 * z_seen / f
    feats = torch.rand(1, n, 3, generator=g)
    counts = torch.tensor([n])
    c2w = torch.eye(4, dtype=torch.float64)[None]
    args = (xyz, feats, radius, counts, c2w, intrinsics(size))
    return tuple(a.to(device) for a in args)


def room_frames(n: int, size: int, seed: int):
    """n RGB-D frames of a camera circling inside an 8 x 3 x 8 m box room, looking around."""
    del seed  # the room and the path are fixed
    K = intrinsics(size)
    half = torch.tensor([4.0, 1.5, 4.0], dtype=torch.float64)
    ii, jj = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    rays_cam = torch.stack([(jj - K[0, 0, 2]) / K[0, 0, 0], (ii - K[0, 1, 2]) / K[0, 1, 1], torch.ones_like(jj)], -1)
    frames = []
    for k in range(n):
        a = 2 * math.pi * k / max(n, 1) * 0.5  # half a turn over the sequence
        yaw = a + 0.3 * math.sin(3 * a)
        R = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]], dtype=torch.float64)
        o = torch.tensor([1.5 * math.cos(a), 0.2 * math.sin(2 * a), 1.5 * math.sin(a)], dtype=torch.float64)
        d = rays_cam @ R.T  # world directions, z_cam = 1
        # Distance to the walls from inside the box, per axis, then the nearest.
        t = torch.where(d > 0, (half - o) / d, torch.where(d < 0, (-half - o) / d, torch.full_like(d, math.inf)))
        depth = t.min(-1).values  # the camera z of the hit (rays have z_cam = 1)
        hit = o + depth[..., None] * d
        rgb = 0.5 + 0.5 * torch.sin(hit * 7.0 + torch.arange(3, dtype=torch.float64))  # a texture
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3, :3] = R
        c2w[:3, 3] = o
        frames.append((rgb.float()[None], depth.float()[None], c2w[None], K))
    return frames


def bench_splat(args: Args, backends: list[str], rows: list[dict]) -> dict[str, float]:
    sizes = [37_000, 1 << 20, 4 << 20] if not args.quick else [37_000, 1 << 18]
    headline: dict[str, float] = {}
    for n in sizes:
        for size in (128, 256):
            times: dict[str, float] = {}
            for be in backends:
                device = "cuda" if be == "cuda" else "cpu"
                scene = splat_scene(n, size, args.seed, device)
                reps = max(3, args.repeats // 2) if be == "reference" else args.repeats
                if be == "reference" and n >= 4 << 20:
                    reps = 3
                times[be] = median_time(lambda: splat(*scene, (size, size), backend=be), reps)
            for be, t in times.items():
                ratio = times["reference"] / t if "reference" in times else float("nan")
                rows.append(dict(kernel="splat", points=n, size=f"{size}x{size}", backend=be, ms=t * 1e3, mpts=n / t / 1e6, over_ref=ratio))
            if n == 1 << 20 and size == 128 and "native" in times:
                headline["splat_1m_native_over_reference"] = times["reference"] / times["native"]
                headline["splat_1m_native_ms"] = times["native"] * 1e3
                headline["splat_1m_reference_ms"] = times["reference"] * 1e3
    return headline


def fuse_rate(frames: list, backend: str, repeats: int) -> float:
    """Median points/s of fusing ``frames`` in order into a fresh map, over ``repeats`` runs after a warm-up."""
    device = frames[0][0].device
    per_run = []
    for _ in range(repeats + 1):  # the first run is the warm-up
        pm = PointMap.empty(1, 1 << 21, 3, device=device)
        t = time.perf_counter()
        for fr in frames:
            fuse(pm, *fr, voxel_size=0.02, backend=backend)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_run.append(time.perf_counter() - t)
        assert int(pm.count[0]) < pm.capacity, "the benchmark map must not evict"
    pts = sum(fr[1].numel() for fr in frames)
    return pts / statistics.median(per_run[1:])


def bench_fuse(args: Args, backends: list[str], rows: list[dict]) -> dict[str, float]:
    headline: dict[str, float] = {}
    rates: dict[str, list[float]] = {}
    ratios: list[float] = []
    for size, n_frames in ((128, 60), (256, 30)):
        if args.quick:
            n_frames //= 6
        frames = room_frames(n_frames, size, args.seed)
        # The reference's Python CLOCK loop is slow: it gets the first frames
        # only (mostly new voxels, its slowest case), and the native backend
        # is timed on the same frames for the ratio.
        first = frames[: max(2, n_frames // 12)]
        same: dict[str, float] = {}
        for be in backends:
            device = "cuda" if be == "cuda" else "cpu"
            on_device = [tuple(t.to(device) for t in fr) for fr in frames]
            if be == "reference":
                same[be] = fuse_rate(on_device[: len(first)], be, 1)
                rate, used = same[be], len(first)
            else:
                rate, used = fuse_rate(on_device, be, 3 if not args.quick else 1), n_frames
                if be == "native":
                    same[be] = fuse_rate(on_device[: len(first)], be, 3)
            rates.setdefault(be, []).append(rate)
            pts = used * size * size
            rows.append(dict(kernel="fuse", points=pts, size=f"{size}x{size} x{used}", backend=be, ms=pts / rate * 1e3 / used, mpts=rate / 1e6, over_ref=float("nan")))
        if "reference" in same and "native" in same:
            ratios.append(same["native"] / same["reference"])
            rows.append(dict(kernel="fuse", points=len(first) * size * size, size=f"{size}x{size} x{len(first)}", backend="native", ms=size * size / same["native"] * 1e3, mpts=same["native"] / 1e6, over_ref=ratios[-1]))
    for be, r in rates.items():
        # The slower of the two frame sizes: a conservative headline.
        headline[f"fuse_{be}_points_per_s"] = min(r)
    if ratios:
        headline["fuse_native_over_reference"] = min(ratios)
    return headline


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the headline numbers as one JSON object, last")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a smoke test)")
    p.add_argument("--repeats", type=int, default=Args.repeats, help="timed repeats of each fast call")
    p.add_argument("--seed", type=int, default=Args.seed, help="seed of the synthetic scenes")
    args = Args(**vars(p.parse_args(argv)))
    backends = list(available_backends())
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows: list[dict] = []
    headline = bench_splat(args, backends, rows)
    headline.update(bench_fuse(args, backends, rows))
    load1 = os.getloadavg()[0]
    from worldenv.kernels._backend import load_native

    native = load_native()
    threads = native.max_threads() if native is not None else 0
    print(f"worldenv kernels benchmark: backends {backends}, {os.cpu_count()} CPUs, native threads {threads}, "
          f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {load0:.2f} -> {load1:.2f} (other processes share these CPUs)")
    print(f"{'kernel':<7} {'points':>9} {'size':<16} {'backend':<10} {'ms':>10} {'Mpts/s':>9} {'x ref':>7}")
    for r in rows:
        ratio = "" if math.isnan(r["over_ref"]) else f"{r['over_ref']:.1f}"
        print(f"{r['kernel']:<7} {r['points']:>9} {r['size']:<16} {r['backend']:<10} {r['ms']:>10.2f} {r['mpts']:>9.2f} {ratio:>7}")
    for k, v in headline.items():
        print(f"{k}: {v:.4g}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        headline = dict(
            headline,
            load_average=[load0, load1],
            cpus=os.cpu_count(),
            native_threads=threads,
            omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        )
        print(json.dumps(headline))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
