"""Readers for posed RGB-D data users already have: TUM RGB-D, RealEstate10K, KITTI odometry, worldenv shards.

Every reader returns a ``FrameSequence``: poses and intrinsics up front,
images read lazily, one ``View`` per frame (OpenCV camera, ``c2w`` float64,
depth float32 metres with 0 = unknown). Poses come through the pose readers of
``worldenv.geometry``; malformed input raises ``PoseFormatError`` (or its
subclass ``CaptureFormatError``) naming the file and line.

Layouts
-------
``tum``: a sequence directory with ``rgb.txt`` and ``depth.txt`` (``timestamp
path`` per line), ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``),
16-bit depth PNGs scaled by ``depth_scale`` (5000 per metre). Each RGB frame
takes the depth frame nearest in time (within ``max_dt`` seconds) and the
ground-truth pose interpolated at its timestamp (linear position, spherical
rotation; the nearest sample within ``max_dt`` at the ends); frames lacking
either are skipped. Intrinsics are TUM's published calibration when the
directory name says ``freiburg1/2/3``, else 525/525/319.5/239.5, unless given.

``re10k``: a RealEstate10K camera file ``<name>.txt`` (or a directory holding
exactly one) and its frames in ``<name>/`` (or ``frames/``) beside it, named by
timestamp (``<timestamp_us>.png|jpg``) or, failing that, one image per camera
line in sorted order. Optional depth in ``<frames>/depth/<timestamp>.npy``
(float metres) or ``.png`` (16-bit, divided by ``depth_scale``, default 1000).

``kitti``: a KITTI odometry sequence directory with ``image_2/`` (or
``image_0/``), ``calib.txt`` (``P0:`` ... ``P3:`` projection matrices) and
poses in ``poses.txt`` inside it or ``../../poses/<sequence>.txt`` (KITTI's
layout). Poses are of camera 0; the reader moves them to the colour camera
with the baseline in ``P2``. Optional depth in ``depth_2/`` (or ``depth/``):
``NNNNNN.png`` 16-bit divided by 256 (KITTI's depth convention) or ``.npy``.

``worldenv``: a dataset directory (``manifest.json``) or one ``.npz`` shard;
``clip`` selects the clip.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from worldenv.geometry import (
    PoseFormatError,
    matrix_to_quat,
    quat_to_matrix,
    read_kitti_poses,
    read_re10k_cameras,
    read_tum_poses,
    se3,
)
from worldenv.scenes.base import CaptureFormatError, View

__all__ = [
    "FrameSequence",
    "read_tum",
    "read_re10k",
    "read_kitti",
    "read_worldenv",
    "READERS",
    "TUM_INTRINSICS",
    "PoseFormatError",
    "CaptureFormatError",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
TUM_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
TUM_DEFAULT = (525.0, 525.0, 319.5, 239.5)


def _read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        img = np.asarray(iio.imread(path))
    except Exception as e:
        raise CaptureFormatError(path, None, f"cannot read the image ({type(e).__name__}: {e})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _read_depth(path: Path, scale: float) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
        except Exception as e:
            raise CaptureFormatError(path, None, f"cannot read the depth array ({type(e).__name__}: {e})") from None
        if d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
        if d.ndim != 2:
            raise CaptureFormatError(path, None, f"depth must be an (H, W) array, found shape {d.shape}")
        d = np.nan_to_num(d.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return np.where(d > 0, d, 0.0).astype(np.float32)
    import imageio.v3 as iio

    try:
        raw = np.asarray(iio.imread(path))
    except Exception as e:
        raise CaptureFormatError(path, None, f"cannot read the depth image ({type(e).__name__}: {e})") from None
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.uint8, np.int32, np.float32):
        raise CaptureFormatError(path, None, f"depth PNG must be single-channel 16-bit, found shape {raw.shape} dtype {raw.dtype}")
    return (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)


class FrameSequence(Sequence[View]):
    """Posed frames of a capture, with images loaded on access.

    Attributes:
        c2w: ``(N, 4, 4)`` float64 poses.
        K: ``(N, 3, 3)`` float64 intrinsics.
        timestamps: ``(N,)`` float64 seconds (or frame indices).
        source: Where the frames came from.
    """

    def __init__(
        self,
        c2w: np.ndarray,
        K: np.ndarray,
        timestamps: np.ndarray,
        load: Callable[[int], tuple[np.ndarray, np.ndarray]],
        source: str,
    ) -> None:
        self.c2w, self.K, self.timestamps = c2w, K, timestamps
        self._load, self.source = load, source

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def __getitem__(self, i: int) -> View:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("Expect an int index into a FrameSequence, actually: a slice")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"Expect a frame index in [0, {n}), actually: {i}")
        i %= n
        rgb, depth = self._load(i)
        return View(rgb, depth, self.c2w[i].copy(), self.K[i].copy(), float(self.timestamps[i]))

    def __iter__(self) -> Iterator[View]:
        for i in range(len(self)):
            yield self[i]

    def transform(self, T: np.ndarray) -> FrameSequence:
        """The same frames with poses ``T @ c2w`` (a change of world frame)."""
        return FrameSequence(T @ self.c2w, self.K, self.timestamps, self._load, self.source)


# --------------------------------------------------------------------------- TUM


def _assoc_list(path: Path) -> list[tuple[int, float, str]]:
    if not path.exists():
        raise FileNotFoundError(f"Expect {path} (a TUM RGB-D list), actually: it does not exist")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) != 2:
            raise CaptureFormatError(path, n, f"expected 'timestamp filename', found {len(fields)} fields")
        try:
            t = float(fields[0])
        except ValueError:
            raise CaptureFormatError(path, n, f"timestamp is not a number: {fields[0]!r}") from None
        if not math.isfinite(t):
            raise CaptureFormatError(path, n, "non-finite timestamp")
        out.append((n, t, fields[1]))
    return out


def _interpolate_pose(stamps: np.ndarray, poses: np.ndarray, t: float, max_dt: float) -> np.ndarray | None:
    j = int(np.searchsorted(stamps, t))
    if 0 < j < len(stamps) and stamps[j] - stamps[j - 1] <= 10 * max_dt:
        t0, t1 = stamps[j - 1], stamps[j]
        a = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        q0, q1 = matrix_to_quat(poses[j - 1, :3, :3]), matrix_to_quat(poses[j, :3, :3])
        if np.dot(q0, q1) < 0:
            q1 = -q1
        omega = math.acos(min(1.0, abs(float(np.dot(q0, q1)))))
        if omega < 1e-8:
            q = q0
        else:
            q = (math.sin((1 - a) * omega) * q0 + math.sin(a * omega) * q1) / math.sin(omega)
        return se3(quat_to_matrix(q), (1 - a) * poses[j - 1, :3, 3] + a * poses[j, :3, 3])
    near = [k for k in (j - 1, j) if 0 <= k < len(stamps) and abs(stamps[k] - t) <= max_dt]
    if not near:
        return None
    k = min(near, key=lambda k: abs(stamps[k] - t))
    return poses[k].copy()


def read_tum(
    path: str | os.PathLike[str],
    depth_scale: float = 5000.0,
    max_dt: float = 0.02,
    intrinsics: tuple[float, float, float, float] | None = None,
) -> FrameSequence:
    """Read a TUM RGB-D sequence directory (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"Expect a TUM RGB-D sequence directory, actually: {root} is not a directory")
    rgb = _assoc_list(root / "rgb.txt")
    depth = _assoc_list(root / "depth.txt")
    gt_path = root / "groundtruth.txt"
    if not gt_path.exists():
        raise FileNotFoundError(f"Expect {gt_path} (TUM ground truth), actually: it does not exist")
    stamps, poses = read_tum_poses(gt_path)
    if len(stamps) == 0:
        raise CaptureFormatError(gt_path, None, "no poses")
    order = np.argsort(stamps, kind="stable")
    stamps, poses = stamps[order], poses[order]
    for lst, name in ((rgb, "rgb.txt"), (depth, "depth.txt")):
        for n, _, f in lst:
            if not (root / f).exists():
                raise CaptureFormatError(root / name, n, f"file {f} does not exist")
    dts = np.array([t for _, t, _ in depth])
    frames = []
    for n, t, f in rgb:
        if dts.size == 0:
            break
        k = int(np.argmin(np.abs(dts - t)))
        if abs(dts[k] - t) > max_dt:
            continue
        pose = _interpolate_pose(stamps, poses, t, max_dt)
        if pose is None:
            continue
        frames.append((t, root / f, root / depth[k][2], pose))
    if not frames:
        raise CaptureFormatError(root / "rgb.txt", None, f"no RGB frame has a depth frame and a pose within {max_dt} s")
    if intrinsics is None:
        name = str(root.resolve()).lower()
        intrinsics = next((v for k, v in TUM_INTRINSICS.items() if k in name), TUM_DEFAULT)
    fx, fy, cx, cy = intrinsics
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        _, fr, fd, _ = frames[i]
        return _read_image(fr), _read_depth(fd, depth_scale)

    c2w = np.stack([fr[3] for fr in frames])
    return FrameSequence(c2w, np.repeat(K[None], len(frames), 0), np.array([fr[0] for fr in frames]), load, f"tum:{root}")


