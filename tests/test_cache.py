"""The spatiotemporal KV cache: slots, ring order, per-stream validity, constant memory."""

from __future__ import annotations

import gc
import os
import tracemalloc

import pytest
import torch

from worldenv.model import ModelConfig, WorldModel
from worldenv.model.cache import KVCache

L, B, NH, HD, N, R, W = 2, 3, 2, 8, 4, 1, 3


def slot_table(positions: int = R + W + 1) -> torch.Tensor:
    """A distinct rotation per (slot, token, pair) so that misplaced keys are detected."""
    angles = torch.arange(positions * N * (HD // 2), dtype=torch.float64).view(positions, N, HD // 2) * 0.37
    return torch.stack([angles.cos(), angles.sin()], -1).float()


def make_cache(table: torch.Tensor | None = None) -> KVCache:
    return KVCache(
        layers=L, batch=B, heads=NH, head_dim=HD, tokens=N, num_ref=R, window=W,
        slot_table=slot_table() if table is None else table, device="cpu",
    )  # fmt: skip


def rotate(raw: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Reference rotation of keys ``(..., N, HD)`` by a ``(N, HD/2, 2)`` table, in float64."""
    c = torch.view_as_complex(raw.double().unflatten(-1, (-1, 2)).contiguous())
    t = torch.view_as_complex(table.double().contiguous())
    return torch.view_as_real(c * t).flatten(-2).float()


def test_ring_order_positions_and_mask() -> None:
    cache = make_cache()
    table = slot_table()
    cache.reset_streams(torch.arange(B), [torch.zeros(B, NH, R * N, HD)] * L, [torch.zeros(B, NH, R * N, HD)] * L)
    raws = []
    for step in range(2 * W + 1):
        mask = cache.attn_mask()
        valid_hist = min(step, W)
        if valid_hist < W:
            assert mask is not None and mask.shape == (B, 1, 1, (R + W + 1) * N)
            assert int(mask[0].sum()) == (R + valid_hist + 1) * N
        else:
            assert mask is None  # every slot valid: attention runs unmasked
            dense = cache.attn_mask(dense=True)  # what a compiled forward gets instead: one graph throughout
            assert dense is not None and bool(dense.all())
        raw = torch.randn(L, B, NH, N, HD)
        v = torch.randn(L, B, NH, N, HD)
        for layer in range(L):
            cache.write_current(layer, k_raw=raw[layer], k=raw[layer], v=v[layer])
        cache.commit()
        raws.append((raw, v))
        assert cache.hist_len.tolist() == [min(step + 1, W)] * B
        # Every history frame sits rotated at position R + W - age, wherever the ring put it physically.
        for age in range(1, min(step + 1, W) + 1):
            raw_a, v_a = raws[-age]
            phys = (cache.newest - (age - 1)) % W
            start = cache.ring_start + phys * N
            got_k = cache.k[:, :, :, start : start + N]
            torch.testing.assert_close(got_k, rotate(raw_a, table[R + W - age]), atol=1e-5, rtol=1e-5)
            assert torch.equal(cache.v[:, :, :, start : start + N], v_a)


def test_reset_streams_clears_only_those_streams() -> None:
    cache = make_cache()
    ref_k = [torch.randn(B, NH, R * N, HD) for _ in range(L)]
    ref_v = [torch.randn(B, NH, R * N, HD) for _ in range(L)]
    cache.reset_streams(torch.arange(B), ref_k, ref_v)
    for _ in range(W):
        for layer in range(L):
            x = torch.randn(B, NH, N, HD)
            cache.write_current(layer, k_raw=x, k=x, v=x)
        cache.commit()
    before = cache.snapshot()
    new_k = [torch.randn(1, NH, R * N, HD) for _ in range(L)]
    cache.reset_streams(torch.tensor([1]), new_k, new_k)
    assert cache.hist_len.tolist() == [W, 0, W]
    mask = cache.attn_mask()
    assert mask is not None
    assert mask[0].all() and mask[2].all()
    assert int(mask[1].sum()) == (R + 1) * N  # reference and current only
    for s in (0, 2):
        assert torch.equal(cache.k[:, s], before.k[:, s]) and torch.equal(cache.v[:, s], before.v[:, s])
    assert torch.equal(cache.k[0, 1, :, : R * N], new_k[0][0])
    assert (cache.k[:, 1, :, R * N :] == 0).all() and (cache.k_ring_raw[:, 1] == 0).all()


def test_snapshot_restore_in_place() -> None:
    cache = make_cache()
    cache.reset_streams(torch.arange(B), [torch.randn(B, NH, R * N, HD)] * L, [torch.randn(B, NH, R * N, HD)] * L)
    for layer in range(L):
        x = torch.randn(B, NH, N, HD)
        cache.write_current(layer, k_raw=x, k=x, v=x)
    cache.commit()
    state = cache.snapshot()
    ptrs = {k: t.data_ptr() for k, t in cache.tensors().items()}
    for _ in range(2):
        cache.commit()
    cache.restore(state)
    assert {k: t.data_ptr() for k, t in cache.tensors().items()} == ptrs
    assert torch.equal(cache.k, state.k) and cache.newest == state.newest and cache.hist_len.tolist() == [1] * B
    state.k[0, 0, 0, 0, 0] += 1  # the snapshot is a copy
    assert not torch.equal(cache.k, state.k)
    other = KVCache(
        layers=L,
        batch=B + 1,
        heads=NH,
        head_dim=HD,
        tokens=N,
        num_ref=R,
        window=W,
        slot_table=slot_table(),
        device="cpu",
    )
    with pytest.raises(
        ValueError, match=r"Expect the snapshot's `k` to have shape \(2, 4, 2, 20, 8\), actually: \(2, 3, 2, 20, 8\)"
    ):
        other.restore(state)


def test_nbytes() -> None:
    cache = make_cache()
    S = R + W + 1
    expect = 4 * (2 * L * B * NH * S * N * HD + L * B * NH * W * N * HD + L * B * NH * N * HD) + 8 * B
    assert cache.nbytes() == expect


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def test_memory_flat_over_2000_steps() -> None:
    """An unbounded rollout keeps the cache's tensors (same storage, same size) and the process's memory flat."""
    cfg = ModelConfig(
        height=16, width=16, codec_factor=4, latent_channels=4, codec_width=8, codec_max_width=8,
        codec_encoder_blocks=0, codec_decoder_blocks=0, patch_size=2, dim=16, layers=1, heads=1, window=3,
    )  # fmt: skip
    model = WorldModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    Bm = 2
    rgb, depth = torch.rand(Bm, 16, 16, 3, generator=g), 1 + torch.rand(Bm, 16, 16, generator=g)
    c2w = torch.eye(4).repeat(Bm, 1, 1)
    K = torch.tensor([[16.0, 0, 7.5], [0, 16.0, 7.5], [0, 0, 1]]).repeat(Bm, 1, 1)
    mask = torch.rand(Bm, 16, 16, generator=g) > 0.5
    model.reset(rgb, depth, c2w, K)
    cache = model.cache
    assert cache is not None
    layout = {k: (t.data_ptr(), t.shape, t.untyped_storage().nbytes()) for k, t in cache.tensors().items()}
    gen = torch.Generator().manual_seed(0)
    pose = c2w.clone()
    steps, warm = 2000, 200
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: thread wake-ups would dominate on a shared machine
    try:
        for i in range(steps):
            if i == warm:
                gc.collect()
                rss0 = _rss_bytes()
                tracemalloc.start()
                snap0 = tracemalloc.take_snapshot()
            pose[:, 0, 3] = 0.01 * i  # the camera keeps moving; positions in the cache must not
            model.step(rgb, depth, mask, pose, gen)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        torch.set_num_threads(threads)
    rss1 = _rss_bytes()
    assert {k: (t.data_ptr(), t.shape, t.untyped_storage().nbytes()) for k, t in cache.tensors().items()} == layout
    assert model.frames_since_reset.tolist() == [steps] * Bm and cache.hist_len.tolist() == [cfg.window] * Bm
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert grown < 64 * 1024, f"Python allocations grew by {grown} bytes over {steps - warm} steps"
    if rss0 is not None and rss1 is not None:
        assert rss1 - rss0 < 16 * 2**20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB over {steps - warm} steps"
