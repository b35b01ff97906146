"""WorldModel: the public streaming API over B episodes."""

from __future__ import annotations

import os
import re

import pytest
import torch

from worldenv.model import ClipLayout, ModelConfig, WorldModel
from worldenv.model.codec import frames_to_model

H = W = 32


def tiny_config(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        height=H, width=W, codec_factor=4, latent_channels=4, codec_width=8, codec_max_width=16,
        patch_size=2, dim=32, layers=2, heads=2, window=3,
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def tiny_model(seed: int = 0, **kw: object) -> WorldModel:
    model = WorldModel(tiny_config(**kw)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights: the adaLN-Zero init would make every frame the same
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def rigid(B: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(B, 3, 3, generator=g))
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    T = torch.eye(4).repeat(B, 1, 1)
    T[:, :3, :3] = q
    T[:, :3, 3] = scale * torch.randn(B, 3, generator=g)
    return T


class Inputs:
    """Random reference views and per-step warps for B streams."""

    def __init__(self, B: int, steps: int, seed: int = 0, R: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        lead = (B,) if R == 1 else (B, R)
        self.rgb = torch.rand(*lead, H, W, 3, generator=g)
        self.depth = 0.5 + 4 * torch.rand(*lead, H, W, generator=g)
        self.c2w = rigid(B, g) if R == 1 else torch.stack([rigid(B, g) for _ in range(R)], 1)
        self.K = torch.tensor([[30.0, 0.0, 15.5], [0.0, 30.0, 15.5], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
        self.warp_rgb = torch.rand(steps, B, H, W, 3, generator=g)
        self.warp_depth = 0.5 + 4 * torch.rand(steps, B, H, W, generator=g)
        self.warp_mask = torch.rand(steps, B, H, W, generator=g) > 0.3
        ref = self.c2w if R == 1 else self.c2w[:, 0]
        self.poses = torch.stack([ref @ rigid(B, g, 0.2) for _ in range(steps)])

    def reset(self, model: WorldModel, mask: torch.Tensor | None = None) -> None:
        model.reset(self.rgb, self.depth, self.c2w, self.K, mask)

    def step(self, model: WorldModel, i: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        return model.step(self.warp_rgb[i], self.warp_depth[i], self.warp_mask[i], self.poses[i], gen)


def rollout(model: WorldModel, inp: Inputs, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    inp.reset(model)
    return [inp.step(model, i, seed=100 + i) for i in range(steps)]


def test_step_outputs() -> None:
    model = tiny_model()
    inp = Inputs(B=2, steps=2)
    inp.reset(model)
    rgb, depth = inp.step(model, 0)
    assert rgb.shape == (2, H, W, 3) and rgb.dtype == torch.float32
    assert depth.shape == (2, H, W) and depth.dtype == torch.float32
    assert rgb.min() >= 0 and rgb.max() <= 1 and depth.min() >= 0
    assert torch.isfinite(rgb).all() and torch.isfinite(depth).all()
    assert model.num_streams == 2 and model.frames_since_reset.tolist() == [1, 1]


def test_same_seed_same_frames_bit_identical() -> None:
    inp = Inputs(B=2, steps=4)
    a = rollout(tiny_model(), inp, 4)
    b = rollout(tiny_model(), inp, 4)
    for (ra, da), (rb, db) in zip(a, b, strict=True):
        assert torch.equal(ra, rb) and torch.equal(da, db)
    # Without a generator the model's own seeded generator is used: also reproducible.
    m1, m2 = tiny_model(), tiny_model()
    inp.reset(m1)
    inp.reset(m2)
    assert torch.equal(inp.step(m1, 0)[0], inp.step(m2, 0)[0])
    c = rollout(tiny_model(), inp, 1)
    inp.reset(m1)
    assert not torch.equal(inp.step(m1, 0, seed=999)[0], c[0][0])  # a different seed differs
    # Resetting every stream of a used model gives the same frames as a new model.
    again = rollout(m1, inp, 4)
    for (ra, da), (rb, db) in zip(a, again, strict=True):
        assert torch.equal(ra, rb) and torch.equal(da, db)


def test_batch_independence() -> None:
    """Stream 0's frames do not depend on stream 1's and 2's inputs."""
    inp = Inputs(B=3, steps=4, seed=0)
    base = rollout(tiny_model(), inp, 4)
    other = Inputs(B=3, steps=4, seed=1)
    for name in ("rgb", "depth", "c2w"):
        getattr(inp, name)[1:] = getattr(other, name)[1:]
    for name in ("warp_rgb", "warp_depth", "warp_mask", "poses"):
        getattr(inp, name)[:, 1:] = getattr(other, name)[:, 1:]
    changed = rollout(tiny_model(), inp, 4)
    for (ra, da), (rb, db) in zip(base, changed, strict=True):
        torch.testing.assert_close(ra[0], rb[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(da[0], db[0], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(ra[1], rb[1])


def test_per_stream_reset_leaves_other_streams_untouched() -> None:
    inp = Inputs(B=2, steps=6, seed=0)
    base = rollout(tiny_model(), inp, 6)
    model = tiny_model()
    inp.reset(model)
    fresh = Inputs(B=2, steps=6, seed=3)
    outs = []
    for i in range(6):
        if i == 3:
            model.reset(fresh.rgb, fresh.depth, fresh.c2w, fresh.K, mask=torch.tensor([False, True]))
            assert model.frames_since_reset.tolist() == [3, 0]
            for name in ("warp_rgb", "warp_depth", "warp_mask", "poses"):
                getattr(inp, name)[3:, 1] = getattr(fresh, name)[:3, 1]
        outs.append(inp.step(model, i, seed=100 + i))
    for i in range(6):
        assert torch.equal(outs[i][0][0], base[i][0][0]) and torch.equal(outs[i][1][0], base[i][1][0])
    # The reset stream continues exactly like a new episode started with the same inputs and noise.
    new = tiny_model()
    fresh.reset(new)
    for i in range(3):
        rgb, _ = fresh.step(new, i, seed=103 + i)
        torch.testing.assert_close(outs[3 + i][0][1], rgb[1], atol=1e-5, rtol=0)


def test_snapshot_restore_same_continuation() -> None:
    inp = Inputs(B=2, steps=8)
    model = tiny_model()
    inp.reset(model)
    for i in range(3):
        inp.step(model, i)  # model's own generator
    state = model.snapshot()
    first = [inp.step(model, i) for i in range(3, 8)]
    ptrs = {k: v.data_ptr() for k, v in model.cache.tensors().items()}
    model.restore(state)
    again = [inp.step(model, i) for i in range(3, 8)]
    for (ra, da), (rb, db) in zip(first, again, strict=True):
        assert torch.equal(ra, rb) and torch.equal(da, db)
    assert {k: v.data_ptr() for k, v in model.cache.tensors().items()} == ptrs  # restored in place
    # A second model with the same weights continues identically from the snapshot (branching).
    other = tiny_model()
    other.restore(state)
    rgb, _ = inp.step(other, 3)
    assert torch.equal(rgb, first[0][0])
    with pytest.raises(TypeError, match="Expect `state` to be a WorldModelState"):
        model.restore({"cache": None})  # type: ignore[arg-type]


def test_world_frame_invariance() -> None:
    """Only cameras relative to the reference matter: moving the whole world changes no frame."""
    inp = Inputs(B=2, steps=3)
    model = tiny_model(prope=True)
    base = rollout(model, inp, 3)
    G = rigid(1, torch.Generator().manual_seed(9), scale=20.0)
    inp.c2w = G @ inp.c2w
    inp.poses = G @ inp.poses
    moved = rollout(model, inp, 3)
    for (ra, _), (rb, _) in zip(base, moved, strict=True):
        torch.testing.assert_close(ra, rb, atol=2e-4, rtol=0)


def test_uint8_rgb_equals_float_rgb() -> None:
    inp = Inputs(B=1, steps=2)
    inp.rgb = (inp.rgb * 255).round() / 255
    inp.warp_rgb = (inp.warp_rgb * 255).round() / 255
    a = rollout(tiny_model(), inp, 2)
    inp.rgb = (inp.rgb * 255).round().to(torch.uint8)
    inp.warp_rgb = (inp.warp_rgb * 255).round().to(torch.uint8)
    b = rollout(tiny_model(), inp, 2)
    for (ra, _), (rb, _) in zip(a, b, strict=True):
        torch.testing.assert_close(ra, rb, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cache_update", ["clean", "last_step"])
def test_streaming_matches_clip_forward_through_the_world_model(cache_update: str) -> None:
    """The world model's streaming (reference prefill, history, cameras) equals DiT.forward over the clip."""
    model = tiny_model(cache_update=cache_update, prope=True)
    inp = Inputs(B=2, steps=5)
    calls: list[dict[str, torch.Tensor | bool]] = []
    inner = model._stream_fn

    def logged(x, t, cond, camera, cache, mask, kv_only=False):  # type: ignore[no-untyped-def]
        out = inner(x, t, cond, camera, cache, mask, kv_only)
        calls.append({"x": x.clone(), "t": t.clone(), "cond": cond.clone(), "kv_only": kv_only, "out": out})
        return out

    model._stream_fn = logged
    rollout(model, inp, 5)
    steps = len(model.config.timesteps)
    per = steps + (cache_update == "clean")
    cfg, dc = model.config, model.dit.config
    with torch.no_grad():
        ref = model.codec.encode(frames_to_model(inp.rgb, inp.depth, cfg.depth_near, cfg.depth_far))[:, None]
        plucker, proj = model.camera_inputs(inp.c2w, inp.poses.transpose(0, 1), inp.K)  # (B, T, N, 6), (B, T, 4, 4)
        ref_pl, ref_pr = model.camera_inputs(inp.c2w, inp.c2w[:, None], inp.K)
        N = dc.tokens
        for k in range(steps):  # compare every denoising step of every frame
            noisy = torch.stack([calls[i * per + k]["x"] for i in range(5)], 1)
            t = torch.stack([calls[i * per + k]["t"] for i in range(5)], 1)
            cond = torch.stack([calls[i * per + k]["cond"] for i in range(5)], 1)
            want = torch.stack([calls[i * per + k]["out"] for i in range(5)], 1)
            zeros = torch.zeros_like(cond)
            z_ref = torch.zeros(2, 1, N)
            if cache_update == "clean":
                clean = torch.stack([calls[i * per + steps]["x"] for i in range(5)], 1)
                layout = ClipLayout.build(1, 5, dc.window, noisy=True)
                x = torch.cat([ref, clean, noisy], 1)
                tt = torch.cat([z_ref, torch.zeros(2, 5, N), t], 1)
                cc = torch.cat([zeros[:, :1], zeros, cond], 1)
                pl, pr = torch.cat([ref_pl, plucker, plucker], 1), torch.cat([ref_pr, proj, proj], 1)
            else:
                last = steps - 1
                ctx = torch.stack([calls[i * per + last]["x"] for i in range(5)], 1)
                ctx_t = torch.stack([calls[i * per + last]["t"] for i in range(5)], 1)
                ctx_c = torch.stack([calls[i * per + last]["cond"] for i in range(5)], 1)
                layout = ClipLayout.build(1, 5, dc.window, noisy=True)
                x = torch.cat([ref, ctx, noisy], 1)
                tt = torch.cat([z_ref, ctx_t, t], 1)
                cc = torch.cat([zeros[:, :1], ctx_c, cond], 1)
                pl, pr = torch.cat([ref_pl, plucker, plucker], 1), torch.cat([ref_pr, proj, proj], 1)
            got = model.dit(x, tt, cc, pl, pr, layout)[:, -5:]
            torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=0)


def test_bf16_autocast_path() -> None:
    """The CUDA precision path (bfloat16 autocast, bfloat16 cache), exercised on CPU: runs and stays near fp32."""
    inp = Inputs(B=2, steps=3)
    ref = rollout(tiny_model(prope=True), inp, 3)
    model = tiny_model(prope=True)
    model.precision = "bf16"
    out = rollout(model, inp, 3)
    assert model.cache is not None and model.cache.k.dtype == torch.bfloat16
    for (ra, da), (rb, db) in zip(ref, out, strict=True):
        assert rb.dtype == torch.float32 and db.dtype == torch.float32
        torch.testing.assert_close(rb, ra, atol=0.02, rtol=0)
        torch.testing.assert_close(db, da, atol=0, rtol=0.05)
    with pytest.raises(ValueError, match="Expect `precision` to be one of"):
        WorldModel(tiny_config(), precision="fp16")


def test_two_reference_frames() -> None:
    model = tiny_model(num_ref_frames=2)
    inp = Inputs(B=2, steps=3, R=2)
    inp.reset(model)
    rgb, depth = inp.step(model, 0)
    assert rgb.shape == (2, H, W, 3)
    with pytest.raises(
        ValueError, match=re.escape("Expect `rgb` to have shape (2, 2, 32, 32, 3), actually: (2, 3, 32, 32, 3)")
    ):
        model.reset(torch.rand(2, 3, H, W, 3), inp.depth, inp.c2w, inp.K)


def test_step_before_reset_and_missing_default_checkpoint(tmp_path, monkeypatch) -> None:
    model = tiny_model()
    inp = Inputs(B=1, steps=1)
    with pytest.raises(RuntimeError, match="Call `reset`"):
        inp.step(model, 0)
    # An installation without the shipped weights says how to get them.
    import worldenv.model.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "DEFAULT_CHECKPOINT", tmp_path / "weights" / "default.safetensors")
    with pytest.raises(FileNotFoundError, match="No default checkpoint is installed.*worldenv train"):
        WorldModel.from_pretrained("default")


def _bad_calls() -> list[tuple[str, object, str]]:
    return [
        ("reset", {"c2w": torch.eye(4)}, "Expect `c2w` to have shape (2, 4, 4), actually: (4, 4)"),
        (
            "reset",
            {"rgb": torch.rand(2, 16, 16, 3)},
            "Expect `rgb` to have shape (2, 32, 32, 3), actually: (2, 16, 16, 3)",
        ),
        (
            "reset",
            {"rgb": torch.rand(2, H, W, 3, dtype=torch.float64)},
            "Expect `rgb` to have dtype torch.float32 or torch.uint8, actually: torch.float64",
        ),
        (
            "reset",
            {"rgb": torch.full((2, H, W, 3), 1.5)},
            "Expect float `rgb` in [0, 1], actually: values in [1.5, 1.5]",
        ),
        (
            "reset",
            {"depth": -torch.ones(2, H, W)},
            "Expect `depth` to be >= 0 metres (0 = unknown), actually: negative values",
        ),
        (
            "reset",
            {"depth": torch.full((2, H, W), float("nan"))},
            "Expect `depth` to be finite, actually: it contains NaN or inf",
        ),
        (
            "reset",
            {"K": torch.zeros(2, 3, 3)},
            "Expect `K` to have non-zero focal lengths fx and fy, actually: a zero focal length",
        ),
        ("reset", {"K": torch.eye(3).repeat(3, 1, 1)}, "Expect `K` to have shape (2, 3, 3), actually: (3, 3, 3)"),
        (
            "reset",
            {"c2w": 2 * torch.eye(4).repeat(2, 1, 1)},
            "Expect `c2w` to be rigid 4x4 camera-to-world matrices with last row [0, 0, 0, 1], "
            "actually: [0.0, 0.0, 0.0, 2.0]",
        ),
        (
            "reset",
            {"c2w": torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])).repeat(2, 1, 1)},
            "Expect the rotation part of `c2w` to be orthonormal, actually: R^T R differs from I by more than 1e-3",
        ),
        ("reset", {"mask": torch.ones(3, dtype=torch.bool)}, "Expect `mask` to have shape (2,), actually: (3,)"),
        ("reset", {"mask": torch.ones(2)}, "Expect `mask` to have dtype torch.bool, actually: torch.float32"),
        ("reset", {"rgb": [[0.0]]}, "Expect `rgb` to be a torch.Tensor, actually: list"),
        (
            "step",
            {"warp_rgb": torch.rand(3, H, W, 3)},
            "Expect `warp_rgb` to have shape (2, 32, 32, 3), actually: (3, 32, 32, 3)",
        ),
        (
            "step",
            {"warp_mask": torch.ones(2, H, W)},
            "Expect `warp_mask` to have dtype torch.bool, actually: torch.float32",
        ),
        (
            "step",
            {"warp_depth": torch.ones(2, H, W + 1)},
            "Expect `warp_depth` to have shape (2, 32, 32), actually: (2, 32, 33)",
        ),
        ("step", {"c2w": torch.eye(4)}, "Expect `c2w` to have shape (2, 4, 4), actually: (4, 4)"),
        (
            "step",
            {"c2w": torch.full((2, 4, 4), float("inf"))},
            "Expect `c2w` to be finite, actually: it contains NaN or inf",
        ),
    ]


@pytest.mark.parametrize(("method", "change", "message"), _bad_calls())
def test_bad_arguments_rejected(method: str, change: dict[str, object], message: str) -> None:
    model = tiny_model()
    inp = Inputs(B=2, steps=1)
    inp.reset(model)
    if method == "reset":
        args = {"rgb": inp.rgb, "depth": inp.depth, "c2w": inp.c2w, "K": inp.K, "mask": None}
        if "mask" in change:
            args["mask"] = None
        args.update(change)
        with pytest.raises((ValueError, TypeError)) as err:
            model.reset(**args)  # type: ignore[arg-type]
    else:
        args = {
            "warp_rgb": inp.warp_rgb[0],
            "warp_depth": inp.warp_depth[0],
            "warp_mask": inp.warp_mask[0],
            "c2w": inp.poses[0],
        }
        args.update(change)
        with pytest.raises((ValueError, TypeError)) as err:
            model.step(**args)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_first_reset_with_mask_rejected() -> None:
    model = tiny_model()
    inp = Inputs(B=2, steps=1)
    with pytest.raises(ValueError, match="Expect `mask` to be None on the first reset"):
        inp.reset(model, torch.ones(2, dtype=torch.bool))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 30}, "Expect `height` (30) to be divisible by `codec_factor`, actually: 4"),
        (
            {"depth_near": 2.0, "depth_far": 1.0},
            "Expect 0 < `depth_near` < `depth_far`, actually: depth_near=2.0, depth_far=1.0",
        ),
        ({"cache_update": "lazy"}, "Expect `cache_update` to be one of ('clean', 'last_step'), actually: 'lazy'"),
        ({"timesteps": (1.0, 1.0)}, "Expect `timesteps` strictly decreasing in (0, 1], actually: (1.0, 1.0)"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        tiny_config(**kwargs)
    assert str(err.value) == message


def test_config_dict_round_trip() -> None:
    cfg = tiny_config(timesteps=(1.0, 0.5, 0.25))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=re.escape("unknown key(s) ['bogus']")):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("WORLDENV_SLOW_TESTS"), reason="compiles with inductor (minutes); set WORLDENV_SLOW_TESTS=1"
)
def test_compiled_model_matches_eager() -> None:
    eager, compiled = tiny_model(), tiny_model()
    compiled = WorldModel(compiled.config, compile=True).eval()
    compiled.load_state_dict(eager.state_dict())
    inp = Inputs(B=2, steps=5)
    for (ra, da), (rb, db) in zip(rollout(eager, inp, 5), rollout(compiled, inp, 5), strict=True):
        torch.testing.assert_close(rb, ra, atol=1e-4, rtol=0)
        torch.testing.assert_close(db, da, atol=1e-4, rtol=1e-4)
