"""fuse: native == reference, the phased insertion and CLOCK rule, bounds, masks, errors."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from conftest import pinhole, random_pose

from worldenv.kernels import PointMap, _backend, fuse

fuse_mod = importlib.import_module("worldenv.kernels.fuse")  # the package attribute is the function


def random_frames(seed: int, n: int, B: int = 2, H: int = 20, W: int = 24, C: int = 3):
    """Frames of a camera wandering in a small room: overlapping views, holes, invalid depth."""
    g = torch.Generator().manual_seed(seed)
    K = pinhole(0.7 * W, H, W, B)
    out = []
    for _ in range(n):
        depth = 1.0 + torch.rand(B, H, W, generator=g) * 2.0
        depth[torch.rand(B, H, W, generator=g) < 0.1] = 0.0
        depth[torch.rand(B, H, W, generator=g) < 0.02] = float("nan")
        feats = torch.rand(B, H, W, C, generator=g)
        c2w = random_pose(g, B, angle=0.6, shift=0.4)
        out.append((feats, depth, c2w, K))
    return out


def by_key(pm: PointMap, b: int) -> dict[str, torch.Tensor]:
    """Stream b's voxels sorted by key: the map as a set, independent of slot order."""
    n = int(pm.count[b])
    order = torch.argsort(pm.slot_key[b, :n])
    return {
        "key": pm.slot_key[b, :n][order],
        "xyz": pm.xyz[b, :n][order],
        "feats": pm.feats[b, :n][order],
        "radius": pm.radius[b, :n][order],
        "stamp": pm.stamp[b, :n][order],
    }


def check_consistent(pm: PointMap) -> None:
    """Every slot's key is in the hash, pointing back at the slot, and nothing else is."""
    for b in range(pm.batch_size):
        n = int(pm.count[b])
        keys = pm.slot_key[b, :n]
        assert keys.unique().numel() == n and bool((keys >= 0).all())
        table = pm.hash_keys[b]
        live = table >= 0
        assert int(live.sum()) == n
        slot_of = dict(zip(table[live].tolist(), pm.hash_vals[b][live].tolist()))
        assert all(slot_of[k] == s for s, k in enumerate(keys.tolist()))


@pytest.mark.parametrize("seed, capacity", [(0, 5000), (1, 700), (2, 97)])
def test_native_matches_reference_over_many_frames(native, seed, capacity):
    frames = random_frames(seed, 10)
    maps = {be: PointMap.empty(2, capacity, 3) for be in ("reference", "native")}
    for i, (feats, depth, c2w, K) in enumerate(frames):
        mask = torch.tensor([True, i % 3 != 1])
        for be, pm in maps.items():
            fuse(pm, feats, depth, c2w, K, voxel_size=0.05, batch_mask=mask, backend=be)
    ref, nat = maps["reference"], maps["native"]
    for b in range(2):  # the same voxels with the same contents, as sets ...
        r, n = by_key(ref, b), by_key(nat, b)
        for name in r:
            assert torch.equal(r[name], n[name]), name
    for name, t in ref.tensors().items():  # ... and in fact the same state, slot for slot
        assert torch.equal(t, nat.tensors()[name]), name
    check_consistent(nat)
    if capacity < 1000:
        assert bool((nat.count == capacity).all())  # eviction was active


def test_native_is_deterministic_across_thread_counts(native, threads):
    # 4 x 192 x 192 pixels: large enough for the parallel unprojection and
    # the parallel per-stream insertion.
    frames = random_frames(7, 3, B=4, H=192, W=192)
    results = []
    for n in (1, 2, 3):
        threads(n)
        pm = PointMap.empty(4, 50_000, 3)
        for feats, depth, c2w, K in frames:
            fuse(pm, feats, depth, c2w, K, voxel_size=0.02)
        results.append(pm)
    for pm in results[1:]:
        for name, t in results[0].tensors().items():
            assert torch.equal(t, pm.tensors()[name]), name


