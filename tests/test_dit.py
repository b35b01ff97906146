"""DiT: streaming through the cache computes exactly the training (clip) forward; camera maths; layout."""

from __future__ import annotations

import pytest
import torch

from worldenv.model.cache import KVCache
from worldenv.model.camera import (
    normalized_intrinsics,
    plucker_rays,
    prope_matrices,
    ray_directions,
    relative_pose,
)
from worldenv.model.dit import ClipLayout, DiT, DiTConfig, patchify, unpatchify

C, HW = 4, (4, 6)  # latent channels and latent size of the tiny test DiT


def tiny_dit(prope: bool = False, num_ref: int = 1, window: int = 2, dtype: torch.dtype = torch.float64) -> DiT:
    cfg = DiTConfig(
        latent_channels=C, latent_size=HW, patch_size=2, dim=32, layers=3, heads=2,
        num_ref=num_ref, window=window, prope=prope,
    )  # fmt: skip
    dit = DiT(cfg).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # adaLN-Zero init would make every output zero; use random weights
        for p in dit.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return dit


def random_rigid(n: int, g: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=dtype))
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    T = torch.eye(4, dtype=dtype).repeat(n, 1, 1)
    T[:, :3, :3] = q
    T[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=dtype)
    return T


def new_cache(dit: DiT, B: int) -> KVCache:
    c = dit.config
    return KVCache(
        layers=c.layers, batch=B, heads=c.heads, head_dim=c.head_dim, tokens=c.tokens, num_ref=c.num_ref,
        window=c.window, slot_table=dit.key_table(torch.arange(c.slots)), device="cpu",
        dtype=next(dit.parameters()).dtype,
    )  # fmt: skip


class Episode:
    """Random inputs of B streams: R references and T frames (clean, noisy, timesteps, conditions, cameras)."""

    def __init__(self, dit: DiT, B: int, T: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        c = dit.config
        R, N = c.num_ref, c.tokens
        dt = next(dit.parameters()).dtype

        def rnd(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g, dtype=dt)

        self.ref, self.clean, self.noisy = rnd(B, R, C, *HW), rnd(B, T, C, *HW), rnd(B, T, C, *HW)
        self.t = torch.rand(B, T, N, generator=g, dtype=dt)
        self.cond = rnd(B, T, C + 1, *HW)
        self.pl_ref, self.pl = rnd(B, R, N, 6), rnd(B, T, N, 6)
        eye = torch.eye(4, dtype=dt)
        self.pr_ref, self.pr = eye + 0.2 * rnd(B, R, 4, 4), eye + 0.2 * rnd(B, T, 4, 4)
        self.B, self.T, self.R = B, T, R

    def zeros(self, F: int) -> torch.Tensor:
        return torch.zeros(self.B, F, C + 1, *HW, dtype=self.ref.dtype)

    def clip(self, dit: DiT, mode: str) -> torch.Tensor:
        """The training forward's prediction for every noisy frame, ``(B, T, C, h, w)``."""
        R, T, B, N = self.R, self.T, self.B, dit.config.tokens
        z = torch.zeros(B, R, N, dtype=self.ref.dtype)
        prope = dit.config.prope
        if mode == "clean":
            layout = ClipLayout.build(R, T, dit.config.window, noisy=True)
            x = torch.cat([self.ref, self.clean, self.noisy], 1)
            t = torch.cat([z, torch.zeros(B, T, N, dtype=z.dtype), self.t], 1)
            cond = torch.cat([self.zeros(R + T), self.cond], 1)
            pl, pr = torch.cat([self.pl_ref, self.pl, self.pl], 1), torch.cat([self.pr_ref, self.pr, self.pr], 1)
        else:  # "last_step": the context frames are the denoised frames' own inputs
            layout = ClipLayout.build(R, T, dit.config.window, noisy=False)
            x, t = torch.cat([self.ref, self.noisy], 1), torch.cat([z, self.t], 1)
            cond = torch.cat([self.zeros(R), self.cond], 1)
            pl, pr = torch.cat([self.pl_ref, self.pl], 1), torch.cat([self.pr_ref, self.pr], 1)
        return dit(x, t, cond, pl, pr if prope else None, layout)[:, -T:]

    def prefill(self, dit: DiT, cache: KVCache, streams: torch.Tensor) -> None:
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        R = self.R
        layout = ClipLayout.build(R, 0, dit.config.window, noisy=False)
        t = torch.zeros(len(streams), R, 1, dtype=self.ref.dtype)
        pr = self.pr_ref[streams] if dit.config.prope else None
        dit(self.ref[streams], t, self.zeros(R)[streams], self.pl_ref[streams], pr, layout, kv_out=kv)
        cache.reset_streams(streams, [k for k, _ in kv], [v for _, v in kv])

    def stream_step(self, dit: DiT, cache: KVCache, j: int, mode: str) -> torch.Tensor:
        cam = dit.prepare_camera(self.pl[:, j : j + 1], self.pr[:, j : j + 1] if dit.config.prope else None)
        mask = cache.attn_mask()
        v = dit.forward_stream(self.noisy[:, j], self.t[:, j], self.cond[:, j], cam, cache, mask)
        if mode == "clean":
            t0 = torch.zeros(self.B, 1, dtype=self.ref.dtype)
            assert dit.forward_stream(self.clean[:, j], t0, self.zeros(1)[:, 0], cam, cache, mask, kv_only=True) is None
        cache.commit()
        return v


@pytest.mark.parametrize("mode", ["clean", "last_step"])
@pytest.mark.parametrize(("prope", "num_ref", "window"), [(False, 1, 2), (True, 1, 2), (False, 2, 3), (True, 2, 1)])
def test_streaming_equals_clip_forward(mode: str, prope: bool, num_ref: int, window: int) -> None:
    """Stepping through the cache (ring wrapping several times) equals the training forward over the clip."""
    dit = tiny_dit(prope, num_ref, window)
    ep = Episode(dit, B=2, T=3 * window + 2)
    with torch.no_grad():
        want = ep.clip(dit, mode)
        cache = new_cache(dit, 2)
        ep.prefill(dit, cache, torch.arange(2))
        got = torch.stack([ep.stream_step(dit, cache, j, mode) for j in range(ep.T)], 1)
    # float64 weights; RoPE tables are float32 and the clip uses other (absolute) positions, hence not 1e-12.
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, atol=1e-6 * scale, rtol=0)


