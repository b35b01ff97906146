"""splat: native == reference bit for bit, z-buffer order, footprints, reprojection, errors, dispatch."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from conftest import pinhole, random_pose
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worldenv.kernels import DEFAULT_RADIUS_SCALE, PointMap, _backend, available_backends, fuse, splat

# The package attribute `splat` is the function; the module is reached by name.
splat_mod = importlib.import_module("worldenv.kernels.splat")


def random_scene(seed: int, B: int = 2, N: int = 3000, C: int = 3, H: int = 24, W: int = 32):
    """Points around the camera with many exact depth ties and every kind of footprint.

    Depths are quantised (ties), radii mix zero, sub-pixel, pixel-sized and
    clamped footprints, and a few points are invalid (NaN/inf/negative
    radius, behind the camera, non-finite positions).
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.round((torch.rand(B, N, generator=g) * 4 + 0.05) * 4) / 4  # steps of 0.25 m: ties
    z[:, : N // 20] = -z[:, : N // 20]  # behind the camera
    uv = torch.rand(B, N, 2, generator=g) * 1.4 - 0.2  # some outside the image
    f = 0.8 * W
    x = (uv[..., 0] * W - W / 2) / f * z
    y = (uv[..., 1] * H - H / 2) / f * z
    xyz = torch.stack([x, y, z], -1)
    xyz[0, 5:10] = torch.tensor([float("nan"), 0.0, 1.0])
    xyz[-1, 10:12, 0] = float("inf")
    kind = torch.randint(0, 4, (B, N), generator=g)
    scale = torch.tensor([0.0, 0.3, 1.2, 6.0])[kind]  # in pixels at the point's depth
    radius = scale * z.abs() / f * (0.5 + torch.rand(B, N, generator=g))
    radius[0, 20:25] = float("nan")
    radius[-1, 25:30] = -0.1
    feats = torch.randn(B, N, C, generator=g)
    counts = torch.randint(0, N + 1, (B,), generator=g)
    counts[0] = N
    c2w = random_pose(g, B, angle=0.05, shift=0.05)
    c2w[:, :3, 3] = 0.0  # keep the camera inside the points' frustum
    K = pinhole(f, H, W, B)
    return xyz, feats, radius, counts, c2w, K


def run(args, size, backend, **kw):
    return splat(*args, size, backend=backend, **kw)


def assert_same(a, b):
    for name, x, y in zip(("image", "depth", "mask"), a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x, y), f"{name}: {(x != y).sum().item()} elements differ"


# --- native == reference -------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("C", [1, 3, 7])
def test_native_matches_reference_bit_exact(native, seed, C):
    args = random_scene(seed, B=3, C=C)
    ref = run(args, (24, 32), "reference", max_radius_px=3.5)
    nat = run(args, (24, 32), "native", max_radius_px=3.5)
    assert_same(ref, nat)
    assert ref[2].float().mean() > 0.3  # the scene is not trivially empty


def test_native_matches_reference_with_empty_camera_and_float32_pose(native):
    xyz, feats, radius, counts, c2w, K = random_scene(11, B=3, N=2000)
    counts[1] = 0
    args = (xyz, feats, radius, counts, c2w.float(), K.float())
    ref = run(args, (31, 17), "reference")
    nat = run(args, (31, 17), "native")
    assert_same(ref, nat)
    assert not ref[2][1].any()
    assert torch.equal(ref[0][1], torch.zeros_like(ref[0][1])) and torch.equal(ref[1][1], torch.zeros_like(ref[1][1]))


def test_native_matches_reference_dense_many_points(native):
    # Many points per pixel, so nearly every pixel is decided by a depth tie
    # or a near-tie between hundreds of candidates.
    args = random_scene(5, B=1, N=200_000, C=2, H=40, W=40)
    assert_same(run(args, (40, 40), "reference"), run(args, (40, 40), "native"))


def test_native_is_deterministic_across_thread_counts(native, threads):
    assert native.max_threads() >= 1
    args = random_scene(3, B=2, N=100_000, H=48, W=48)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append(run(args, (48, 48), "native"))
    for r in results[1:]:
        assert_same(results[0], r)


# --- the z-buffer and footprint rule ---------------------------------------------


def single_camera(xyz, radius, feats=None, f=10.0, H=9, W=9):
    xyz = torch.tensor(xyz, dtype=torch.float32)[None]
    N = xyz.shape[1]
    radius = torch.tensor(radius, dtype=torch.float32)[None]
    feats = torch.arange(N, dtype=torch.float32)[None, :, None] if feats is None else feats
    return xyz, feats, radius, torch.tensor([N]), torch.eye(4)[None], pinhole(f, H, W)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_nearest_point_wins_regardless_of_order(native, backend):
    # Point 0 is farther than point 1 on the same ray: point 1 wins the centre.
    args = single_camera([[0, 0, 3.0], [0, 0, 2.0]], [0.0, 0.0])
    image, depth, mask = run(args, (9, 9), backend)
    assert mask.sum() == 1
    assert image[0, 4, 4, 0] == 1 and depth[0, 4, 4] == 2.0


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_depth_tie_goes_to_lower_index(native, backend):
    args = single_camera([[0.01, 0, 2.0], [0, 0.01, 2.0], [0, 0, 2.0]], [0.0, 0.0, 0.0])
    image, depth, mask = run(args, (9, 9), backend)
    assert mask.sum() == 1 and image[0, 4, 4, 0] == 0  # all three land on the centre pixel


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_footprint_is_the_projected_disc(native, backend):
    # z = 2, f = 10, r = 0.3 -> a disc of 1.5 px around the centre pixel (4, 4).
    args = single_camera([[0, 0, 2.0]], [0.3])
    _, depth, mask = run(args, (9, 9), backend)
    jj, ii = np.meshgrid(np.arange(9), np.arange(9))
    expected = ((jj - 4) / 1.5) ** 2 + ((ii - 4) / 1.5) ** 2 <= 1
    assert np.array_equal(mask[0].numpy(), expected)
    assert torch.all(depth[0][mask[0]] == 2.0)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_footprint_is_clamped_and_tiny_points_cover_their_nearest_pixel(native, backend):
    # r = 10 m at z = 2 m would be 50 px; the clamp keeps the disc at 2 px.
    args = single_camera([[0, 0, 2.0]], [10.0], f=10.0, H=41, W=41)
    _, _, mask = run(args, (41, 41), backend, max_radius_px=2.0)
    jj, ii = np.meshgrid(np.arange(41), np.arange(41))
    disc = ((jj - 20) / 2.0) ** 2 + ((ii - 20) / 2.0) ** 2 <= 1
    assert np.array_equal(mask[0].numpy(), disc)
    # Zero-radius points cover exactly their nearest pixel; halves round up:
    # u = 10 * 1 / 20 + 20 = 20.5 -> column 21, v = 10 * -0.99 / 20 + 20 = 19.505 -> row 20.
    args = single_camera([[1.0, -0.99, 20.0]], [0.0], f=10.0, H=41, W=41)
    _, _, mask = run(args, (41, 41), backend)
    assert mask[0].sum() == 1 and mask[0, 20, 21]


def test_large_image_addresses_every_pixel_exactly(native):
    # 8192 x 2100 pixels: cell offsets beyond 2**24, where a float offset would round.
    H, W, f = 8192, 2100, 1000.0
    pix = [(8000, 2001), (8191, 0), (8191, 2099), (5, 7)]  # (row, column)
    K = torch.tensor([[[f, 0.0, 0.0], [0.0, f, 0.0], [0.0, 0.0, 1.0]]])
    xyz = torch.tensor([[[j / f, i / f, 1.0] for i, j in pix]])
    args = (xyz, torch.ones(1, len(pix), 1), torch.zeros(1, len(pix)), torch.tensor([len(pix)]), torch.eye(4)[None], K)
    _, _, mask = splat(*args, (H, W), backend="native")
    assert mask.sum() == len(pix) and all(bool(mask[0, i, j]) for i, j in pix)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_points_behind_near_plane_or_invalid_are_skipped(native, backend):
    args = single_camera(
        [[0, 0, 0.005], [0, 0, -1.0], [float("nan"), 0, 1.0], [0, 0, 1.0], [0, 0, 1.5]],
        [0.0, 0.0, 0.0, float("inf"), -1.0],
    )
    _, _, mask = run(args, (9, 9), backend)
    assert not mask.any()


# --- fuse + splat: reprojection ---------------------------------------------------


def fuse_frame(rgb, depth, c2w, K, voxel_size, radius_scale=DEFAULT_RADIUS_SCALE, capacity=None):
    B, H, W, C = rgb.shape
    pm = PointMap.empty(B, capacity or H * W, C)
    fuse(pm, rgb, depth, c2w, K, voxel_size=voxel_size, radius_scale=radius_scale)
    return pm


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    H=st.integers(4, 40),
    W=st.integers(4, 40),
    fov_scale=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**31 - 1),
    identity=st.booleans(),
)
def test_identity_reprojection_reproduces_the_frame(H, W, fov_scale, seed, identity):
    """Fuse a frame, render it from the same camera: every pixel comes back.

    Condition (documented in worldenv.kernels.fuse): fx == fy, so a point's
    disc is ``radius_scale`` = 0.9 px in its own view and a neighbour's disc,
    one pixel away, never reaches this pixel's centre, whatever the depths;
    and the voxel is far smaller than the gap between two pixels' points
    (depth >= 0.5 m, 1 mm voxels), so no two pixels share a voxel. The depth
    map is arbitrary: independent random depths per pixel, so every pixel is
    a depth discontinuity. Colours come back bit for bit; depth is bit-exact
    for the identity pose, and otherwise within the float32 round trip
    through world coordinates (relative 2e-5).
    """
    g = torch.Generator().manual_seed(seed)
    f = fov_scale * max(H, W) / 2
    K = pinhole(f, H, W)
    c2w = torch.eye(4, dtype=torch.float64)[None] if identity else random_pose(g, angle=3.0, shift=2.0)
    depth = 0.5 + torch.rand(1, H, W, generator=g) * 4.5
    rgb = torch.rand(1, H, W, 3, generator=g)
    pm = fuse_frame(rgb, depth, c2w, K, voxel_size=1e-3)
    assert int(pm.count[0]) == H * W
    image, out_depth, mask = splat(pm.xyz, pm.feats, pm.radius, pm.count, c2w, K, (H, W))
    assert mask.all()
    assert torch.equal(image, rgb)
    if identity:
        assert torch.equal(out_depth, depth)  # the transform is exact for the identity pose
    else:
        torch.testing.assert_close(out_depth, depth, rtol=2e-5, atol=0.0)