def line_frame(observed: list[int], W: int = 8, colour: float = 0.0):
    """A 1 x W frame whose pixel j, when observed, is the point (j, 0, 1): voxel j at voxel size 0.5."""
    depth = torch.zeros(1, 1, W)
    depth[0, 0, observed] = 1.0
    feats = torch.full((1, 1, W, 1), colour)
    K = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    return feats, depth, torch.eye(4)[None], K


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_clock_gives_a_second_chance(native, backend):
    pm = PointMap.empty(1, 4, 1)

    def step(observed):
        fuse(pm, *line_frame(observed), voxel_size=0.5, backend=backend)

    def voxel(j):  # pixel j is the point (j, 0, 1): voxel (2j, 0, 2) at 0.5 m
        return ((2 * j + 2**20) << 42) | ((2**20) << 21) | (2 + 2**20)

    step([0, 1, 2, 3])  # A B C D fill slots 0..3 in order of their pixels
    assert pm.slot_key[0].tolist() == [voxel(0), voxel(1), voxel(2), voxel(3)]
    # Re-observe A and add E: every ref bit is set, so the hand clears all four
    # and comes back to slot 0 (A), whose bit it has just cleared: A goes.
    step([0, 4])
    assert pm.slot_key[0].tolist() == [voxel(4), voxel(1), voxel(2), voxel(3)]
    assert int(pm.hand[0]) == 1
    step([5])  # B (slot 1) has ref 0 now: evicted at once
    assert pm.slot_key[0].tolist() == [voxel(4), voxel(5), voxel(2), voxel(3)]
    # C is observed again (ref 1) and gets a second chance; D (ref 0) goes.
    step([2, 6])
    assert pm.slot_key[0].tolist() == [voxel(4), voxel(5), voxel(2), voxel(6)]
    assert pm.ref[0].tolist() == [1, 1, 0, 1] and int(pm.hand[0]) == 0
    assert pm.stamp[0].tolist() == [1, 2, 3, 3] and int(pm.frame[0]) == 4
    check_consistent(pm)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_first_pixel_wins_then_later_frames_overwrite(native, backend):
    # Both pixels land in one 10 m voxel: the first in raster order wins.
    pm = PointMap.empty(1, 8, 1)
    feats = torch.tensor([[[[0.25], [0.75]]]])
    depth = torch.ones(1, 1, 2)
    K = line_frame([])[3]  # pixels 0 and 1 at x = 0 m and 1 m
    fuse(pm, feats, depth, torch.eye(4)[None], K, voxel_size=10.0, backend=backend)
    assert int(pm.count[0]) == 1 and pm.feats[0, 0, 0] == 0.25
    assert int(pm.stamp[0, 0]) == 0
    fuse(pm, feats.flip(2), depth, torch.eye(4)[None], K, voxel_size=10.0, backend=backend)
    assert int(pm.count[0]) == 1 and pm.feats[0, 0, 0] == 0.75  # overwritten by the new first pixel
    assert int(pm.stamp[0, 0]) == 1 and int(pm.ref[0, 0]) == 1


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_capacity_bounds_the_map_over_many_frames(native, backend):
    pm = PointMap.empty(2, 300, 3)
    for feats, depth, c2w, K in random_frames(3, 25 if backend == "native" else 8):
        fuse(pm, feats, depth, c2w, K, voxel_size=0.02, backend=backend)
        assert bool((pm.count <= 300).all())
    assert bool((pm.count == 300).all())
    check_consistent(pm)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_only_masked_streams_change(native, backend):
    frames = random_frames(4, 2, B=3)
    pm = PointMap.empty(3, 2000, 3)
    fuse(pm, *frames[0], voxel_size=0.05, backend=backend)
    before = pm.clone()
    fuse(pm, *frames[1], voxel_size=0.05, batch_mask=torch.tensor([False, True, False]), backend=backend)
    for name, t in pm.tensors().items():
        assert torch.equal(t[0], before.tensors()[name][0]), name
        assert torch.equal(t[2], before.tensors()[name][2]), name
    assert pm.frame.tolist() == [1, 2, 1]
    assert not torch.equal(pm.xyz[1], before.xyz[1])


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_points_outside_the_key_range_are_skipped(native, backend):
    pm = PointMap.empty(1, 16, 1)
    c2w = torch.eye(4, dtype=torch.float64)[None]
    c2w[0, 0, 3] = 5e4  # 50 km: beyond 2**20 voxels of 1 cm
    feats, depth, _, K = line_frame([0, 1, 2])
    fuse(pm, feats, depth, c2w, K, voxel_size=0.01, backend=backend)
    assert int(pm.count[0]) == 0 and int(pm.frame[0]) == 1
    fuse(pm, feats, depth, c2w, K, voxel_size=0.1, backend=backend)  # 5e5 voxels: in range
    assert int(pm.count[0]) == 3


