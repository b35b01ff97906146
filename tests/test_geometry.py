from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worldenv import geometry as G

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
vec3 = arrays(np.float64, (3,), elements=finite)
rotvec = arrays(np.float64, (3,), elements=st.floats(-3.0, 3.0, allow_nan=False))


def random_pose(rng: np.random.Generator) -> np.ndarray:
    return G.se3(G.axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 3)


@settings(max_examples=200, deadline=None)
@given(rotvec)
def test_axis_angle_round_trip(v):
    # Angles beyond pi come back as the equivalent rotation with angle <= pi.
    R = G.axis_angle_to_matrix(v)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(G.axis_angle_to_matrix(G.matrix_to_axis_angle(R)), R, atol=1e-9)
    if np.linalg.norm(v) < math.pi - 1e-6:
        np.testing.assert_allclose(G.matrix_to_axis_angle(R), v, atol=1e-8)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (4,), elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 1e-3))
def test_quaternion_round_trip(q):
    R = G.quat_to_matrix(q)
    q2 = G.matrix_to_quat(R)
    assert q2[3] >= 0
    qn = q / np.linalg.norm(q)
    # q and -q are the same rotation.
    assert min(np.abs(q2 - qn).max(), np.abs(q2 + qn).max()) < 1e-9


def test_quaternion_matches_axis_angle():
    # 90 degrees about z: q = (0, 0, sin45, cos45).
    s = math.sqrt(0.5)
    np.testing.assert_allclose(G.quat_to_matrix([0, 0, s, s]), G.rot_z(math.pi / 2), atol=1e-12)
    np.testing.assert_allclose(G.axis_angle_to_matrix([0, 0, math.pi / 2]), G.rot_z(math.pi / 2), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(rotvec, vec3)
def test_invert_and_compose(v, t):
    T = G.se3(G.axis_angle_to_matrix(v), t)
    np.testing.assert_allclose(G.compose(T, G.invert_se3(T)), np.eye(4), atol=1e-9)
    Tt = torch.from_numpy(T)
    np.testing.assert_allclose(G.invert_se3(Tt).numpy(), G.invert_se3(T), atol=1e-12)


def test_look_at_conventions():
    # An upright camera looking along +z is the identity rotation (x right, y down).
    T = G.look_at([0, 0, 0], [0, 0, 5])
    np.testing.assert_allclose(T, np.eye(4), atol=1e-12)
    T = G.look_at([1.0, -1.5, 2.0], [4.0, -1.0, -3.0])
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    # No roll: the camera x axis is horizontal.
    assert abs(R[1, 0]) < 1e-12
    # The target projects to the principal point.
    K = G.intrinsics_from_fov(64, 48, 70.0)
    uv, z = G.project(torch.tensor([[[4.0, -1.0, -3.0]]], dtype=torch.float64), torch.from_numpy(K)[None], torch.from_numpy(G.invert_se3(T))[None])
    np.testing.assert_allclose(uv[0, 0].numpy(), [K[0, 2], K[1, 2]], atol=1e-9)
    assert z.item() > 0
    with pytest.raises(ValueError, match="`target`"):
        G.look_at([0, 0, 0], [0, 0, 0])


def test_intrinsics_from_fov_and_resize():
    K = G.intrinsics_from_fov(128, 128, 90.0)
    assert K[0, 0] == pytest.approx(64.0) and K[0, 2] == 63.5
    assert G.fov_from_intrinsics(K, 128, 128) == pytest.approx((90.0, 90.0))
    # Resizing keeps the field of view and maps pixel edges onto pixel edges.
    K2 = G.resize_intrinsics(K, (128, 128), (64, 32))
    assert G.fov_from_intrinsics(K2, 32, 64) == pytest.approx((90.0, 90.0))
    assert K2[0, 2] == pytest.approx(15.5) and K2[1, 2] == pytest.approx(31.5)
    Kc = G.crop_intrinsics(K, top=10, left=20)
    assert (Kc[0, 2], Kc[1, 2]) == (43.5, 53.5)
    with pytest.raises(ValueError, match="`fov_deg`"):
        G.intrinsics_from_fov(64, 64, 180.0)
    with pytest.raises(ValueError, match="`width`"):
        G.intrinsics_from_fov(0, 64, 60.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_project_unproject_round_trip(seed):
    rng = np.random.default_rng(seed)
    B, H, W = 2, 5, 7
    depth = torch.from_numpy(rng.uniform(0.5, 20.0, size=(B, H, W)))
    K = torch.from_numpy(np.stack([G.intrinsics_from_fov(W, H, rng.uniform(30, 120)) for _ in range(B)]))
    c2w = torch.from_numpy(np.stack([random_pose(rng) for _ in range(B)]))
    pts = G.unproject(depth, K, c2w)
    uv, z = G.project(pts.reshape(B, -1, 3), K, G.invert_se3(c2w))
    torch.testing.assert_close(uv.reshape(B, H, W, 2), G.pixel_grid(H, W, dtype=torch.float64).expand(B, H, W, 2), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.reshape(B, H, W), depth, atol=1e-9, rtol=0)


def test_pixel_centre_convention():
    # A point on the optical axis lands on the principal point; pixel (i, j) has centre (u, v) = (j, i).
    K = torch.from_numpy(G.intrinsics_from_fov(4, 4, 90.0))[None]
    uv, _ = G.project(torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64), K)
    assert uv[0, 0].tolist() == [1.5, 1.5]
    assert G.pixel_grid(2, 3)[1, 2].tolist() == [2.0, 1.0]


def test_opengl_to_opencv():
    T = G.opengl_to_opencv(np.eye(4))
    np.testing.assert_array_equal(np.diag(T), [1, -1, -1, 1])


# ----------------------------------------------------------------- pose files


def poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([random_pose(rng) for _ in range(n)])


def test_tum_round_trip(tmp_path):
    P = poses(5)
    ts = np.arange(5) * 0.033 + 1305031102.175304
    G.write_tum_poses(tmp_path / "gt.txt", ts, P)
    ts2, P2 = G.read_tum_poses(tmp_path / "gt.txt")
    np.testing.assert_allclose(ts2, ts, atol=1e-6)
    np.testing.assert_allclose(P2, P, atol=1e-8)


def test_kitti_round_trip(tmp_path):
    P = poses(4, 1)
    G.write_kitti_poses(tmp_path / "00.txt", P)
    np.testing.assert_allclose(G.read_kitti_poses(tmp_path / "00.txt"), P, atol=1e-10)


@pytest.mark.parametrize("suffix", [".txt", ".npy"])
@pytest.mark.parametrize("convention", ["c2w", "w2c"])
def test_matrix_round_trip(tmp_path, suffix, convention):
    P = poses(3, 2)
    path = tmp_path / f"poses{suffix}"
    G.write_matrix_poses(path, P, convention)
    np.testing.assert_allclose(G.read_matrix_poses(path, convention), P, atol=1e-12)
    if convention == "w2c":
        np.testing.assert_allclose(G.read_matrix_poses(path, "c2w"), G.invert_se3(P), atol=1e-12)


def test_re10k_round_trip(tmp_path):
    P = poses(3, 3)
    K = G.intrinsics_from_fov(640, 360, 60.0)
    G.write_re10k_cameras(tmp_path / "cam.txt", [0, 33366, 66733], np.stack([K] * 3), (360, 640), P, url="https://example.invalid/v")
    ts, K2, P2, url = G.read_re10k_cameras(tmp_path / "cam.txt", image_size=(360, 640))
    assert ts.tolist() == [0, 33366, 66733] and url == "https://example.invalid/v"
    np.testing.assert_allclose(K2, np.stack([K] * 3), atol=1e-8)
    np.testing.assert_allclose(P2, P, atol=1e-9)
    _, norm, _, _ = G.read_re10k_cameras(tmp_path / "cam.txt")
    # Normalised principal point of a centred camera is 0.5.
    np.testing.assert_allclose(norm[:, 2:], 0.5, atol=1e-12)


@pytest.mark.parametrize(
    "reader, text, line, what",
    [
        (G.read_tum_poses, "# tum\n1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 1\n", 3, "expected 8 numbers"),
        (G.read_tum_poses, "1.0 0 0 0 0 0 0 1\n2.0 0 0 x 0 0 0 1\n", 2, "not a number"),
        (G.read_tum_poses, "1.0 0 0 0 0 0 0 0\n", 1, "zero quaternion"),
        (G.read_kitti_poses, "1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n", 2, "expected 12 numbers"),
        (G.read_kitti_poses, "2 0 0 0 0 1 0 0 0 0 1 0\n", 1, "not a rotation"),
        (G.read_kitti_poses, "1 0 0 nan 0 1 0 0 0 0 1 0\n", 1, "non-finite"),
        (lambda p: G.read_re10k_cameras(p), "url\n0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1\n", 2, "expected 19 numbers"),
        (lambda p: G.read_re10k_cameras(p), "url\n0 0 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n", 2, "focal lengths"),
        (G.read_matrix_poses, "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n1 0 0\n", 2, "expected 12 or 16"),
    ],
)
def test_malformed_pose_files_name_file_and_line(tmp_path, reader, text, line, what):
    path = tmp_path / "poses.txt"
    path.write_text(text)
    with pytest.raises(G.PoseFormatError, match=what) as e:
        reader(path)
    assert e.value.line == line
    assert str(e.value).startswith(f"{path}:{line}:")


def test_missing_pose_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        G.read_tum_poses(tmp_path / "nope.txt")


def test_bad_shapes_name_argument():
    with pytest.raises(ValueError, match="`R`"):
        G.se3(np.eye(2))
    with pytest.raises(ValueError, match="`c2w`"):
        G.write_kitti_poses("/tmp/x.txt", np.eye(3))
    with pytest.raises(ValueError, match="`c2w`"):
        G.write_kitti_poses("/tmp/x.txt", np.full((1, 4, 4), np.nan))
