"""``worldenv datagen``: render training clips from ground-truth scenes into sharded datasets.

Clips are grouped by scene: shard ``k`` holds up to ``episodes_per_scene``
clips rendered in the scene of seed ``seed + k``, so a dataset can be split
by scene seed (the manifest lists every shard's seed; make a held-out set by
running again with a ``--seed`` past the training seeds). Each clip follows a
trajectory drawn from ``numpy.random.default_rng([seed, scene_seed, clip])``,
so any shard can be rebuilt bit-identically on its own.

Resuming. Shards are written under a temporary name and renamed when
complete; the manifest is updated (atomically) after each shard. Running the
same command again skips the shards the manifest lists (and finds on disk) and
makes the rest; a run killed at any point leaves no partial shard. A
directory made with a different configuration is refused.

This module's top level imports only the standard library, so that
``worldenv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["DatagenConfig", "generate", "add_arguments", "run"]


@dataclass(frozen=True)
class DatagenConfig:
    """What ``worldenv datagen`` renders.

    Attributes:
        scene: Scene spec (``rooms``, ``street``, ``mesh:<path>``).
        episodes: Number of clips.
        steps: Frames per clip.
        size: Square frame side in pixels.
        out: Output directory.
        seed: First scene seed; shard k uses scene seed ``seed + k``.
        episodes_per_scene: Clips per scene (and per shard).
        fov: Horizontal field of view in degrees.
        trajectory: ``mix``, ``explore``, ``pointnav``, ``loop``, ``orbit`` or ``drive``.
        compress: Compress shards (zlib; smaller, slower).
        batch: Views rendered per GL batch.
    """

    scene: str = "rooms"
    episodes: int = 64
    steps: int = 32
    size: int = 128
    out: str = "data/rooms"
    seed: int = 0
    episodes_per_scene: int = 8
    fov: float = 90.0
    trajectory: str = "mix"
    compress: bool = False
    batch: int = 32

    def __post_init__(self) -> None:
        for name in ("episodes", "steps", "size", "episodes_per_scene", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Expect `{name}` to be a positive int, actually: {v!r}")
        if self.seed < 0:
            raise ValueError(f"Expect `seed` to be non-negative, actually: {self.seed}")
        if not 1.0 <= self.fov <= 170.0:
            raise ValueError(f"Expect `fov` in [1, 170] degrees, actually: {self.fov}")
        kinds = ("mix", "explore", "pointnav", "loop", "orbit", "drive")
        if self.trajectory not in kinds:
            raise ValueError(f"Expect `trajectory` in {kinds}, actually: {self.trajectory!r}")
        if self.trajectory == "drive" and self.scene != "street":
            raise ValueError(f"Expect `scene` 'street' for drive trajectories, actually: {self.scene!r}")
        if self.scene.startswith("capture:"):
            raise ValueError(f"Expect a scene with ground truth (rooms, street, mesh:<path>), actually: {self.scene!r} has none to render")

    def identity(self) -> dict[str, Any]:
        """The fields that decide the dataset's content (a resumed run must match them)."""
        d = asdict(self)
        for k in ("out", "batch"):
            d.pop(k)
        return d

    @property
    def n_shards(self) -> int:
        """Number of shards (= scenes)."""
        return math.ceil(self.episodes / self.episodes_per_scene)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def _render_shard(cfg: DatagenConfig, k: int, on_clip: Any = None) -> tuple[dict[str, Any], int]:
    """Render shard ``k`` and write it; returns its manifest entry and its clip count."""
    import numpy as np

    from worldenv.geometry import intrinsics_from_fov
    from worldenv.scenes import load_scene
    from worldenv.scenes.shards import write_shard
    from worldenv.scenes.trajectories import make_trajectory

    scene_seed = cfg.seed + k
    clips = list(range(k * cfg.episodes_per_scene, min((k + 1) * cfg.episodes_per_scene, cfg.episodes)))
    scene = load_scene(cfg.scene, seed=scene_seed)
    K = intrinsics_from_fov(cfg.size, cfg.size, cfg.fov)
    N, T, S = len(clips), cfg.steps, cfg.size
    rgb = np.empty((N, T, S, S, 3), np.uint8)
    depth = np.empty((N, T, S, S), np.float32)
    c2w = np.empty((N, T, 4, 4))
    kinds = []
    for n, ci in enumerate(clips):
        rng = np.random.default_rng([cfg.seed, scene_seed, ci])
        kind, P = make_trajectory(cfg.trajectory, scene, T, rng)
        kinds.append(kind)
        c2w[n] = P
        for s in range(0, T, cfg.batch):
            rgb[n, s : s + cfg.batch], depth[n, s : s + cfg.batch] = scene.render_batch(P[s : s + cfg.batch], K, S)
        if on_clip is not None:
            on_clip()
    if hasattr(scene, "renderer"):
        scene.renderer.release()
    meta = {"spec": cfg.scene, "scene_seed": scene_seed, "trajectories": kinds, "fov": cfg.fov, "config": cfg.identity()}
    name = _shard_name(k)
    size = write_shard(
        Path(cfg.out) / name, rgb, depth, c2w, np.broadcast_to(K, (N, T, 3, 3)), np.full(N, scene_seed), np.array(clips), meta, cfg.compress
    )
    entry = {"file": name, "scene_seed": scene_seed, "clips": N, "first_clip": clips[0], "frames": T, "bytes": size, "trajectories": kinds}
    return entry, N