def plane_frame(H=128, W=128, distance=2.0, seed=0):
    """A textured plane filling a 90-degree view at ``distance``: (rgb, depth, c2w, K)."""
    g = torch.Generator().manual_seed(seed)
    K = pinhole(W / 2, H, W)  # f = W / 2: 90 degrees horizontally
    depth = torch.full((1, H, W), distance)
    rgb = torch.rand(1, H, W, 3, generator=g)
    return rgb, depth, torch.eye(4, dtype=torch.float64)[None], K


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_moving_forward_opens_no_holes(native, backend):
    rgb, depth, c2w, K = plane_frame()
    pm = fuse_frame(rgb, depth, c2w, K, voxel_size=0.02)  # voxels < the 3.1 cm pixel footprint
    assert int(pm.count[0]) == 128 * 128
    moved = c2w.clone()
    moved[0, 2, 3] = 0.25  # 0.25 m toward the plane: the plane still fills the view
    _, out_depth, mask = splat(pm.xyz, pm.feats, pm.radius, pm.count, moved, K, (128, 128), backend=backend)
    holes = (~mask).float().mean().item()
    assert holes < 0.005, f"{holes:.2%} of the silhouette are holes"
    torch.testing.assert_close(out_depth[mask], torch.full_like(out_depth[mask], 1.75), rtol=1e-5, atol=0)