# ------------------------------------------------------------------------ RE10K


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def read_re10k(
    path: str | os.PathLike[str],
    frames_dir: str | os.PathLike[str] | None = None,
    depth_scale: float = 1000.0,
) -> FrameSequence:
    """Read a RealEstate10K camera file and its frame folder (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        txts = sorted(p.glob("*.txt"))
        if len(txts) != 1:
            raise FileNotFoundError(f"Expect exactly one RealEstate10K camera .txt in {p}, actually: {len(txts)}")
        p = txts[0]
    if not p.exists():
        raise FileNotFoundError(f"Expect a RealEstate10K camera file at {p}, actually: it does not exist")
    stamps, _, _, _ = read_re10k_cameras(p)
    if len(stamps) == 0:
        raise CaptureFormatError(p, None, "no camera lines")
    if frames_dir is not None:
        folder = Path(frames_dir)
    else:
        folder = next((f for f in (p.with_suffix(""), p.parent / "frames") if f.is_dir()), p.with_suffix(""))
    if not folder.is_dir():
        raise FileNotFoundError(f"Expect the frames of {p} in {folder}/, actually: no such directory")
    images = [_find_image(folder, str(t)) for t in stamps]
    if any(im is None for im in images):
        listed = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if len(listed) != len(stamps):
            first = next(k for k, im in enumerate(images) if im is None)
            raise CaptureFormatError(
                p, first + 2, f"no image {stamps[first]}.png/.jpg in {folder}, and the folder holds {len(listed)} images for {len(stamps)} cameras"
            )
        images = listed
    first = _read_image(images[0])  # type: ignore[arg-type]
    H, W = first.shape[:2]
    stamps, K, c2w, _ = read_re10k_cameras(p, (H, W))
    depth_dir = next((d for d in (folder / "depth", folder.with_name(folder.name + "_depth")) if d.is_dir()), None)

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        rgb = _read_image(images[i])  # type: ignore[arg-type]
        if rgb.shape[:2] != (H, W):
            raise CaptureFormatError(images[i], None, f"image is {rgb.shape[:2]}, the sequence's first image is {(H, W)}")
        depth = np.zeros((H, W), np.float32)
        if depth_dir is not None:
            for ext in (".npy", ".png"):
                dp = depth_dir / f"{stamps[i]}{ext}"
                if dp.exists():
                    depth = _read_depth(dp, depth_scale)
                    break
            if depth.shape != (H, W):
                raise CaptureFormatError(dp, None, f"depth is {depth.shape}, the image is {(H, W)}")
        return rgb, depth

    return FrameSequence(c2w, K, stamps.astype(np.float64) * 1e-6, load, f"re10k:{p}")


# ------------------------------------------------------------------------ KITTI


def _read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"Expect KITTI calibration at {path}, actually: it does not exist")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        key, sep, rest = s.partition(":")
        if not sep:
            raise CaptureFormatError(path, n, "expected 'KEY: numbers'")
        try:
            vals = np.array([float(x) for x in rest.split()])
        except ValueError:
            raise CaptureFormatError(path, n, f"not a number in {key}") from None
        if key.strip().startswith("P"):
            if vals.size != 12:
                raise CaptureFormatError(path, n, f"{key.strip()} needs 12 numbers (a 3x4 projection), found {vals.size}")
            if vals[0] <= 0 or vals[5] <= 0:
                raise CaptureFormatError(path, n, f"{key.strip()} has a non-positive focal length")
        out[key.strip()] = vals
    return out


def read_kitti(path: str | os.PathLike[str], poses: str | os.PathLike[str] | None = None) -> FrameSequence:
    """Read a KITTI odometry sequence directory (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"Expect a KITTI sequence directory, actually: {root} is not a directory")
    cam = next((c for c in ("image_2", "image_0") if (root / c).is_dir()), None)
    if cam is None:
        raise FileNotFoundError(f"Expect {root}/image_2 or {root}/image_0, actually: neither exists")
    images = sorted(f for f in (root / cam).iterdir() if f.suffix.lower() in IMAGE_EXTS)
    pose_path = Path(poses) if poses is not None else next(
        (q for q in (root / "poses.txt", root.parent.parent / "poses" / f"{root.name}.txt") if q.exists()), root / "poses.txt"
    )
    if not pose_path.exists():
        raise FileNotFoundError(f"Expect KITTI poses at {root / 'poses.txt'} or {root.parent.parent / 'poses' / (root.name + '.txt')}, actually: neither exists")
    c2w0 = read_kitti_poses(pose_path)
    if len(c2w0) != len(images):
        raise CaptureFormatError(pose_path, len(c2w0) + 1 if len(c2w0) < len(images) else len(images) + 1, f"{len(c2w0)} poses for {len(images)} images in {root / cam}")
    calib_path = root / "calib.txt"
    calib = _read_kitti_calib(calib_path)
    key = "P2" if cam == "image_2" else "P0"
    if key not in calib:
        raise CaptureFormatError(calib_path, None, f"no {key} line")
    P = calib[key].reshape(3, 4)
    K = P[:, :3].copy()
    t = np.linalg.solve(K, P[:, 3])  # camera frame = camera-0 frame shifted by t
    c2w = c2w0 @ se3(None, -t)
    depth_dir = next((root / d for d in ("depth_2", "depth") if (root / d).is_dir()), None)
    first = _read_image(images[0]) if images else np.zeros((1, 1, 3), np.uint8)
    H, W = first.shape[:2]

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        rgb = _read_image(images[i])
        depth = np.zeros(rgb.shape[:2], np.float32)
        if depth_dir is not None:
            for ext in (".png", ".npy"):
                dp = depth_dir / f"{images[i].stem}{ext}"
                if dp.exists():
                    depth = _read_depth(dp, 256.0)
                    break
        return rgb, depth

    times = root / "times.txt"
    ts = np.arange(len(images), dtype=np.float64)
    if times.exists():
        vals = [ln.split() for ln in times.read_text().splitlines() if ln.strip()]
        if len(vals) == len(images):
            try:
                ts = np.array([float(v[0]) for v in vals])
            except ValueError:
                bad = next(k for k, v in enumerate(vals) if not _is_float(v[0]))
                raise CaptureFormatError(times, bad + 1, f"not a number: {vals[bad][0]!r}") from None
    return FrameSequence(c2w, np.repeat(K[None], len(images), 0), ts, load, f"kitti:{root}")


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------- worldenv


def read_worldenv(path: str | os.PathLike[str], clip: int = 0) -> FrameSequence:
    """Read clip ``clip`` of a worldenv dataset directory or shard file."""
    from worldenv.scenes.shards import ShardDataset

    c = ShardDataset(path).clip(int(clip))
    rgb, depth = c.rgb, c.depth
    return FrameSequence(c.c2w, c.K, np.arange(rgb.shape[0], dtype=np.float64), lambda i: (rgb[i], depth[i]), f"worldenv:{path}#{clip}")


READERS: dict[str, Callable[..., FrameSequence]] = {
    "tum": read_tum,
    "re10k": read_re10k,
    "kitti": read_kitti,
    "worldenv": read_worldenv,
}
"""Capture format name -> reader ``(path, **options) -> FrameSequence``."""
