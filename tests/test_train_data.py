"""Training clips: conditions come from the environment's SpatialMemory path; the split is by scene seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldenv.memory import SpatialMemory
from worldenv.train.data import (
    HELDOUT_SEED_START,
    Clip,
    ClipCache,
    ClipConfig,
    clip_batch,
    is_heldout,
    memory_conditions,
    write_clip_cache,
)


def plane_sequence(L: int = 5, size: int = 32, seed: int = 0):
    """Frames of a textured fronto-parallel wall at 2 m, the camera sliding right 50 cm (4 px) per frame."""
    rng = np.random.default_rng(seed)
    f = size / 2.0
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], np.float64)
    c2w = np.repeat(np.eye(4)[None], L, 0)
    c2w[:, 0, 3] = 0.5 * np.arange(L)
    rgb = rng.integers(0, 256, size=(L, size, size, 3), dtype=np.uint8)
    depth = np.full((L, size, size), 2.0, np.float32)
    return rgb, depth, c2w, K


def test_condition_equals_memory_render_after_fusing_earlier_frames():
    rgb, depth, c2w, K = plane_sequence()
    wr, wd, wm = memory_conditions(rgb, depth, c2w, K, range(2, 5), capacity=2**14)
    Kt = torch.from_numpy(K)[None]
    for j, i in enumerate(range(2, 5)):
        mem = SpatialMemory(1, capacity=2**14)
        for k in range(i):  # the reference (0) and every frame before the target
            mem.fuse(torch.from_numpy(rgb[k])[None], torch.from_numpy(depth[k])[None], torch.from_numpy(c2w[k])[None], Kt)
        er, ed, em = mem.render(torch.from_numpy(c2w[i])[None], Kt, 32)
        np.testing.assert_array_equal(wm[j], em[0].numpy())
        np.testing.assert_allclose(wd[j], ed[0].numpy(), atol=0)
        np.testing.assert_array_equal(wr[j], (er[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())


def test_condition_does_not_see_the_target_frame():
    rgb, depth, c2w, K = plane_sequence()
    rgb2 = rgb.copy()
    rgb2[3] = 255 - rgb2[3]  # change the target frame only
    a = memory_conditions(rgb, depth, c2w, K, range(3, 4))
    b = memory_conditions(rgb2, depth, c2w, K, range(3, 4))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # the camera slid right: the right edge of the new view was never seen -> holes there
    assert not a[2][0][:, -1].any() and a[2][0].mean() > 0.5


def test_bad_targets_raise():
    rgb, depth, c2w, K = plane_sequence()
    with pytest.raises(ValueError, match="targets"):
        memory_conditions(rgb, depth, c2w, K, range(0, 2))


def test_split_by_scene_seed():
    assert not is_heldout(HELDOUT_SEED_START - 1) and is_heldout(HELDOUT_SEED_START)
    with pytest.raises(ValueError, match="held out"):
        ClipConfig(num_scenes=HELDOUT_SEED_START + 1)


def _clip(seed: int, T: int = 3) -> Clip:
    rgb, depth, c2w, K = plane_sequence(T + 1, seed=seed)
    wr, wd, wm = memory_conditions(rgb, depth, c2w, K, range(1, T + 1))
    return Clip(rgb[0], depth[0], c2w[0], K, rgb[1:], depth[1:], c2w[1:], wr, wd, wm, scene_seed=seed)


def test_cache_round_trip_and_refuses_heldout(tmp_path):
    clips = [_clip(s) for s in range(3)]
    p = write_clip_cache(tmp_path / "c.npz", clips)
    cache = ClipCache([str(p)])
    assert len(cache) == 3
    got = cache.clip(1)
    np.testing.assert_array_equal(got.warp_mask, clips[1].warp_mask)
    np.testing.assert_array_equal(got.rgb, clips[1].rgb)
    b = clip_batch([cache.clip(0), cache.clip(2)])
    assert b["rgb"].shape == (2, 3, 32, 32, 3) and b["warp_mask"].dtype == torch.bool
    bad = write_clip_cache(tmp_path / "bad.npz", [_clip(HELDOUT_SEED_START)])
    with pytest.raises(ValueError, match="held-out"):
        ClipCache([str(bad)])