def test_small_footprints_do_open_holes_when_moving_forward(native):
    # The same scene with radius_scale 0.3 (discs too small to cover the grid):
    # the hole test above must be able to fail.
    rgb, depth, c2w, K = plane_frame()
    pm = fuse_frame(rgb, depth, c2w, K, voxel_size=0.02, radius_scale=0.3)
    moved = c2w.clone()
    moved[0, 2, 3] = 0.25
    _, _, mask = splat(pm.xyz, pm.feats, pm.radius, pm.count, moved, K, (128, 128))
    assert (~mask).float().mean().item() > 0.05


def test_moving_forward_on_a_tilted_plane_opens_no_holes(native):
    # A plane tilted by 30 degrees about the camera's x axis, 2 m ahead on the optical axis.
    H = W = 128
    K = pinhole(W / 2, H, W)
    g = torch.Generator().manual_seed(1)
    n = torch.tensor([0.0, np.sin(np.pi / 6), -np.cos(np.pi / 6)], dtype=torch.float64)  # faces the camera
    ii, jj = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rays = torch.stack([(jj - K[0, 0, 2]) / K[0, 0, 0], (ii - K[0, 1, 2]) / K[0, 1, 1], torch.ones_like(jj)], -1)
    depth = (2.0 * n[2] / (rays @ n)).float()[None]  # z where the ray meets the plane n.p = 2 n_z
    rgb = torch.rand(1, H, W, 3, generator=g)
    c2w = torch.eye(4, dtype=torch.float64)[None]
    pm = fuse_frame(rgb, depth, c2w, K, voxel_size=0.01)
    assert int(pm.count[0]) > 0.99 * H * W
    moved = c2w.clone()
    moved[0, 2, 3] = 0.25
    _, _, mask = splat(pm.xyz, pm.feats, pm.radius, pm.count, moved, K, (H, W))
    # Silhouette: pixels of the moved camera whose ray meets the fused patch.
    o = torch.tensor([0.0, 0.0, 0.25], dtype=torch.float64)
    t = (2.0 * n[2] - o @ n) / (rays @ n)
    hit = o + t[..., None] * rays  # world points seen by the moved camera
    u = hit[..., 0] / hit[..., 2] * K[0, 0, 0] + K[0, 0, 2]
    v = hit[..., 1] / hit[..., 2] * K[0, 1, 1] + K[0, 1, 2]
    inside = (t > 0) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    holes = (~mask[0] & inside).sum().item() / inside.sum().item()
    assert inside.float().mean() > 0.9
    assert holes < 0.005, f"{holes:.2%} of the silhouette are holes"


