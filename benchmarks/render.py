"""Ground-truth renderer benchmark: oracle frames/s at 64², 128², 256², and datagen clips/s.

Not a timed test: it prints a table (and, with ``--json``, one JSON object as
its last line, with at least ``render_128_fps``). Frames/s is the best of a few
timed rounds (each rendering a fixed set of poses along a random walk, in
batches of ``--batch`` views, the way a vector env calls the oracle); on a
shared machine the best round is the least disturbed one, ``loadavg_1m_*``
says how shared the machine was, and ``*_cpu_ms_per_frame`` (process CPU time,
all of llvmpipe's threads) is the cost that contention does not change much. The renderer is moderngl on EGL (``gl_renderer``
names the driver: llvmpipe on CPU).

    python benchmarks/render.py            # table
    python benchmarks/render.py --json     # table, then {"render_128_fps": ..., ...}
    python benchmarks/render.py --quick    # a smaller run (smoke test)
    python benchmarks/render.py --montage outputs/scenes   # also save PNG montages of a few scenes

Workloads: ``rooms`` seed 7 (the headline ``render_<S>_fps``) and ``street``
seed 0 (``street_render_<S>_fps``), 90° horizontal field of view; single-view
calls (``render_128_fps_b1``); the depth error against an Embree ray cast on
interior pixels of a few views (``depth_max_abs_err_m``, when embreex is
installed); and ``worldenv datagen`` of rooms clips of 32 frames at 128²
(``datagen_clips_per_s``, scene generation and shard writing included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Args:
    json: bool = False
    """Print one JSON object with the headline numbers as the last line."""
    quick: bool = False
    """Shorter rounds and a smaller datagen run (a smoke test, not a measurement)."""
    seconds: float = 1.5
    """Length of one timed round."""
    rounds: int = 3
    """Timed rounds per measurement (the best is reported)."""
    batch: int = 16
    """Views per render call."""
    montage: str = ""
    """Directory to save PNG montages of rooms seeds 0-3 and street seeds 0-1 into (RGB over colourised depth)."""


def _fps(scene, P: np.ndarray, size: int, batch: int, seconds: float, rounds: int) -> tuple[float, float]:
    """Best frames/s over ``rounds`` and the process CPU time per frame (ms) in that round."""
    from worldenv.geometry import intrinsics_from_fov

    K = intrinsics_from_fov(size, size, 90.0)
    scene.render_batch(P[:batch], K, size)  # warm-up: GL objects and framebuffers
    best, cpu_ms = 0.0, 0.0
    for _ in range(rounds):
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            for s in range(0, len(P), batch):
                scene.render_batch(P[s : s + batch], K, size)
                n += min(batch, len(P) - s)
        fps = n / (time.perf_counter() - t0)
        if fps > best:
            best, cpu_ms = fps, 1e3 * (time.process_time() - c0) / n
    return best, cpu_ms


def _depth_error(scene, P: np.ndarray) -> float | None:
    try:
        import embreex  # noqa: F401
        import trimesh
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError:
        return None
    from worldenv.geometry import intrinsics_from_fov

    S = 64
    K = intrinsics_from_fov(S, S, 90.0)
    tri = scene.triangles.astype(np.float64)
    mesh = trimesh.Trimesh(vertices=tri.reshape(-1, 3), faces=np.arange(tri.shape[0] * 3).reshape(-1, 3), process=False)
    rmi = RayMeshIntersector(mesh)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n *= np.sign(n @ np.array([0.31, 0.57, 0.76]))[:, None]
    planes = np.concatenate([n, np.sum(n * tri[:, 0], axis=1, keepdims=True)], 1)
    _, depth = scene.render_batch(P, K, S)
    u, v = np.meshgrid(np.arange(S, dtype=np.float64), np.arange(S, dtype=np.float64))
    rays_c = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    worst = 0.0
    for b, c2w in enumerate(P):
        it, ir, loc = rmi.intersects_id(np.repeat(c2w[None, :3, 3], S * S, 0), rays_c @ c2w[:3, :3].T, multiple_hits=False, return_locations=True)
        ref = np.zeros(S * S)
        ref[ir] = (loc - c2w[:3, 3]) @ c2w[:3, 2]
        pl = np.full((S * S, 4), np.nan)
        pl[ir] = planes[it]
        pl = pl.reshape(S, S, 4)
        keep = np.isfinite(pl[..., 0])
        keep[[0, -1]] = False
        keep[:, [0, -1]] = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                keep &= np.all(np.abs(np.roll(np.roll(pl, dy, 0), dx, 1) - pl) < 1e-6, axis=-1)
        err = np.abs(depth[b].astype(np.float64) - ref.reshape(S, S))[keep]
        worst = max(worst, float(err.max(initial=0.0)))
    return worst


def colourise_depth(depth: np.ndarray, far: float) -> np.ndarray:
    """Depth ``(H, W)`` to RGB uint8 with a turbo-like ramp on log depth up to ``far``; 0 (unknown/sky) is black."""
    t = np.clip(np.log1p(depth) / np.log1p(far), 0.0, 1.0)
    # Polynomial fit of Google's Turbo colour map (Mikhailov 2019).
    r = 0.13572 + t * (4.61539 + t * (-42.66032 + t * (132.13108 + t * (-152.94239 + t * 59.28637))))
    g = 0.09140 + t * (2.19418 + t * (4.84296 + t * (-14.18503 + t * (4.27729 + t * 2.82956))))
    b = 0.10667 + t * (12.64194 + t * (-60.58204 + t * (110.36276 + t * (-89.90311 + t * 27.34824))))
    rgb = np.clip(np.stack([r, g, b], -1), 0.0, 1.0)
    rgb[depth <= 0] = 0.0
    return np.round(rgb * 255).astype(np.uint8)


def _open_views(scene, rng: np.random.Generator, n: int) -> np.ndarray:
    """Level poses from open floor, each looking the way with the most room ahead."""
    import math

    from scipy.ndimage import distance_transform_edt

    occ = scene.occupancy
    clear = distance_transform_edt(occ.main_component) * occ.cell
    cells = np.flatnonzero(clear >= min(0.8, 0.8 * clear.max()))
    poses = []
    for k in cells[rng.choice(cells.size, n, replace=False)]:
        p = occ.cell_center(k // occ.shape[1], k % occ.shape[1])
        yaws = np.linspace(-math.pi, math.pi, 16, endpoint=False) + rng.uniform(0, 0.4)
        room = [np.linalg.norm((occ.step_towards(p, p + 12.0 * np.array([math.sin(a), 0.0, math.cos(a)])) - p)[[0, 2]]) for a in yaws]
        poses.append(scene.pose_at(p, float(yaws[int(np.argmax(room))]), pitch=-0.08))
    return np.stack(poses)


def save_montages(directory: str, size: int = 160) -> list[str]:
    """PNG montages: per scene, four views (RGB above colourised depth) and, for rooms, the occupancy map."""
    import imageio.v3 as iio
    from PIL import Image

    from worldenv.geometry import intrinsics_from_fov
    from worldenv.scenes import load_scene
    from worldenv.scenes.trajectories import lane_drive

    os.makedirs(directory, exist_ok=True)
    K = intrinsics_from_fov(size, size, 90.0)
    paths = []
    for spec, seeds in (("rooms", (0, 1, 2, 3)), ("street", (0, 1))):
        for seed in seeds:
            scene = load_scene(spec, seed=seed)
            rng = np.random.default_rng(seed)
            if spec == "street":
                drive = lane_drive(scene, 3, rng, step_size=scene.length / 4)
                P = np.concatenate([drive, _open_views(scene, rng, 1)])
            else:
                P = _open_views(scene, rng, 4)
            rgb, depth = scene.render_batch(P, K, size)
            far = 10.0 if spec == "rooms" else 80.0
            top = np.concatenate(list(rgb), axis=1)
            bottom = np.concatenate([colourise_depth(d, far) for d in depth], axis=1)
            tile = np.concatenate([top, bottom], axis=0)
            if spec == "rooms":
                occ = scene.occupancy
                m = np.where(occ.navigable, 255, np.where(np.isfinite(occ.floor_y), 150, 40)).astype(np.uint8)
                for p in P:  # mark the view points
                    iz, ix = occ.to_cell(p[:3, 3])
                    m[max(iz - 3, 0) : iz + 4, max(ix - 3, 0) : ix + 4] = 0
                h = tile.shape[0]
                w = int(round(m.shape[1] * h / m.shape[0]))
                mm = np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
                tile = np.concatenate([tile, np.repeat(mm[..., None], 3, axis=-1)], axis=1)
            path = os.path.join(directory, f"{spec}_seed{seed}.png")
            iio.imwrite(path, tile)
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object with the numbers as the last line")
    p.add_argument("--quick", action="store_true", help="shorter rounds, smaller datagen run (a smoke test)")
    p.add_argument("--seconds", type=float, default=Args.seconds, help="length of one timed round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=Args.rounds, help="timed rounds per measurement, best kept (default: %(default)s)")
    p.add_argument("--batch", type=int, default=Args.batch, help="views per render call (default: %(default)s)")
    p.add_argument("--montage", default="", help="save PNG montages of a few scenes into this directory")
    a = p.parse_args(argv)
    args = Args(json=a.json, quick=a.quick, seconds=a.seconds, rounds=a.rounds, batch=a.batch, montage=a.montage)
    if args.quick:
        args.seconds, args.rounds = 0.3, 1

    from worldenv.scenes import load_scene
    from worldenv.scenes.datagen import DatagenConfig, generate
    from worldenv.scenes.renderer import gl_info
    from worldenv.scenes.trajectories import random_walk

    out: dict[str, float | str | None] = {}
    info = gl_info()
    out["gl_renderer"] = info["GL_RENDERER"]
    out["cpu_count"] = os.cpu_count()
    out["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
    print(f"renderer: {info['GL_RENDERER']} ({info['GL_VERSION']}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'scene':<8} {'size':>5} {'batch':>5} {'frames/s':>10} {'CPU ms/frame':>12}")
    for spec, seed, prefix in (("rooms", 7, ""), ("street", 0, "street_")):
        t0 = time.perf_counter()
        scene = load_scene(spec, seed=seed)
        out[f"{prefix}scene_load_s"] = round(time.perf_counter() - t0, 3)
        P = random_walk(scene, 64, np.random.default_rng(0))
        for size in (64, 128, 256):
            fps, cpu_ms = _fps(scene, P, size, args.batch, args.seconds, args.rounds)
            out[f"{prefix}render_{size}_fps"] = round(fps, 1)
            out[f"{prefix}render_{size}_cpu_ms_per_frame"] = round(cpu_ms, 3)
            print(f"{spec:<8} {size:>4}² {args.batch:>5} {fps:>10.1f} {cpu_ms:>12.2f}")
        if spec == "rooms":
            fps1, cpu1 = _fps(scene, P[:16], 128, 1, args.seconds, args.rounds)
            out["render_128_fps_b1"] = round(fps1, 1)
            print(f"{spec:<8} {128:>4}² {1:>5} {fps1:>10.1f} {cpu1:>12.2f}")
            err = _depth_error(scene, P[:4])
            out["depth_max_abs_err_m"] = err
            if err is not None:
                print(f"depth vs Embree ray cast, interior pixels of 4 views at 64²: max |error| = {err:.2e} m")
    episodes, steps = (4, 8) if args.quick else (16, 32)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DatagenConfig(scene="rooms", episodes=episodes, steps=steps, size=128, out=tmp, seed=1000, episodes_per_scene=8)
        t0 = time.perf_counter()
        generate(cfg, progress=False)
        dt = time.perf_counter() - t0
    out["datagen_clips_per_s"] = round(episodes / dt, 3)
    out["datagen_frames_per_s"] = round(episodes * steps / dt, 1)
    print(f"datagen rooms: {episodes} clips x {steps} frames at 128² in {dt:.1f} s: {episodes / dt:.2f} clips/s ({episodes * steps / dt:.0f} frames/s)")
    out["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.montage:
        for path in save_montages(args.montage):
            print(f"montage: {path}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
