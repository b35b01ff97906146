"""Codec: model-space conversions and the per-frame autoencoder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from worldenv.model.codec import (
    DEPTH_UNKNOWN,
    DEPTH_VALID_MIN,
    Codec,
    CodecConfig,
    PixelShuffle,
    UnshuffleConv2d,
    depth_to_model,
    frames_to_model,
    model_to_depth,
    model_to_frames,
    model_to_rgb,
    rgb_to_model,
)


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def test_rgb_round_trip_and_uint8() -> None:
    rgb = torch.rand(2, 8, 6, 3)
    x = rgb_to_model(rgb)
    assert x.shape == (2, 3, 8, 6)
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(model_to_rgb(x), rgb, atol=1e-6, rtol=0)
    u8 = torch.randint(0, 256, (2, 8, 6, 3), dtype=torch.uint8)
    torch.testing.assert_close(rgb_to_model(u8), rgb_to_model(u8.float() / 255.0), atol=1e-6, rtol=0)


def test_depth_round_trip_log_spacing_and_unknown() -> None:
    near, far = 0.1, 100.0
    d = torch.tensor([[[0.0, 0.1, 1.0, 10.0, 100.0, 0.05, 500.0]]])
    x = depth_to_model(d, near, far)
    assert x.shape == (1, 1, 1, 7)
    v = x[0, 0, 0]
    assert v[0] == DEPTH_UNKNOWN
    assert v[1] == pytest.approx(DEPTH_VALID_MIN)
    assert v[4] == pytest.approx(1.0)
    # Log spacing: each decade is the same step.
    assert (v[3] - v[2]).item() == pytest.approx((v[2] - v[1]).item(), rel=1e-5)
    # Out of range clamps, and stays valid.
    assert v[5] == pytest.approx(DEPTH_VALID_MIN) and v[6] == pytest.approx(1.0)
    back = model_to_depth(x, near, far)[0, 0]
    assert back[0] == 0.0
    torch.testing.assert_close(back[1:5], d[0, 0, 1:5], rtol=1e-5, atol=0)
    assert back[5] == pytest.approx(near) and back[6] == pytest.approx(far)


def test_depth_decoding_threshold() -> None:
    x = torch.tensor([DEPTH_UNKNOWN, -0.95, -0.85, DEPTH_VALID_MIN]).view(1, 1, 1, 4)
    d = model_to_depth(x, 0.1, 100.0)[0, 0]
    assert d[0] == 0 and d[1] == 0
    assert d[2] == pytest.approx(0.1) and d[3] == pytest.approx(0.1)


def test_frames_round_trip() -> None:
    rgb = torch.rand(3, 16, 16, 3)
    depth = torch.rand(3, 16, 16) * 5 + 0.2
    depth[0, :4] = 0
    x = frames_to_model(rgb, depth, 0.1, 100.0)
    assert x.shape == (3, 4, 16, 16) and x.dtype == torch.float32
    rgb2, depth2 = model_to_frames(x, 0.1, 100.0)
    assert rgb2.shape == (3, 16, 16, 3) and depth2.shape == (3, 16, 16)
    torch.testing.assert_close(rgb2, rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(depth2, depth, rtol=1e-5, atol=0)


def test_pixel_shuffle_matches_torch() -> None:
    x = torch.randn(2, 12, 5, 7)
    assert torch.equal(PixelShuffle(2)(x), F.pixel_shuffle(x, 2))


@pytest.mark.parametrize(("r", "k"), [(2, 3), (2, 1), (4, 3), (2, 5)])
def test_unshuffle_conv_is_conv_of_unshuffled_input(r: int, k: int) -> None:
    conv = UnshuffleConv2d(3, 5, k, r)
    randomize(conv, seed=r + k)
    x = torch.randn(2, 3, 4 * r, 6 * r, requires_grad=True)
    fused = conv(x)
    ref = F.conv2d(F.pixel_unshuffle(x, r), conv.weight, conv.bias, padding=k // 2)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    gx, gw = torch.autograd.grad(fused, (x, conv.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, conv.weight), g)
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)
    assert conv.weight.shape == (5, 3 * r * r, k, k)  # the unshuffled conv's parameters, so checkpoints load
    with pytest.raises(ValueError, match="odd `kernel_size`"):
        UnshuffleConv2d(3, 5, 2, r)


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_codec_shapes(factor: int) -> None:
    cfg = CodecConfig(latent_channels=6, factor=factor, width=8, max_width=32)
    codec = Codec(cfg).eval()
    x = torch.rand(2, 4, 32, 48) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        assert z.shape == (2, 6, 32 // factor, 48 // factor)
        assert codec.decode(z).shape == x.shape
        assert codec(x).shape == x.shape


def test_codec_is_per_frame() -> None:
    """A frame's latent and decoding do not depend on other frames in the batch."""
    codec = Codec(CodecConfig(latent_channels=4, factor=4, width=8, max_width=16)).eval()
    randomize(codec)
    x = torch.rand(3, 4, 16, 16) * 2 - 1
    y = x.clone()
    y[1:] = torch.rand(2, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(codec.encode(x)[0], codec.encode(y)[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(codec(x)[:1], codec(x[:1]), atol=1e-5, rtol=1e-5)


def test_latent_statistics_standardise() -> None:
    codec = Codec(CodecConfig(latent_channels=4, factor=4, width=8, max_width=16)).eval()
    randomize(codec)
    x = torch.rand(1, 4, 16, 16) * 2 - 1
    with torch.no_grad():
        raw = codec.encode(x)
        codec.latent_mean.fill_(0.5)
        codec.latent_std.fill_(2.0)
        z = codec.encode(x)
        torch.testing.assert_close(z, (raw - 0.5) / 2.0)
        codec.latent_mean.zero_()
        codec.latent_std.fill_(1.0)
        out_raw = codec.decode(raw)
        codec.latent_mean.fill_(0.5)
        codec.latent_std.fill_(2.0)
        torch.testing.assert_close(codec.decode(z), out_raw, atol=1e-5, rtol=1e-5)
    assert "latent_mean" in codec.state_dict() and "latent_std" in codec.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 6}, "Expect `factor` to be a power of two >= 2, actually: 6"),
        ({"factor": 1}, "Expect `factor` to be a power of two >= 2, actually: 1"),
        ({"latent_channels": 0}, "Expect `latent_channels` to be a positive int, actually: 0"),
        ({"decoder_blocks": -1}, "Expect `decoder_blocks` to be a non-negative int, actually: -1"),
    ],
)
def test_config_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CodecConfig(**kwargs)


def test_level_widths() -> None:
    cfg = CodecConfig(factor=16, width=32, max_width=96)
    assert cfg.levels == int(math.log2(16))
    assert [cfg.level_width(i) for i in range(1, 5)] == [32, 64, 96, 96]