def test_reset_empties_only_the_chosen_streams():
    pm = PointMap.empty(2, 100, 3)
    fuse(pm, *random_frames(5, 1)[0], voxel_size=0.05, backend="reference")
    kept = pm.clone()
    pm.reset(torch.tensor([True, False]))
    assert int(pm.count[0]) == 0 and int(pm.frame[0]) == 0 and bool((pm.hash_keys[0] == -1).all())
    for name, t in pm.tensors().items():
        assert torch.equal(t[1], kept.tensors()[name][1]), name


# --- errors and dispatch -----------------------------------------------------------


def good(B=2, H=6, W=5, C=3):
    pm = PointMap.empty(B, 64, C)
    return pm, dict(feats_img=torch.rand(B, H, W, C), depth=torch.ones(B, H, W), c2w=torch.eye(4).repeat(B, 1, 1), K=pinhole(4.0, H, W, B))


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(feats_img=torch.rand(2, 6, 5, 4)), ValueError, "Expect `feats_img` to have shape (2, 6, 5, 3), actually: (2, 6, 5, 4)"),
        (dict(depth=torch.ones(6, 5)), ValueError, "Expect `depth` to have shape (2, 6, 5), actually: (6, 5)"),
        (dict(depth=torch.ones(2, 6, 5, dtype=torch.float64)), TypeError, "Expect `depth` to have dtype torch.float32"),
        (dict(c2w=torch.full((2, 4, 4), float("inf"))), ValueError, "Expect `c2w` to be finite"),
        (dict(K=torch.zeros(2, 3, 3)), ValueError, "non-zero focal"),
        (dict(batch_mask=torch.ones(2)), TypeError, "Expect `batch_mask` to have dtype torch.bool"),
        (dict(batch_mask=torch.ones(3, dtype=torch.bool)), ValueError, "Expect `batch_mask` to have shape (2,)"),
        (dict(voxel_size=0.0), ValueError, "Expect `voxel_size` to be finite and positive"),
        (dict(voxel_size=1e-50), ValueError, "finite, non-zero float32 inverse"),
        (dict(voxel_size=1e50), ValueError, "finite, non-zero float32 inverse"),
        (dict(radius_scale=float("nan")), ValueError, "`radius_scale`"),
        (dict(backend="tpu"), ValueError, "`backend`"),
    ],
)
def test_bad_input_names_the_argument(change, error, message):
    pm, kw = good()
    kw = dict(kw, voxel_size=0.05)
    kw.update(change)
    with pytest.raises(error) as e:
        fuse(pm, **kw)
    assert message in str(e.value)


def test_not_a_pointmap_and_bad_sizes():
    _, kw = good()
    with pytest.raises(TypeError, match="Expect `pointmap` to be a PointMap, actually: dict"):
        fuse({}, **kw, voxel_size=0.05)
    with pytest.raises(ValueError, match=r"Expect `capacity` in \[1, 1073741824\], actually: 0"):
        PointMap.empty(1, 0, 3)
    with pytest.raises(TypeError, match="Expect `feature_dim` to be an int"):
        PointMap.empty(1, 8, 3.0)