def test_streaming_equals_clip_forward_float32() -> None:
    dit = tiny_dit(True, 1, 2, dtype=torch.float32)
    ep = Episode(dit, B=2, T=6)
    with torch.no_grad():
        want = ep.clip(dit, "clean")
        cache = new_cache(dit, 2)
        ep.prefill(dit, cache, torch.arange(2))
        got = torch.stack([ep.stream_step(dit, cache, j, "clean") for j in range(ep.T)], 1)
    torch.testing.assert_close(got, want, atol=2e-5 * want.abs().max().item(), rtol=0)


def test_streams_at_different_points_match_their_own_clips() -> None:
    """A stream reset mid-rollout continues exactly like a fresh clip; the other stream is untouched."""
    dit = tiny_dit(True, 1, 2)
    ep_a = Episode(dit, B=2, T=7, seed=0)
    ep_b = Episode(dit, B=2, T=4, seed=1)  # stream 1 restarts at step 3 with these inputs
    with torch.no_grad():
        want_a = ep_a.clip(dit, "clean")  # stream 0 throughout
        want_b = ep_b.clip(dit, "clean")  # stream 1 after its reset
        cache = new_cache(dit, 2)
        ep_a.prefill(dit, cache, torch.arange(2))
        outs = []
        for j in range(7):
            if j == 3:
                ep_b.prefill(dit, cache, torch.tensor([1]))
            if j >= 3:  # stream 1 now takes the second episode's inputs
                for name in ("noisy", "clean", "t", "cond", "pl", "pr"):
                    getattr(ep_a, name)[1, j] = getattr(ep_b, name)[1, j - 3]
            outs.append(ep_a.stream_step(dit, cache, j, "clean"))
        got = torch.stack(outs, 1)
    scale = max(want_a.abs().max().item(), want_b.abs().max().item())
    torch.testing.assert_close(got[0], want_a[0], atol=1e-6 * scale, rtol=0)
    torch.testing.assert_close(got[1, 3:], want_b[1], atol=1e-6 * scale, rtol=0)


def test_prope_depends_on_relative_cameras_only() -> None:
    """Right-multiplying every projective matrix by one invertible matrix (a change of world frame) changes nothing."""
    dit = tiny_dit(True, 1, 2)
    ep = Episode(dit, B=1, T=4)
    g = torch.Generator().manual_seed(5)
    M = torch.eye(4, dtype=torch.float64) + 0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = ep.clip(dit, "clean")
        ep.pr_ref, ep.pr = ep.pr_ref @ M, ep.pr @ M
        got = ep.clip(dit, "clean")
        ep.pr = ep.pr @ torch.diag(torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64))  # not common: must change
        other = ep.clip(dit, "clean")
    torch.testing.assert_close(got, want, atol=1e-6 * want.abs().max().item(), rtol=0)
    assert (other - want).abs().max() > 1e-3


