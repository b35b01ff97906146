"""Readers of captured posed RGB-D data, on small fixtures written here in each format."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest

from worldenv.geometry import (
    PoseFormatError,
    intrinsics_from_fov,
    rot_y,
    rot_z,
    se3,
    write_kitti_poses,
    write_re10k_cameras,
    write_tum_poses,
)
from worldenv.scenes import CaptureFormatError, load_scene
from worldenv.scenes.readers import TUM_INTRINSICS, read_kitti, read_re10k, read_tum, read_worldenv
from worldenv.scenes.shards import MANIFEST, ShardDataset, read_shard, write_shard

H, W = 12, 16


def _image(k: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 10 * k
    img[k % H, :, 1] = 255
    return img


def _depth(k: int) -> np.ndarray:
    return (1.0 + 0.1 * k + 0.001 * np.arange(H * W).reshape(H, W)).astype(np.float32)


# ------------------------------------------------------------------------ TUM


def _tum_pose(t: float) -> np.ndarray:
    """An upright camera in TUM's z-up world (camera y = world -z), moving along x and turning slowly."""
    base = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # columns: x, y (down = -z), z
    return se3(rot_z(0.1 * t) @ base, [t, 0.5 * t, 1.4])


def _write_tum(root, rgb_times, depth_times, gt_times) -> None:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    lines = ["# color images", "# timestamp filename"]
    for k, t in enumerate(rgb_times):
        iio.imwrite(root / "rgb" / f"{t:.6f}.png", _image(k))
        lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    lines = ["# depth maps"]
    for k, t in enumerate(depth_times):
        iio.imwrite(root / "depth" / f"{t:.6f}.png", np.round(_depth(k) * 5000).astype(np.uint16))
        lines.append(f"{t:.6f} depth/{t:.6f}.png")
    (root / "depth.txt").write_text("\n".join(lines) + "\n")
    write_tum_poses(root / "groundtruth.txt", np.array(gt_times), np.stack([_tum_pose(t) for t in gt_times]))