def test_binding_rejects_an_inconsistent_map(native):
    pm, kw = good()
    arrays = [t.numpy() for t in pm.tensors().values()]
    arrays[6] = np.full((2, 100), -1, np.int64)  # hash_keys: not a power of two
    arrays[7] = np.full((2, 100), -1, np.int32)
    frame = [kw["feats_img"].numpy(), kw["depth"].numpy(), kw["c2w"].numpy(), kw["K"].float().numpy()]
    extra = [np.ones(2, np.float32), np.ones(2, bool), 20.0, 0.0]
    with pytest.raises(ValueError, match="power-of-two size >= 2 \\* capacity"):
        native.fuse(*arrays, *frame, *extra)
    arrays = [t.numpy() for t in pm.tensors().values()]
    with pytest.raises(ValueError, match=r"fuse: Expect `depth` to have shape \(2, 6, 5\), actually: \(2, 5, 6\)"):
        native.fuse(*arrays, frame[0], np.ones((2, 5, 6), np.float32), *frame[2:], *extra)


def test_missing_extension_warns_once_and_uses_the_reference(monkeypatch):
    frames = random_frames(6, 2)
    expected = PointMap.empty(2, 500, 3)
    for fr in frames:
        fuse(expected, *fr, voxel_size=0.05, backend="reference")
    monkeypatch.setattr(_backend, "load_native", lambda: None)
    pm = PointMap.empty(2, 500, 3)
    with pytest.warns(RuntimeWarning, match="not built"):
        fuse(pm, *frames[0], voxel_size=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fuse(pm, *frames[1], voxel_size=0.05)
    for name, t in expected.tensors().items():
        assert torch.equal(t, pm.tensors()[name]), name


def test_environment_variable_selects_the_reference(native, monkeypatch):
    calls = []
    real = fuse_mod.fuse_reference
    monkeypatch.setattr(fuse_mod, "fuse_reference", lambda *a: calls.append(1) or real(*a))
    pm, kw = good()
    monkeypatch.setenv("WORLDENV_BACKEND", "reference")
    fuse(pm, **kw, voxel_size=0.05)
    monkeypatch.setenv("WORLDENV_BACKEND", "native")
    fuse(pm, **kw, voxel_size=0.05)
    assert calls == [1]


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_a_near_wall_renders_back_closed(native, backend):
    # 128 px at 90 degrees, a wall 0.45 m away: a 3.5 mm pixel footprint, so each
    # 2 cm voxel keeps one of ~30 pixels. Its point must stand for the whole voxel.
    from worldenv.kernels import splat

    H = W = 128
    K = pinhole(W / 2, H, W)
    depth = torch.full((1, H, W), 0.45)
    feats = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(0))
    pm = PointMap.empty(1, 2**14, 3)
    fuse(pm, feats, depth, torch.eye(4)[None], K, voxel_size=0.02, backend=backend)
    assert bool((pm.radius[0, : int(pm.count[0])] >= np.float32(0.9 * 0.02)).all())
    _, _, mask = splat(pm.xyz, pm.feats, pm.radius, pm.count, torch.eye(4)[None], K, (H, W))
    assert mask.float().mean().item() > 0.99
    # The control: with the floor gone (radius_scale 0 keeps only the footprint term, also 0),
    # the same map renders almost empty, so the assertion above can fail.
    fuse(pm, feats, depth, torch.eye(4)[None], K, voxel_size=0.02, radius_scale=0.0, backend=backend)
    _, _, mask = splat(pm.xyz, pm.feats, pm.radius, pm.count, torch.eye(4)[None], K, (H, W))
    assert mask.float().mean().item() < 0.5


def test_native_matches_reference_where_voxels_are_wider_than_pixels(native):
    # Near surfaces at a fine pixel scale: the radius floor decides most radii.
    frames = random_frames(7, 4)
    ref, nat = PointMap.empty(2, 4000, 3), PointMap.empty(2, 4000, 3)
    for feats, depth, c2w, K in frames:
        fuse(ref, feats, depth * 0.05, c2w, K, voxel_size=0.01, backend="reference")
        fuse(nat, feats, depth * 0.05, c2w, K, voxel_size=0.01, backend="native")
    floor = np.float32(0.9 * 0.01)
    assert bool((ref.radius[ref.slot_key >= 0] == floor).float().mean() > 0.5)
    for name, t in ref.tensors().items():
        assert torch.equal(t, nat.tensors()[name]), name