def test_output_depends_on_history_and_reference() -> None:
    """The attention pattern is live: changing a context frame or the reference changes later outputs only."""
    dit = tiny_dit(False, 1, 2)
    ep = Episode(dit, B=1, T=4)
    with torch.no_grad():
        base = ep.clip(dit, "clean")
        ep.clean[:, 1] += 1.0
        changed = ep.clip(dit, "clean")
    assert torch.equal(changed[:, :2], base[:, :2])  # frames 0, 1 never see context frame 1
    assert (changed[:, 2] - base[:, 2]).abs().max() > 1e-3  # frame 2 does (window 2)


def test_layout_mask_structure() -> None:
    lay = ClipLayout.build(num_ref=1, num_ctx=4, window=2, noisy=True)
    assert lay.num_frames == 9
    src = lay.key_src.tolist()
    allowed = [sorted({src[k] for k in torch.nonzero(lay.frame_mask[q]).flatten().tolist()}) for q in range(9)]
    assert allowed[0] == [0]  # reference sees the reference
    assert allowed[1 + 3] == [0, 2, 3, 4]  # context frame 3 (0-based): ref, ctx 1, 2, itself
    assert allowed[5 + 3] == [0, 2, 3, 8]  # noisy frame 3: ref, ctx 1, 2, its own noisy copy
    # Offsets: reference keys sit R + W - r = 3 positions before every generated query.
    for q in range(1, 9):
        for k in torch.nonzero(lay.frame_mask[q]).flatten().tolist():
            if src[k] == 0:
                assert int(lay.q_pos[q] - lay.key_pos[k]) == 3
    assert lay.token_mask(5).shape == (45, lay.key_src.numel() * 5)


def test_patchify_round_trip() -> None:
    x = torch.randn(2, 3, 5, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 3 * 6, 20)
    assert torch.equal(unpatchify(p, 2, 5, (4, 6)), x)


def test_camera_maths() -> None:
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[[50.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]]])
    dirs = ray_directions(K, (48, 64), (3, 4))
    assert dirs.shape == (1, 12, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, 12))
    # The ray through the centre of token (1, 1) projects back to that patch centre (u = 23.5, v = 23.5).
    d = dirs[0, 1 * 4 + 1].double()
    uv = K[0].double() @ (d / d[2])
    torch.testing.assert_close(uv[:2], torch.tensor([23.5, 23.5], dtype=torch.float64), atol=1e-4, rtol=0)

    ref, cam = random_rigid(1, g), random_rigid(1, g)
    rel = relative_pose(ref, cam)
    torch.testing.assert_close(ref @ rel, cam)
    G = random_rigid(1, g)
    torch.testing.assert_close(relative_pose(G @ ref, G @ cam), rel)  # world-frame invariant
    pl = plucker_rays(rel, dirs)
    assert pl.shape == (1, 12, 6)
    torch.testing.assert_close((pl[..., :3] * pl[..., 3:]).sum(-1), torch.zeros(1, 12), atol=1e-5, rtol=0)
    kn = normalized_intrinsics(K, (48, 64))
    # The ray through the last pixel centre lands at 1 - 1/size in normalised coordinates.
    ray = torch.linalg.inv(K[0].double()) @ torch.tensor([63.0, 47.0, 1.0], dtype=torch.float64)
    corner = kn[0] @ ray
    torch.testing.assert_close(corner[:2], torch.tensor([1 - 1 / 64, 1 - 1 / 48], dtype=torch.float64))
    P, P_inv = prope_matrices(rel, kn)
    torch.testing.assert_close(P @ P_inv, torch.eye(4).expand(1, 4, 4), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 30, "heads": 4}, "Expect `dim` (30) to be divisible by `heads`, actually: 4"),
        ({"latent_size": (5, 4)}, "Expect `latent_size` to be divisible by `patch_size` (2), actually: (5, 4)"),
        ({"window": 0}, "Expect `window` to be a positive int, actually: 0"),
        ({"dim": 24, "heads": 2}, "Expect the head dimension `dim / heads` to be even and >= 16, actually: 12"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        DiTConfig(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_rope_sections_cover_head_dim() -> None:
    for prope in (False, True):
        for hd in (16, 32, 48, 64, 96):
            cfg = DiTConfig(dim=hd * 2, heads=2, prope=prope)
            p, t, y, x = cfg.rope_sections
            assert p + t + y + x == hd and min(t, y, x) > 0 and p % 4 == 0 and t % 2 == y % 2 == 0
            assert (p > 0) == prope


def test_prope_requires_matrices() -> None:
    dit = tiny_dit(True)
    with pytest.raises(ValueError, match="Expect `proj`"):
        dit.prepare_camera(torch.zeros(1, 1, dit.config.tokens, 6, dtype=torch.float64), None)