# --- errors ---------------------------------------------------------------------


def good_args():
    xyz, feats, radius, counts, c2w, K = random_scene(0, B=2, N=50)
    return dict(xyz=xyz, feats=feats, radius=radius, counts=counts, c2w=c2w, K=K, size=(8, 8))


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(xyz=torch.zeros(2, 50, 4)), ValueError, "Expect `xyz` to have shape (2, 50, 3), actually: (2, 50, 4)"),
        (dict(feats=torch.zeros(2, 49, 3)), ValueError, "Expect `feats` to have shape (2, 50, *), actually: (2, 49, 3)"),
        (dict(feats=torch.zeros(2, 50, 0)), ValueError, "at least one channel"),
        (dict(radius=torch.zeros(2, 50, dtype=torch.float64)), TypeError, "Expect `radius` to have dtype torch.float32"),
        (dict(counts=torch.tensor([50, 51])), ValueError, "Expect `counts` in [0, 50]"),
        (dict(counts=torch.tensor([1, 2], dtype=torch.int32)), TypeError, "`counts`"),
        (dict(c2w=torch.full((2, 4, 4), float("nan"))), ValueError, "Expect `c2w` to be finite"),
        (dict(c2w=torch.zeros(2, 4, 4)), ValueError, "invertible"),
        (dict(K=torch.zeros(2, 3, 3)), ValueError, "non-zero focal"),
        (dict(K=pinhole(-5.0, 8, 8, 2)), ValueError, "positive focal"),
        (dict(K=pinhole(5.0, 8, 8, 2).index_put_((torch.tensor(0), torch.tensor(0), torch.tensor(1)), torch.tensor(0.5, dtype=torch.float64))), ValueError, "no skew"),
        (dict(size=(0, 8)), ValueError, "Expect `size` to have sides in [1, 8192]"),
        (dict(size=(8, 100_000)), ValueError, "Expect `size` to have sides"),
        (dict(size="8x8"), TypeError, "`size`"),
        (dict(xyz=np.zeros((2, 50, 3), np.float32)), TypeError, "Expect `xyz` to be a torch.Tensor, actually: ndarray"),
        (dict(feats=torch.zeros(2, 50, 3, device="meta")), ValueError, "Expect `feats` on device cpu, actually: meta"),
    ],
)
def test_bad_input_names_the_argument(change, error, message):
    kw = good_args()
    kw.update(change)
    with pytest.raises(error) as e:
        splat(**kw)
    assert message in str(e.value)