def _wall_view(H: int = 16, W: int = 16, depth: float = 2.0):
    K = pinhole(W / 2, H, W, 1).float()
    return torch.full((1, H, W), depth), torch.eye(4)[None], K


def test_touch_sets_reference_bits_of_voxels_in_view_and_nothing_else():
    from worldenv.kernels import touch

    depth, c2w, K = _wall_view()
    pm = PointMap.empty(1, 1024, 3)
    fuse(pm, torch.rand(1, 16, 16, 3), depth, c2w, K, voxel_size=1e-3)
    pm.ref.zero_()
    before = {k: v.clone() for k, v in pm.tensors().items()}
    half = depth.clone()
    half[..., 8:] = 0  # only the left half is in view
    touch(pm, half, c2w, K, voxel_size=1e-3)
    after = pm.tensors()
    for name in before:
        if name != "ref":
            assert torch.equal(after[name], before[name]), name
    assert int(pm.ref.sum()) == 16 * 8
    touch(pm, depth * 1.5, c2w, K, voxel_size=1e-3)  # a view of nothing in the map touches nothing
    assert int(pm.ref.sum()) == 16 * 8


@pytest.mark.parametrize("touched", [True, False])
def test_touched_voxels_outlive_untouched_ones_under_the_clock(touched):
    from worldenv.kernels import touch

    depth, c2w, K = _wall_view()
    left, right = depth.clone(), depth.clone()
    left[..., 8:] = 0
    right[..., :8] = 0
    pm = PointMap.empty(1, 16 * 16, 3)  # exactly the two halves
    feats = torch.rand(1, 16, 16, 3)
    fuse(pm, feats, left, c2w, K, voxel_size=1e-3)  # frame 0: slots 0..127
    fuse(pm, feats, right, c2w, K, voxel_size=1e-3)  # frame 1: slots 128..255, the map is full
    far = torch.zeros_like(depth)
    far[..., 0, :4] = 5.0
    fuse(pm, feats, far, c2w, K, voxel_size=1e-3)  # 4 new voxels: the hand clears every bit, evicts 4 of frame 0
    if touched:
        touch(pm, left, c2w, K, voxel_size=1e-3)  # the left half is in view again
    far2 = torch.zeros_like(depth)
    far2[..., 1, :4] = 6.0
    fuse(pm, feats, far2, c2w, K, voxel_size=1e-3)  # 4 more new voxels
    kept = [int((pm.stamp[0] == f).sum()) for f in (0, 1)]
    assert kept == ([124, 124] if touched else [120, 128])


@pytest.mark.skipif("native" not in _backend.available_backends(), reason="needs the native extension")
def test_touch_native_matches_reference():
    from worldenv.kernels import touch

    frames = random_frames(7, 4, B=3)
    pm = PointMap.empty(3, 200, 3)  # small: the map fills and evicts
    for rgb, depth, c2w, K in frames[:3]:
        fuse(pm, rgb, depth, c2w, K, voxel_size=0.05)
    pm.ref.zero_()
    other = PointMap(**{k: v.clone() for k, v in pm.tensors().items()})
    _, depth, c2w, K = frames[3]
    depth = depth.clone()
    depth[0, 0, 0] = float("nan")
    mask = torch.tensor([True, False, True])
    touch(pm, depth, c2w, K, voxel_size=0.05, batch_mask=mask, backend="native")
    touch(other, depth, c2w, K, voxel_size=0.05, batch_mask=mask, backend="reference")
    assert torch.equal(pm.ref, other.ref)
    assert int(pm.ref[0].sum()) > 0 and int(pm.ref[1].sum()) == 0