@pytest.fixture
def tum_dir(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    rgb_t = [1.0 + k / 30 for k in range(5)] + [3.0]  # the last frame has no depth or pose near it
    depth_t = [t + 0.004 for t in rgb_t[:5]]
    gt_t = list(np.arange(0.9, 1.3, 0.01))
    _write_tum(root, rgb_t, depth_t, gt_t)
    return root


def test_tum_association_interpolation_and_depth_scale(tum_dir):
    seq = read_tum(tum_dir)
    assert len(seq) == 5
    fx, fy, cx, cy = TUM_INTRINSICS["freiburg1"]
    assert np.allclose(seq.K[0], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    for k in range(5):
        t = 1.0 + k / 30
        v = seq[k]
        assert v.timestamp == pytest.approx(t)
        assert np.array_equal(v.rgb, _image(k))
        assert np.allclose(v.depth, np.round(_depth(k) * 5000) / 5000, atol=1e-6)  # 16-bit PNG / 5000
        assert v.depth.dtype == np.float32
        # Interpolated between the 100 Hz ground-truth samples, not snapped to the nearest.
        assert np.allclose(v.c2w, _tum_pose(t), atol=1e-7)


def test_tum_options_and_scene(tum_dir):
    seq = read_tum(tum_dir, depth_scale=1000.0, intrinsics=(500.0, 501.0, 7.5, 5.5))
    assert np.allclose(seq[0].depth, np.round(_depth(0) * 5000) / 1000)
    assert seq.K[0, 0, 0] == 500.0 and seq.K[0, 1, 2] == 5.5
    with pytest.raises(CaptureFormatError, match=r"rgb\.txt: no RGB frame has a depth frame"):
        read_tum(tum_dir, max_dt=0.001)  # depth is 4 ms off: nothing associates
    scene = load_scene(f"capture:tum:{tum_dir}")
    assert len(scene.frames) == 5 and not scene.has_oracle
    # Gravity alignment: TUM's world is z-up; the scene's cameras are upright in worldenv's y-down world.
    assert np.allclose(scene.frames.c2w[:, :3, 1], [0.0, 1.0, 0.0], atol=1e-6)
    assert np.allclose(scene.frames.c2w[0, :3, 3], _tum_pose(1.0)[:3, 3])  # turned about the first camera
    raw = load_scene(f"capture:tum:{tum_dir}", align_gravity=False)
    assert np.allclose(raw.frames.c2w[0], _tum_pose(1.0), atol=1e-7)
    small = load_scene(f"capture:tum:{tum_dir}", depth_scale=1000.0).reference_views(6)
    assert small[0].rgb.shape == (6, 6, 3) and small[0].depth.shape == (6, 6)
    assert np.allclose(small[0].K[0, 0], TUM_INTRINSICS["freiburg1"][0] * 6 / W)


def test_tum_drops_frames_without_depth_or_pose(tum_dir):
    seq = read_tum(tum_dir)
    assert 3.0 not in list(seq.timestamps)


def test_tum_malformed_lists_name_file_and_line(tum_dir):
    text = (tum_dir / "rgb.txt").read_text().splitlines()
    text[3] = "1.0333 rgb/x.png extra"
    (tum_dir / "rgb.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(CaptureFormatError, match=r"rgb\.txt:4: expected 'timestamp filename'"):
        read_tum(tum_dir)
    text[3] = "nan? rgb/x.png"
    (tum_dir / "rgb.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(CaptureFormatError, match=r"rgb\.txt:4: timestamp is not a number"):
        read_tum(tum_dir)
    text[3] = "1.05 rgb/missing.png"
    (tum_dir / "rgb.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(CaptureFormatError, match=r"rgb\.txt:4: file rgb/missing\.png does not exist"):
        read_tum(tum_dir)


def test_tum_malformed_groundtruth(tum_dir):
    gt = (tum_dir / "groundtruth.txt").read_text().splitlines()
    gt[2] = "1.0 0 0 0 0 0 1"  # seven numbers
    (tum_dir / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    with pytest.raises(PoseFormatError, match=r"groundtruth\.txt:3: expected 8 numbers"):
        read_tum(tum_dir)
    (tum_dir / "groundtruth.txt").unlink()
    with pytest.raises(FileNotFoundError, match="groundtruth"):
        read_tum(tum_dir)


# ---------------------------------------------------------------------- RE10K


def _re10k_fixture(tmp_path, n: int = 4, by_timestamp: bool = True):
    stamps = np.array([1000000 + 33366 * k for k in range(n)])
    c2w = np.stack([se3(rot_y(0.05 * k), [0.1 * k, 0.0, 0.2 * k]) for k in range(n)])
    K = intrinsics_from_fov(W, H, 70.0)
    cam = tmp_path / "abc123.txt"
    write_re10k_cameras(cam, stamps, K, (H, W), c2w, url="https://www.youtube.com/watch?v=abc123")
    frames = tmp_path / "abc123"
    (frames / "depth").mkdir(parents=True)
    for k, t in enumerate(stamps):
        iio.imwrite(frames / (f"{t}.png" if by_timestamp else f"{k:04d}.png"), _image(k))
    np.save(frames / "depth" / f"{stamps[0]}.npy", _depth(0))
    iio.imwrite(frames / "depth" / f"{stamps[1]}.png", np.round(_depth(1) * 1000).astype(np.uint16))
    return cam, stamps, c2w, K


@pytest.mark.parametrize("by_timestamp", [True, False])
def test_re10k_frames_and_optional_depth(tmp_path, by_timestamp):
    cam, stamps, c2w, K = _re10k_fixture(tmp_path, by_timestamp=by_timestamp)
    seq = read_re10k(cam)
    assert len(seq) == 4
    assert np.allclose(seq.K, K, atol=1e-9) and np.allclose(seq.c2w, c2w, atol=1e-9)
    assert np.allclose(seq.timestamps, stamps * 1e-6)
    assert np.array_equal(seq[2].rgb, _image(2))
    assert np.allclose(seq[0].depth, _depth(0))  # .npy metres
    assert np.allclose(seq[1].depth, np.round(_depth(1) * 1000) / 1000)  # 16-bit millimetres
    assert not seq[2].depth.any()  # no depth: 0 = unknown
    scene = load_scene(f"capture:re10k:{tmp_path}", align_gravity=False)  # a directory holding one camera file
    assert np.allclose(scene.frames.c2w, c2w, atol=1e-9)


def test_re10k_errors_name_file_and_line(tmp_path):
    cam, stamps, c2w, K = _re10k_fixture(tmp_path)
    (tmp_path / "abc123" / f"{stamps[2]}.png").unlink()
    with pytest.raises(CaptureFormatError, match=r"abc123\.txt:4: no image"):
        read_re10k(cam)
    lines = cam.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])  # 18 numbers
    cam.write_text("\n".join(lines) + "\n")
    with pytest.raises(PoseFormatError, match=r"abc123\.txt:3: expected 19 numbers"):
        read_re10k(cam)


# ---------------------------------------------------------------------- KITTI


def _kitti_fixture(tmp_path, n: int = 3):
    seq = tmp_path / "dataset" / "sequences" / "05"
    (seq / "image_2").mkdir(parents=True)
    (seq / "depth_2").mkdir()
    (tmp_path / "dataset" / "poses").mkdir()
    fx, cx, cy = 20.0, 7.5, 5.5
    baseline = 0.06
    P0 = [fx, 0, cx, 0, 0, fx, cy, 0, 0, 0, 1, 0]
    P2 = [fx, 0, cx, fx * baseline, 0, fx, cy, 0, 0, 0, 1, 0]
    calib = "\n".join(f"P{i}: " + " ".join(f"{v:.12e}" for v in P) for i, P in enumerate([P0, P0, P2, P2])) + "\nTr: " + " ".join(["0"] * 12) + "\n"
    (seq / "calib.txt").write_text(calib)
    poses = np.stack([se3(rot_y(0.02 * k), [0.0, 0.0, 1.5 * k]) for k in range(n)])
    write_kitti_poses(tmp_path / "dataset" / "poses" / "05.txt", poses)
    for k in range(n):
        iio.imwrite(seq / "image_2" / f"{k:06d}.png", _image(k))
    iio.imwrite(seq / "depth_2" / "000001.png", np.round(_depth(1) * 256).astype(np.uint16))
    (seq / "times.txt").write_text("\n".join(f"{0.1 * k:.6e}" for k in range(n)) + "\n")
    return seq, poses, baseline, fx, cx, cy


def test_kitti_poses_calibration_and_depth(tmp_path):
    seq_dir, poses, baseline, fx, cx, cy = _kitti_fixture(tmp_path)
    seq = read_kitti(seq_dir)
    assert len(seq) == 3
    assert np.allclose(seq.K[0], [[fx, 0, cx], [0, fx, cy], [0, 0, 1]])
    # The colour camera sits `baseline` to the left of camera 0 (KITTI's P2 has a positive tx).
    expect = poses @ se3(None, [-baseline, 0.0, 0.0])
    assert np.allclose(seq.c2w, expect)
    assert np.allclose(seq.timestamps, [0.0, 0.1, 0.2])
    assert np.array_equal(seq[0].rgb, _image(0)) and not seq[0].depth.any()
    assert np.allclose(seq[1].depth, np.round(_depth(1) * 256) / 256)
    scene = load_scene(f"capture:kitti:{seq_dir}")
    assert len(scene.reference_views()) == 3


def test_kitti_errors_name_file_and_line(tmp_path):
    seq_dir, *_ = _kitti_fixture(tmp_path)
    calib = (seq_dir / "calib.txt").read_text().splitlines()
    calib[2] = "P2: 1 2 3"
    (seq_dir / "calib.txt").write_text("\n".join(calib) + "\n")
    with pytest.raises(CaptureFormatError, match=r"calib\.txt:3: P2 needs 12 numbers"):
        read_kitti(seq_dir)
    seq_dir2, *_ = _kitti_fixture(tmp_path / "b")
    pose_file = tmp_path / "b" / "dataset" / "poses" / "05.txt"
    lines = pose_file.read_text().splitlines()
    pose_file.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(CaptureFormatError, match=r"05\.txt:3: 2 poses for 3 images"):
        read_kitti(seq_dir2)
    lines[1] = lines[1].replace(lines[1].split()[4], "abc", 1)
    pose_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(PoseFormatError, match=r"05\.txt:2: not a number"):
        read_kitti(seq_dir2)


# ------------------------------------------------------------------- worldenv


def _write_dataset(root, n_shards: int = 2, clips: int = 2, T: int = 3) -> None:
    shards = []
    for s in range(n_shards):
        rgb = np.stack([np.stack([_image(s * 10 + c * 3 + t) for t in range(T)]) for c in range(clips)])
        depth = np.stack([np.stack([_depth(t) for t in range(T)]) for _ in range(clips)])
        c2w = np.tile(np.eye(4), (clips, T, 1, 1))
        c2w[..., 0, 3] = np.arange(T) + 10 * s
        K = np.tile(intrinsics_from_fov(W, H, 90.0), (clips, T, 1, 1))
        name = f"shard-{s:05d}.npz"
        size = write_shard(root / name, rgb, depth, c2w, K, np.full(clips, 100 + s), np.arange(clips) + s * clips, {"spec": "rooms", "trajectories": ["explore"] * clips})
        shards.append({"file": name, "clips": clips, "scene_seed": 100 + s, "bytes": size})
    (root / MANIFEST).write_text(json.dumps({"format": "worldenv-shards", "version": 1, "config": {}, "shards": shards}, indent=1))


def test_worldenv_shards_read_back(tmp_path):
    _write_dataset(tmp_path)
    ds = ShardDataset(tmp_path)
    assert len(ds) == 4
    c = ds.clip(3)
    assert c.scene_seed == 101 and c.clip_index == 3 and c.spec == "rooms" and c.trajectory == "explore"
    assert np.array_equal(c.rgb[1], _image(10 + 3 + 1)) and np.allclose(c.c2w[:, 0, 3], [10, 11, 12])
    seq = read_worldenv(tmp_path, clip=2)
    assert len(seq) == 3 and np.array_equal(seq[0].rgb, _image(10))
    single = ShardDataset(tmp_path / "shard-00000.npz")
    assert len(single) == 2 and np.array_equal(single.clip(1).rgb, ds.clip(1).rgb)
    scene = load_scene(f"capture:worldenv:{tmp_path}", clip=1, align_gravity=False)
    assert np.array_equal(scene.frames[2].rgb, ds.clip(1).rgb[2])
    with pytest.raises(IndexError):
        ds.clip(4)
    with pytest.raises(IndexError):
        seq[3]


def test_worldenv_malformed_inputs(tmp_path):
    _write_dataset(tmp_path)
    text = (tmp_path / MANIFEST).read_text().splitlines()
    text[3] = text[3] + ","  # a stray comma
    (tmp_path / MANIFEST).write_text("\n".join(text))
    with pytest.raises(CaptureFormatError, match=r"manifest\.json:\d+: invalid JSON"):
        ShardDataset(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something-else", "shards": []}))
    with pytest.raises(CaptureFormatError, match="not a worldenv dataset manifest"):
        ShardDataset(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, rgb=np.zeros((1, 2, 4, 4, 3), np.uint8))
    with pytest.raises(CaptureFormatError, match=r"bad\.npz: missing arrays"):
        read_shard(bad)
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "shard-00000.npz").read_bytes()[:500])
    with pytest.raises(CaptureFormatError, match=r"cut\.npz: not a readable"):
        read_shard(cut)
    arrays, _ = read_shard(tmp_path / "shard-00001.npz")
    arrays["depth"] = arrays["depth"][:, :2]
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(CaptureFormatError, match=r"shape\.npz: array 'depth' has shape"):
        read_shard(tmp_path / "shape.npz")


def test_missing_paths_raise_file_not_found(tmp_path):
    for fmt in ("tum", "re10k", "kitti", "worldenv"):
        with pytest.raises(FileNotFoundError):
            load_scene(f"capture:{fmt}:{tmp_path / 'nope'}")


def test_reader_options_are_checked(tum_dir):
    with pytest.raises(ValueError, match="tum"):
        load_scene(f"capture:tum:{tum_dir}", frames_dir="x")
    assert math.isfinite(read_tum(tum_dir).timestamps[0])
