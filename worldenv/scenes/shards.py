"""worldenv's own dataset format: sharded clips of posed RGB-D frames, with a JSON manifest.

A dataset is a directory::

    manifest.json        format, version, the generating config, one entry per finished shard
    shard-00000.npz      clips of one scene seed
    shard-00001.npz      ...

Each shard is a NumPy ``.npz`` (read with ``allow_pickle=False``; nothing is
pickled) holding, for N clips of T frames of size H x W:

=============== ====================== ==========================================
key             shape, dtype           meaning
=============== ====================== ==========================================
``rgb``         (N, T, H, W, 3) uint8  images
``depth``       (N, T, H, W) float32   metric z-depth, 0 = unknown / sky
``c2w``         (N, T, 4, 4) float64   OpenCV camera-to-world poses
``K``           (N, T, 3, 3) float64   intrinsics in pixels
``scene_seed``  (N,) int64             seed of the scene each clip was rendered in
``clip_index``  (N,) int64             index of the clip in the dataset
``meta``        (B,) uint8             UTF-8 JSON: ``{"spec": ..., "trajectories": [...], ...}``
=============== ====================== ==========================================

Files are written to a temporary name and renamed, so a killed writer never
leaves a partial shard under a final name; the manifest is replaced the same way.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldenv._io import atomic_write, atomic_write_text
from worldenv.scenes.base import CaptureFormatError, View

__all__ = [
    "MANIFEST",
    "FORMAT",
    "Clip",
    "write_shard",
    "read_shard",
    "read_manifest",
    "write_manifest",
    "ShardDataset",
]

MANIFEST = "manifest.json"
FORMAT = "worldenv-shards"
VERSION = 1
_SHAPES = {"rgb": 5, "depth": 4, "c2w": 4, "K": 4, "scene_seed": 1, "clip_index": 1, "meta": 1}


@dataclass
class Clip:
    """One clip of a dataset.

    Attributes:
        rgb: ``(T, H, W, 3)`` uint8.
        depth: ``(T, H, W)`` float32 metres.
        c2w: ``(T, 4, 4)`` float64.
        K: ``(T, 3, 3)`` float64.
        spec: The scene spec the clip was rendered from.
        scene_seed: Its seed.
        clip_index: Index of the clip in the dataset.
        trajectory: Name of the trajectory kind.
    """

    rgb: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    spec: str
    scene_seed: int
    clip_index: int
    trajectory: str = ""

    def views(self) -> list[View]:
        """The clip's frames as ``View`` objects (timestamps are frame indices)."""
        return [View(self.rgb[t], self.depth[t], self.c2w[t], self.K[t], float(t)) for t in range(self.rgb.shape[0])]