def generate(cfg: DatagenConfig, progress: bool = True, max_shards: int | None = None) -> dict[str, Any]:
    """Render (or finish rendering) the dataset described by ``cfg``.

    Args:
        cfg: What to render and where.
        progress: Show a tqdm progress bar (clips).
        max_shards: Stop after writing this many new shards (for tests and partial runs).

    Returns:
        The manifest as written.

    Raises:
        ValueError: ``cfg.out`` holds a dataset made with a different configuration.
    """
    from tqdm import tqdm

    from worldenv.scenes.shards import FORMAT, VERSION, read_manifest, write_manifest

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp*"):  # leftovers of a killed run; never a finished shard
        stale.unlink()
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("config") != cfg.identity():
        raise ValueError(
            f"Expect {out} to be empty or to hold this configuration's dataset, actually: it was made with "
            f"{manifest.get('config')}; use another --out"
        )
    if manifest is None:
        manifest = {"format": FORMAT, "version": VERSION, "config": cfg.identity(), "shards": [], "complete": False}
    kept = [e for e in manifest["shards"] if (out / e["file"]).is_file() and (out / e["file"]).stat().st_size == e.get("bytes")]
    manifest["shards"] = kept
    manifest["scene_seeds"] = [cfg.seed + k for k in range(cfg.n_shards)]
    done = {e["file"] for e in kept}
    bar = tqdm(total=cfg.episodes, initial=sum(e["clips"] for e in kept), unit="clip", disable=not progress, desc=f"datagen {cfg.scene}")
    written = 0
    try:
        for k in range(cfg.n_shards):
            if _shard_name(k) in done:
                continue
            if max_shards is not None and written >= max_shards:
                break
            entry, _ = _render_shard(cfg, k, on_clip=lambda: bar.update(1))
            manifest["shards"] = sorted(manifest["shards"] + [entry], key=lambda e: e["file"])
            manifest["complete"] = len(manifest["shards"]) == cfg.n_shards
            write_manifest(out, manifest)
            written += 1
    finally:
        bar.close()
    manifest["complete"] = len(manifest["shards"]) == cfg.n_shards
    write_manifest(out, manifest)
    return manifest


# ------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``worldenv datagen`` (one per ``DatagenConfig`` field)."""
    d = DatagenConfig()
    parser.add_argument("--scene", default=d.scene, help="scene spec: rooms, street or mesh:<path> (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=d.episodes, help="number of clips (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps, help="frames per clip (default: %(default)s)")
    parser.add_argument("--size", type=int, default=d.size, help="frame side in pixels (default: %(default)s)")
    parser.add_argument("--out", default=d.out, help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="first scene seed; shard k uses seed+k (default: %(default)s)")
    parser.add_argument("--episodes-per-scene", type=int, default=d.episodes_per_scene, help="clips per scene and shard (default: %(default)s)")
    parser.add_argument("--fov", type=float, default=d.fov, help="horizontal field of view in degrees (default: %(default)s)")
    parser.add_argument(
        "--trajectory",
        default=d.trajectory,
        choices=["mix", "explore", "pointnav", "loop", "orbit", "drive"],
        help="trajectory kind (default: %(default)s)",
    )
    parser.add_argument("--compress", action="store_true", help="zlib-compress the shards")
    parser.add_argument("--batch", type=int, default=d.batch, help="views per render batch (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``worldenv datagen``; returns the exit status."""
    names = {f.name for f in fields(DatagenConfig)}
    try:
        cfg = DatagenConfig(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as e:
        print(f"worldenv datagen: {e}")
        return 2
    t0 = time.perf_counter()
    try:
        manifest = generate(cfg, progress=not args.no_progress)
    except ValueError as e:
        print(f"worldenv datagen: {e}")
        return 2
    dt = time.perf_counter() - t0
    n = sum(e["clips"] for e in manifest["shards"])
    print(f"{n} clips in {len(manifest['shards'])} shards at {os.path.abspath(cfg.out)} ({dt:.1f} s this run)")
    return 0