@pytest.mark.parametrize("kw, message", [(dict(near=0.0), "`near`"), (dict(max_radius_px=0.25), "`max_radius_px`"), (dict(backend="gpu"), "`backend`")])
def test_bad_scalar_options(kw, message):
    with pytest.raises(ValueError, match=message):
        splat(**good_args(), **kw)


def test_binding_rejects_inconsistent_sizes(native):
    xyz = np.zeros((2, 10, 3), np.float32)
    feats = np.zeros((2, 10, 3), np.float32)
    radius = np.zeros((2, 9), np.float32)  # inconsistent N
    counts = np.array([10, 10], np.int64)
    w2c = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    K = np.tile(np.eye(3, dtype=np.float32), (2, 1, 1))
    out = (np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match=r"splat: Expect `radius` to have shape \(2, 10\), actually: \(2, 9\)"):
        native.splat(xyz, feats, radius, counts, w2c, K, 0.01, 8.0, *out)
    with pytest.raises(ValueError, match="counts"):
        native.splat(xyz, feats, radius[:, :1].repeat(10, 1), np.array([10, 11], np.int64), w2c, K, 0.01, 8.0, *out)
    with pytest.raises(TypeError):  # float64 is refused, not silently copied
        native.splat(xyz.astype(np.float64), feats, np.zeros((2, 10), np.float32), counts, w2c, K, 0.01, 8.0, *out)


# --- dispatch ----------------------------------------------------------------------


def test_available_backends_lists_what_runs(native):
    names = available_backends()
    assert names[0] == "reference" and "native" in names
    assert ("cuda" in names) == (_backend.load_cupy() is not None)


def test_environment_variable_forces_a_backend(native, monkeypatch):
    args = random_scene(1, B=1, N=500)
    calls = []
    real = splat_mod.splat_reference
    monkeypatch.setattr(splat_mod, "splat_reference", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("WORLDENV_BACKEND", "reference")
    splat(*args, (8, 8))
    assert calls == [1]
    monkeypatch.setenv("WORLDENV_BACKEND", "native")
    splat(*args, (8, 8))
    assert calls == [1]
    splat(*args, (8, 8), backend="reference")  # the keyword wins over the variable
    assert calls == [1, 1]
    monkeypatch.setenv("WORLDENV_BACKEND", "opengl")
    with pytest.raises(ValueError, match="WORLDENV_BACKEND"):
        splat(*args, (8, 8))


def test_cuda_on_cpu_tensors_warns_once_and_falls_back(native, monkeypatch):
    args = random_scene(2, B=1, N=500)
    expected = splat(*args, (8, 8), backend="native")
    monkeypatch.setenv("WORLDENV_BACKEND", "cuda")
    with pytest.warns(RuntimeWarning, match="cuda backend needs CUDA tensors"):
        got = splat(*args, (8, 8))
    assert_same(expected, got)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splat(*args, (8, 8))  # no second warning


def test_missing_extension_warns_once_and_uses_the_reference(monkeypatch):
    args = random_scene(4, B=1, N=500)
    expected = splat(*args, (8, 8), backend="reference")
    monkeypatch.setattr(_backend, "load_native", lambda: None)
    with pytest.warns(RuntimeWarning, match="not built"):
        got = splat(*args, (8, 8))
    assert_same(expected, got)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splat(*args, (8, 8))
    assert "native" not in available_backends()