def write_shard(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    depth: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    scene_seed: np.ndarray,
    clip_index: np.ndarray,
    meta: dict[str, Any],
    compress: bool = False,
) -> int:
    """Write one shard atomically (temporary file, fsync, rename); returns its size in bytes.

    Shapes are in the module docstring; ``meta`` must be JSON-serialisable.
    """
    N, T, H, W, _ = rgb.shape
    assert depth.shape == (N, T, H, W) and c2w.shape == (N, T, 4, 4) and K.shape == (N, T, 3, 3)
    p = Path(path)
    arrays = {
        "rgb": np.ascontiguousarray(rgb, dtype=np.uint8),
        "depth": np.ascontiguousarray(depth, dtype=np.float32),
        "c2w": np.ascontiguousarray(c2w, dtype=np.float64),
        "K": np.ascontiguousarray(K, dtype=np.float64),
        "scene_seed": np.asarray(scene_seed, dtype=np.int64).reshape(N),
        "clip_index": np.asarray(clip_index, dtype=np.int64).reshape(N),
        "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a handle: np.savez would append ".npz" to the temporary name
            (np.savez_compressed if compress else np.savez)(f, **arrays)

    atomic_write(p, write)
    return p.stat().st_size


def read_shard(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and validate a shard: its arrays and its ``meta`` dictionary.

    Raises:
        CaptureFormatError: The file is not a valid shard (the message names it and what is wrong).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Expect a shard at {p}, actually: it does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in _SHAPES if k not in z.files]
            if missing:
                raise CaptureFormatError(p, None, f"missing arrays {missing}; found {sorted(z.files)}")
            arrays = {k: z[k] for k in _SHAPES}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        if isinstance(e, CaptureFormatError):
            raise
        raise CaptureFormatError(p, None, f"not a readable .npz shard ({type(e).__name__}: {e})") from None
    for k, nd in _SHAPES.items():
        if arrays[k].ndim != nd:
            raise CaptureFormatError(p, None, f"array {k!r} has {arrays[k].ndim} dimensions, expected {nd}")
    N, T, H, W, C = arrays["rgb"].shape
    want = {"depth": (N, T, H, W), "c2w": (N, T, 4, 4), "K": (N, T, 3, 3), "scene_seed": (N,), "clip_index": (N,)}
    for k, shape in want.items():
        if arrays[k].shape != shape:
            raise CaptureFormatError(p, None, f"array {k!r} has shape {arrays[k].shape}, expected {shape} to match rgb {arrays['rgb'].shape}")
    if C != 3 or arrays["rgb"].dtype != np.uint8:
        raise CaptureFormatError(p, None, f"rgb must be uint8 with 3 channels, found {arrays['rgb'].dtype} with {C}")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaptureFormatError(p, None, f"meta is not UTF-8 JSON ({e})") from None
    return arrays, meta


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The dataset manifest of ``directory``, or None if there is none.

    Raises:
        CaptureFormatError: The manifest is not valid JSON (file and line named) or not a worldenv manifest.
    """
    p = Path(directory) / MANIFEST
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CaptureFormatError(p, e.lineno, f"invalid JSON: {e.msg}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CaptureFormatError(p, 1, f"not a worldenv dataset manifest (expected \"format\": \"{FORMAT}\")")
    if not isinstance(data.get("shards"), list):
        raise CaptureFormatError(p, 1, "missing the \"shards\" list")
    return data


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Replace the manifest of ``directory`` atomically."""
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


class ShardDataset:
    """Clips of a worldenv dataset directory (through its manifest) or of a single shard file.

    Shards are read lazily, one at a time (the last one is kept).

    Args:
        path: A dataset directory holding ``manifest.json``, or one ``.npz`` shard.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        self.path = p
        if p.is_dir():
            manifest = read_manifest(p)
            if manifest is None:
                raise FileNotFoundError(f"Expect {p / MANIFEST} (a worldenv dataset), actually: it does not exist")
            self.manifest = manifest
            files, counts = [], []
            for k, entry in enumerate(manifest["shards"]):
                if not isinstance(entry, dict) or "file" not in entry or "clips" not in entry:
                    raise CaptureFormatError(p / MANIFEST, None, f"shard entry {k} lacks \"file\" or \"clips\"")
                files.append(p / entry["file"])
                counts.append(int(entry["clips"]))
        elif p.suffix == ".npz":
            arrays, meta = read_shard(p)
            self.manifest = {"format": FORMAT, "shards": [{"file": p.name, "clips": int(arrays["rgb"].shape[0])}]}
            files, counts = [p], [int(arrays["rgb"].shape[0])]
            self._cache = (p, arrays, meta)
        else:
            raise FileNotFoundError(f"Expect a dataset directory or a .npz shard, actually: {p}")
        self._files = files
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if not hasattr(self, "_cache"):
            self._cache = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, f: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self._cache is None or self._cache[0] != f:
            arrays, meta = read_shard(f)
            self._cache = (f, arrays, meta)
        return self._cache[1], self._cache[2]

    def clip(self, i: int) -> Clip:
        """Clip ``i`` of the dataset (0 <= i < len)."""
        if not (0 <= i < len(self)):
            raise IndexError(f"Expect a clip index in [0, {len(self)}), actually: {i}")
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        arrays, meta = self._shard(self._files[s])
        row = i - int(self._starts[s])
        if row >= arrays["rgb"].shape[0]:
            raise CaptureFormatError(self._files[s], None, f"holds {arrays['rgb'].shape[0]} clips, the manifest says more")
        traj = meta.get("trajectories", [])
        return Clip(
            rgb=arrays["rgb"][row],
            depth=arrays["depth"][row],
            c2w=arrays["c2w"][row],
            K=arrays["K"][row],
            spec=str(meta.get("spec", "")),
            scene_seed=int(arrays["scene_seed"][row]),
            clip_index=int(arrays["clip_index"][row]),
            trajectory=str(traj[row]) if row < len(traj) else "",
        )

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(len(self)):
            yield self.clip(i)
