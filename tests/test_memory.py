"""SpatialMemory: state round trip, per-stream reset and masks, bounded size, argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import pinhole, random_pose

from worldenv.memory import MemoryConfig, SpatialMemory

H = W = 32


def frames(seed: int, n: int, B: int = 2):
    """n RGB-D frames (uint8 RGB) of cameras wandering in front of a bumpy wall."""
    g = torch.Generator().manual_seed(seed)
    K = pinhole(W / 2, H, W, B)
    out = []
    for _ in range(n):
        rgb = torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=g)
        depth = 1.5 + 0.5 * torch.rand(B, H, W, generator=g)
        c2w = random_pose(g, B, angle=0.4, shift=0.5)
        out.append((rgb, depth, c2w, K))
    return out


def filled(B: int = 2, n: int = 3, **kw) -> SpatialMemory:
    mem = SpatialMemory(batch_size=B, capacity=kw.pop("capacity", 4096), **kw)
    for fr in frames(0, n, B):
        mem.fuse(*fr)
    return mem


def assert_renders_equal(a: SpatialMemory, b: SpatialMemory, c2w, K) -> None:
    for x, y in zip(a.render(c2w, K, (H, W)), b.render(c2w, K, (H, W))):
        assert torch.equal(x, y)


def test_render_shows_what_was_fused():
    rgb, depth, c2w, K = frames(1, 1, B=1)[0]
    mem = SpatialMemory(capacity=H * W, voxel_size=1e-3)
    mem.fuse(rgb, depth, c2w, K)
    out_rgb, out_depth, mask = mem.render(c2w, K, (H, W))
    assert out_rgb.dtype == torch.float32 and out_rgb.shape == (1, H, W, 3)
    assert mask.all()
    assert torch.equal(out_rgb, rgb.float() / 255.0)
    torch.testing.assert_close(out_depth, depth, rtol=2e-5, atol=0.0)


def test_float_rgb_is_taken_as_is():
    rgb, depth, c2w, K = frames(2, 1, B=1)[0]
    a = SpatialMemory(capacity=2048)
    b = SpatialMemory(capacity=2048)
    a.fuse(rgb, depth, c2w, K)
    b.fuse(rgb.double() / 255.0, depth, c2w.numpy(), K.numpy())  # NumPy poses are accepted too
    assert_renders_equal(a, b, c2w, K)


def test_fuse_pixels_selects_what_becomes_points():
    rgb, depth, c2w, K = frames(3, 1, B=1)[0]
    left = torch.zeros(1, H, W, dtype=torch.bool)
    left[..., : W // 2] = True
    a = SpatialMemory(capacity=H * W, voxel_size=1e-3)
    a.fuse(rgb, depth, c2w, K, pixels=left)
    b = SpatialMemory(capacity=H * W, voxel_size=1e-3)
    b.fuse(rgb, torch.where(left, depth, torch.zeros_like(depth)), c2w, K)  # the same as unknown depth there
    assert a.num_points.tolist() == [H * W // 2]
    assert_renders_equal(a, b, c2w, K)


def test_fuse_generated_keeps_what_the_memory_had_and_fills_its_holes():
    rgb, depth, c2w, K = frames(4, 1, B=1)[0]
    seen = torch.zeros(1, H, W, dtype=torch.bool)
    seen[:, : H // 2] = True  # the reference saw the top half
    mem = SpatialMemory(capacity=H * W, voxel_size=1e-3)
    mem.fuse(rgb, depth, c2w, K, pixels=seen)
    before_rgb, _, warp_mask = mem.render(c2w, K, (H, W))
    assert torch.equal(warp_mask, seen)
    # A generated frame at the same pose: other colours and slightly nearer surfaces everywhere.
    gen_rgb, gen_depth = 255 - rgb, depth * 0.97
    mem.fuse_generated(gen_rgb, gen_depth, c2w, K, warp_mask)
    after_rgb, after_depth, mask = mem.render(c2w, K, (H, W))
    assert mask.all(), "the holes are filled"
    assert torch.equal(after_rgb[seen], before_rgb[seen]), "the seen half is not overwritten nor occluded"
    assert torch.equal(after_rgb[~seen], gen_rgb[~seen].float() / 255.0)
    # Control: fusing every pixel puts the nearer generated points in front of the seen half.
    every = SpatialMemory(capacity=H * W, voxel_size=1e-3)
    every.fuse(rgb, depth, c2w, K, pixels=seen)
    every.fuse(gen_rgb, gen_depth, c2w, K)
    assert not torch.equal(every.render(c2w, K, (H, W))[0][seen], before_rgb[seen])
    with pytest.raises(ValueError, match="warp_mask"):
        mem.fuse_generated(gen_rgb, gen_depth, c2w, K, warp_mask[0])
    with pytest.raises(ValueError, match="Expect `update` to be one of"):
        mem.fuse_generated(gen_rgb, gen_depth, c2w, K, warp_mask, update="never")


def wall(depth_m: float = 2.0, B: int = 1):
    """A camera at the origin looking down +z at a flat wall ``depth_m`` away."""
    K = pinhole(W / 2, H, W, B)
    c2w = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    rgb = torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    return rgb, torch.full((B, H, W), depth_m), c2w, K


def test_anchor_free_space_is_what_lies_in_front_of_the_anchor():
    rgb, depth, c2w, K = wall()
    mem = SpatialMemory(capacity=4 * H * W)
    assert not mem.anchor_free_space(depth, c2w, K).any(), "no anchor, no known free space"
    mem.set_anchor(depth, c2w, K)
    assert mem.anchor_free_space(depth * 0.5, c2w, K).all()  # halfway to the wall: empty space
    assert not mem.anchor_free_space(depth * 0.99, c2w, K).any()  # within the tolerance of the wall
    assert not mem.anchor_free_space(depth * 1.5, c2w, K).any()  # behind the wall: unknown
    side = c2w.clone()
    side[:, 0, 3] = 50.0  # far to the side: outside the anchor's image
    assert not mem.anchor_free_space(depth * 0.5, side, K).any()
    mem.reset()
    assert not mem.anchor_free_space(depth * 0.5, c2w, K).any(), "reset forgets the anchor"


def test_fuse_generated_drops_floaters_in_front_of_the_anchor():
    rgb, depth, c2w, K = wall()
    mem = SpatialMemory(capacity=4 * H * W)
    mem.fuse(rgb, depth, c2w, K)
    mem.set_anchor(depth, c2w, K)
    before = mem.render(c2w, K, (H, W))
    # A generated frame from a camera 0.5 m to the side, taken as all holes: its left half
    # 0.5 m in front of the wall (floaters), its right half 1 m behind it.
    side = c2w.clone()
    side[:, 0, 3] = 0.5
    valid = torch.zeros(1, H, W, dtype=torch.bool)
    gen_depth = torch.full((1, H, W), 3.0)
    gen_depth[..., : W // 2] = 1.5
    n0 = int(mem.num_points[0])
    mem.fuse_generated(255 - rgb, gen_depth, side, K, valid)
    assert int(mem.num_points[0]) > n0, "the points behind the wall are kept"
    after = mem.render(c2w, K, (H, W))
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1]), "the anchor's view is unchanged"
    # Control: without an anchor the floater is fused and shows in front of the wall.
    free = SpatialMemory(capacity=4 * H * W)
    free.fuse(rgb, depth, c2w, K)
    free.fuse_generated(255 - rgb, gen_depth, side, K, valid)
    assert not torch.equal(free.render(c2w, K, (H, W))[1], before[1])


def test_anchor_survives_state_dict_and_partial_reset():
    rgb, depth, c2w, K = wall(B=2)
    mem = SpatialMemory(batch_size=2, capacity=4 * H * W)
    mem.set_anchor(depth, c2w, K, mask=torch.tensor([True, False]))
    assert mem.anchor_free_space(depth * 0.5, c2w, K).flatten(1).all(1).tolist() == [True, False]
    state = mem.state_dict()
    assert {"anchor.depth", "anchor.c2w", "anchor.K", "anchor.set"} <= set(state)
    copy = SpatialMemory(batch_size=2, capacity=4 * H * W)
    copy.load_state_dict(state)
    assert torch.equal(copy.anchor_free_space(depth * 0.5, c2w, K), mem.anchor_free_space(depth * 0.5, c2w, K))
    mem.set_anchor(depth, c2w, K)
    mem.reset(torch.tensor([False, True]))
    assert mem.anchor_free_space(depth * 0.5, c2w, K).flatten(1).all(1).tolist() == [True, False]
    bad = dict(state)
    del bad["anchor.K"]
    with pytest.raises(ValueError, match="anchor"):
        copy.load_state_dict(bad)


def test_state_dict_round_trip():
    mem = filled()
    state = mem.state_dict()
    view = frames(9, 1)[0]
    expected = mem.render(view[2], view[3], (H, W))
    mem.fuse(*frames(5, 1)[0])  # the snapshot must not see later changes
    fresh = SpatialMemory(batch_size=2, capacity=4096)
    fresh.load_state_dict(state)
    for x, y in zip(expected, fresh.render(view[2], view[3], (H, W))):
        assert torch.equal(x, y)
    for name, t in fresh.state_dict().items():
        assert torch.equal(t, state[name]) and t.data_ptr() != state[name].data_ptr()
    # Continuing from the snapshot is the same as continuing the original.
    again = SpatialMemory(batch_size=2, capacity=4096)
    again.load_state_dict(state)
    fresh.fuse(*frames(5, 1)[0])
    again.fuse(*frames(5, 1)[0])
    assert_renders_equal(fresh, again, view[2], view[3])


def test_load_state_dict_validates():
    mem = filled()
    state = mem.state_dict()
    other = SpatialMemory(batch_size=2, capacity=2048)
    with pytest.raises(ValueError, match=r"Expect `state\['xyz'\]` to have shape \(2, 2048, 3\), actually: \(2, 4096, 3\)"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="missing \\['xyz'\\]"):
        mem.load_state_dict({k: v for k, v in state.items() if k != "xyz"})
    bad = dict(state, count=state["count"].float())
    with pytest.raises(TypeError, match="Expect `state\\['count'\\]` to have dtype torch.int64"):
        mem.load_state_dict(bad)
    bad = dict(state, count=torch.tensor([5000, 0]))
    with pytest.raises(ValueError, match="Expect `count` in \\[0, 4096\\]"):
        mem.load_state_dict(bad)
    with pytest.raises(TypeError, match="dict of tensors"):
        mem.load_state_dict([1, 2])
    assert torch.equal(mem.num_points, state["count"])  # failed loads changed nothing


def test_reset_of_one_stream_leaves_the_others():
    mem = filled(B=3)
    before = mem.state_dict()
    view = frames(3, 1, B=3)[0]
    expected = mem.render(view[2], view[3], (H, W))
    mem.reset(torch.tensor([False, True, False]))
    assert mem.num_points.tolist() == [int(before["count"][0]), 0, int(before["count"][2])]
    rgb, depth, mask = mem.render(view[2], view[3], (H, W))
    assert not mask[1].any() and not depth[1].any()
    for got, exp in zip((rgb, depth, mask), expected):
        assert torch.equal(got[0], exp[0]) and torch.equal(got[2], exp[2])
    mem.reset()
    assert mem.num_points.tolist() == [0, 0, 0]


def test_fuse_mask_updates_only_chosen_streams():
    mem = filled(B=2, n=1)
    before = mem.state_dict()
    mem.fuse(*frames(4, 1)[0], mask=torch.tensor([True, False]))
    after = mem.state_dict()
    assert not torch.equal(after["xyz"][0], before["xyz"][0])
    for name in after:
        assert torch.equal(after[name][1], before[name][1]), name


def test_capacity_bounds_memory_over_many_frames():
    mem = SpatialMemory(batch_size=2, capacity=500, voxel_size=0.01)
    nbytes = sum(t.numel() * t.element_size() for t in mem.state_dict().values())
    for fr in frames(6, 30):
        mem.fuse(*fr)
        assert bool((mem.num_points <= 500).all())
    assert mem.num_points.tolist() == [500, 500]
    assert sum(t.numel() * t.element_size() for t in mem.state_dict().values()) == nbytes
    # The newest frame is still visible: it was fused last and evicts the oldest points first.
    rgb, depth, c2w, K = frames(6, 30)[-1]
    _, _, mask = mem.render(c2w, K, (H, W))
    assert mask.float().mean() > 0.3


def test_to_and_repr():
    mem = filled(n=1)
    assert mem.to("cpu") is mem and mem.device == torch.device("cpu")
    assert "num_points=" in repr(mem) and "capacity=4096" in repr(mem)
    assert torch.equal(mem.size, mem.num_points)


# --- argument errors ---------------------------------------------------------------


def good():
    rgb, depth, c2w, K = frames(0, 1, B=1)[0]
    return dict(rgb=rgb, depth=depth, c2w=c2w, K=K)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(depth=torch.ones(H, W)), ValueError, f"Expect `depth` to have shape (1, {H}, {W}), actually: ({H}, {W})"),
        (dict(depth=torch.ones(1, H, W + 1)), ValueError, f"Expect `depth` to have shape (1, {H}, {W}), actually: (1, {H}, {W + 1})"),
        (dict(rgb=torch.zeros(1, H, W, 3, dtype=torch.int32)), TypeError, "Expect `rgb` to have dtype torch.uint8 or torch.float32 or torch.float64"),
        (dict(rgb=torch.zeros(1, H, W, 4, dtype=torch.uint8)), ValueError, f"Expect `rgb` to have shape (1, {H}, {W}, 3), actually: (1, {H}, {W}, 4)"),
        (dict(rgb=torch.full((1, H, W, 3), float("nan"))), ValueError, "Expect `rgb` to be finite"),
        (dict(depth=torch.ones(1, H, W, dtype=torch.int64)), TypeError, "`depth`"),
        (dict(c2w=torch.full((1, 4, 4), float("nan"))), ValueError, "Expect `c2w` to be finite"),
        (dict(c2w=torch.eye(4)), ValueError, "Expect `c2w` to have shape (1, 4, 4), actually: (4, 4)"),
        (dict(K=torch.zeros(1, 3, 3)), ValueError, "non-zero focal lengths"),
        (dict(K=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), TypeError, "Expect `K` to be a torch.Tensor, actually: list"),
        (dict(mask=torch.ones(2, dtype=torch.bool)), ValueError, "Expect `mask` to have shape (1,), actually: (2,)"),
        (dict(rgb=torch.zeros(1, 9000, 2, 3, dtype=torch.uint8), depth=torch.ones(1, 9000, 2)), ValueError, "Expect `rgb` to have sides in [1, 8192]"),
        (dict(depth=torch.ones(1, H, W, device="meta")), ValueError, "Expect `depth` on device cpu, actually: meta"),
        (dict(pixels=torch.ones(1, H, W)), TypeError, "Expect `pixels` to have dtype torch.bool"),
        (dict(pixels=torch.ones(1, H, W - 1, dtype=torch.bool)), ValueError, f"Expect `pixels` to have shape (1, {H}, {W}), actually: (1, {H}, {W - 1})"),
    ],
)
def test_fuse_rejects_bad_arguments(change, error, message):
    mem = SpatialMemory(capacity=256)
    kw = good()
    kw.update(change)
    with pytest.raises(error) as e:
        mem.fuse(**kw)
    assert message in str(e.value)
    assert mem.num_points.tolist() == [0]


@pytest.mark.parametrize(
    "size, c2w, error, message",
    [
        ((0, 5), None, ValueError, "Expect `size` to have sides in [1, 8192], actually: (0, 5)"),
        ((10**5, 5), None, ValueError, "Expect `size` to have sides"),
        (None, torch.eye(4)[None].repeat(2, 1, 1), ValueError, "Expect `c2w` to have shape (1, 4, 4), actually: (2, 4, 4)"),
        (None, torch.zeros(1, 4, 4), ValueError, "invertible"),
    ],
)
def test_render_rejects_bad_arguments(size, c2w, error, message):
    mem = SpatialMemory(capacity=256)
    kw = good()
    with pytest.raises(error) as e:
        mem.render(kw["c2w"] if c2w is None else c2w, kw["K"], (H, W) if size is None else size)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(capacity=0), ValueError, "Expect `capacity` in [1, 1073741824], actually: 0"),
        (dict(capacity=2**40), ValueError, "Expect `capacity` in [1, 1073741824]"),
        (dict(capacity=100.0), TypeError, "Expect `capacity` to be an int, actually: float"),
        (dict(batch_size=0), ValueError, "Expect `batch_size` in [1, 65536], actually: 0"),
        (dict(voxel_size=-0.1), ValueError, "Expect `voxel_size` to be finite and positive, actually: -0.1"),
        (dict(voxel_size=float("inf")), ValueError, "`voxel_size`"),
        (dict(radius_scale=0.0), ValueError, "Expect `radius_scale` to be finite and positive"),
        (dict(feature_dim=0), ValueError, "`feature_dim`"),
    ],
)
def test_config_is_validated(kw, error, message):
    with pytest.raises(error) as e:
        SpatialMemory(**kw)
    assert message in str(e.value)


def test_from_config_and_reset_mask_validation():
    mem = SpatialMemory.from_config(MemoryConfig(batch_size=2, capacity=64, max_radius_px=4.0))
    assert mem.config.max_radius_px == 4.0 and mem.num_points.tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"Expect `max_radius_px` to be at least 0.5"):
        MemoryConfig(max_radius_px=0.1)
    with pytest.raises(TypeError, match="Expect `mask` to have dtype torch.bool"):
        mem.reset(torch.ones(2))
    with pytest.raises(TypeError, match="MemoryConfig"):
        SpatialMemory.from_config({"batch_size": 2})
    assert isinstance(np.asarray(mem.num_points), np.ndarray)
