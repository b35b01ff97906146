"""A tiny per-frame convolutional autoencoder for RGB-D frames, and the model-space conventions.

The world model works on latents of RGB-D frames. This module owns two things:

1. **Model space.** Public frames are RGB in [0, 1] (or uint8) and metric depth
   with 0 = unknown, channel-last ``(B, H, W, 3)`` / ``(B, H, W)``. Inside the
   model a frame is one tensor ``(B, 4, H, W)`` in [-1, 1]: RGB scaled to
   [-1, 1] and depth as normalised log-depth. Valid depths in ``[near, far]``
   map linearly in log-depth onto ``[DEPTH_VALID_MIN, 1]`` (clamped outside
   that range) and unknown depth (0) maps to ``DEPTH_UNKNOWN = -1``; decoding
   treats anything below ``DEPTH_UNKNOWN_THRESHOLD`` as unknown. Keeping a
   band for "unknown" lets the model say "no depth here" (sky, missing sensor
   data) without inventing a distance.
2. **The codec.** A TAESD-like autoencoder without normalisation layers or
   attention, per frame (no temporal mixing, so it streams one frame at a
   time), sized to cost a few milliseconds per 128x128 frame on a laptop CPU.
   The first conv sees the frame pixel-unshuffled by 2 (as one strided
   convolution, :class:`UnshuffleConv2d`) and the last op is a pixel-shuffle,
   so no convolution produces full-resolution maps. Latents are standardised by the
   per-channel ``latent_mean`` / ``latent_std`` buffers, which the codec
   training sets once from data so that the DiT sees roughly unit-variance
   latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CodecConfig",
    "Codec",
    "UnshuffleConv2d",
    "DEPTH_UNKNOWN",
    "DEPTH_VALID_MIN",
    "DEPTH_UNKNOWN_THRESHOLD",
    "rgb_to_model",
    "model_to_rgb",
    "depth_to_model",
    "model_to_depth",
    "frames_to_model",
    "model_to_frames",
]

# Model-space depth value of "unknown" (public depth 0).
DEPTH_UNKNOWN = -1.0
# Model-space value of the nearest valid depth; valid depths fill [DEPTH_VALID_MIN, 1].
DEPTH_VALID_MIN = -0.8
# Decoded depth channel values below this read as unknown (0 m).
DEPTH_UNKNOWN_THRESHOLD = 0.5 * (DEPTH_UNKNOWN + DEPTH_VALID_MIN)


def rgb_to_model(rgb: Tensor) -> Tensor:
    """Public RGB to model space.

    Args:
        rgb: ``(B, H, W, 3)`` float in [0, 1] (clamped) or uint8.

    Returns:
        ``(B, 3, H, W)`` float32 in [-1, 1].
    """
    if rgb.dtype == torch.uint8:
        x = rgb.to(torch.float32) * (2.0 / 255.0) - 1.0
    else:
        x = rgb.to(torch.float32).clamp(0.0, 1.0) * 2.0 - 1.0
    return x.permute(0, 3, 1, 2)  # (B, 3, H, W)


def model_to_rgb(x: Tensor) -> Tensor:
    """Model-space RGB to public RGB.

    Args:
        x: ``(B, 3, H, W)`` float, nominally in [-1, 1].

    Returns:
        ``(B, H, W, 3)`` float32 in [0, 1], contiguous.
    """
    rgb = (x.to(torch.float32) * 0.5 + 0.5).clamp_(0.0, 1.0)
    return rgb.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)


def depth_to_model(depth: Tensor, near: float, far: float) -> Tensor:
    """Metric depth to normalised log-depth.

    Args:
        depth: ``(B, H, W)`` float, metres, 0 (or any value <= 0) = unknown.
        near: Depth mapped to ``DEPTH_VALID_MIN``; smaller positive depths clamp to it.
        far: Depth mapped to 1; larger depths clamp to it.

    Returns:
        ``(B, 1, H, W)`` float32 in [-1, 1].
    """
    d = depth.to(torch.float32)
    valid = d > 0
    log_d = torch.log(d.clamp(near, far))
    u = (log_d - math.log(near)) / (math.log(far) - math.log(near))  # [0, 1]
    x = DEPTH_VALID_MIN + (1.0 - DEPTH_VALID_MIN) * u
    x = torch.where(valid, x, torch.full_like(x, DEPTH_UNKNOWN))
    return x.unsqueeze(1)  # (B, 1, H, W)


def model_to_depth(x: Tensor, near: float, far: float) -> Tensor:
    """Normalised log-depth to metric depth (0 where the model says unknown).

    Args:
        x: ``(B, 1, H, W)`` float.
        near: As in :func:`depth_to_model`.
        far: As in :func:`depth_to_model`.

    Returns:
        ``(B, H, W)`` float32 metres.
    """
    x = x[:, 0].to(torch.float32)  # (B, H, W)
    u = ((x - DEPTH_VALID_MIN) / (1.0 - DEPTH_VALID_MIN)).clamp(0.0, 1.0)
    d = torch.exp(math.log(near) + u * (math.log(far) - math.log(near)))
    return torch.where(x < DEPTH_UNKNOWN_THRESHOLD, torch.zeros_like(d), d)


def frames_to_model(rgb: Tensor, depth: Tensor, near: float, far: float) -> Tensor:
    """Public RGB-D frames to one model-space tensor.

    Args:
        rgb: ``(B, H, W, 3)`` float in [0, 1] or uint8.
        depth: ``(B, H, W)`` float metres, 0 = unknown.
        near: Near end of the log-depth range (metres).
        far: Far end of the log-depth range (metres).

    Returns:
        ``(B, 4, H, W)`` float32 in [-1, 1]: RGB then depth.
    """
    return torch.cat([rgb_to_model(rgb), depth_to_model(depth, near, far)], dim=1)


def model_to_frames(x: Tensor, near: float, far: float) -> tuple[Tensor, Tensor]:
    """One model-space tensor to public RGB and depth.

    Args:
        x: ``(B, 4, H, W)`` float.
        near: Near end of the log-depth range (metres).
        far: Far end of the log-depth range (metres).

    Returns:
        ``rgb`` ``(B, H, W, 3)`` float32 in [0, 1] and ``depth`` ``(B, H, W)``
        float32 metres (0 = unknown).
    """
    return model_to_rgb(x[:, :3]), model_to_depth(x[:, 3:4], near, far)


@dataclass
class CodecConfig:
    """Shape of the codec.

    Attributes:
        in_channels: Channels of a model-space frame (RGB-D: 4).
        latent_channels: Channels of a latent cell.
        factor: Spatial downsampling factor (a power of two, >= 2).
        width: Channels at half resolution; each further level doubles them up
            to ``max_width``.
        max_width: Cap on the channels of any level.
        encoder_blocks: Residual blocks of the encoder, at latent resolution.
        decoder_blocks: Residual blocks of the decoder at every level from
            latent resolution up to a quarter resolution. None run at half
            resolution, where a block costs the most for the least context.
    """

    in_channels: int = 4
    latent_channels: int = 16
    factor: int = 8
    width: int = 32
    max_width: int = 128
    encoder_blocks: int = 1
    decoder_blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("in_channels", "latent_channels", "width", "max_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Expect `{name}` to be a positive int, actually: {v!r}")
        for name in ("encoder_blocks", "decoder_blocks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Expect `{name}` to be a non-negative int, actually: {v!r}")
        f = self.factor
        if not isinstance(f, int) or isinstance(f, bool) or f < 2 or f & (f - 1):
            raise ValueError(f"Expect `factor` to be a power of two >= 2, actually: {f!r}")

    @property
    def levels(self) -> int:
        """Resolution levels below full resolution (``log2(factor)``)."""
        return int(math.log2(self.factor))

    def level_width(self, level: int) -> int:
        """Channels at ``level`` (1 = half resolution, ``levels`` = latent resolution)."""
        return min(self.width * 2 ** (level - 1), self.max_width)


class UnshuffleConv2d(nn.Conv2d):
    """``conv(pixel_unshuffle(x, r))`` computed as one stride-``r`` convolution of ``x``.

    Holds the weights of the ``in_channels * r * r`` -> ``out_channels``
    convolution (odd ``kernel_size``, "same" padding) that follows a
    pixel-unshuffle, so its parameters and checkpoint keys are those of that
    ``nn.Conv2d``. The forward pass rearranges them into a ``kernel_size * r``
    kernel applied with stride ``r`` to the full-resolution input: the same
    function, without materialising the unshuffled tensor. On a CPU that copy
    and the convolution over its many thin channels cost about five times the
    strided convolution (16x9x128x128 input, 3x3 -> 16 channels: 16.9 vs 3.2 ms).

    Args:
        in_channels: Channels of the full-resolution input.
        out_channels: Output channels.
        kernel_size: Odd kernel side at the unshuffled resolution.
        r: Unshuffle factor.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, r: int) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"Expect an odd `kernel_size`, actually: {kernel_size}")
        super().__init__(in_channels * r * r, out_channels, kernel_size, padding=kernel_size // 2)
        self.r = r
        self.full_in_channels = in_channels

    def full_weight(self) -> Tensor:
        """``(out, in, k r, k r)``: unshuffled channel ``c r^2 + dy r + dx`` at tap ``(ky, kx)`` -> pixel ``(ky r + dy, kx r + dx)``."""
        O, k, r = self.out_channels, self.kernel_size[0], self.r
        w = self.weight.view(O, self.full_in_channels, r, r, k, k)  # (O, C, dy, dx, ky, kx)
        return w.permute(0, 1, 4, 2, 5, 3).reshape(O, self.full_in_channels, k * r, k * r)

    def forward(self, x: Tensor) -> Tensor:
        k, r = self.kernel_size[0], self.r
        return F.conv2d(x, self.full_weight(), self.bias, stride=r, padding=(k // 2) * r)


class PixelShuffle(nn.Module):
    """``(N, C * r * r, H, W)`` -> ``(N, C, H * r, W * r)``; ``nn.PixelShuffle`` as one copy (faster on CPU)."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        r = self.r
        x = x.reshape(N, C // (r * r), r, r, H, W)  # (N, C/r^2, r, r, H, W)
        return x.permute(0, 1, 4, 2, 5, 3).reshape(N, C // (r * r), H * r, W * r)


class ResBlock(nn.Module):
    """``x + conv(silu(conv(x)))`` at constant resolution and width."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


class Codec(nn.Module):
    """Per-frame RGB-D autoencoder: ``(N, 4, H, W) <-> (N, C, H/f, W/f)``.

    Encoder: pixel-unshuffle by 2, a 3x3 conv, a stride-2 3x3 conv per further
    level, residual blocks at latent resolution, and a 3x3 conv to
    ``latent_channels``. Decoder: a 3x3 conv, then per level residual blocks
    and a 1x1 conv + pixel-shuffle up to half resolution, and a 3x3 conv +
    pixel-shuffle to full resolution. The decoder is the heavier half: it has
    to invent the detail the latent does not hold. No normalisation layers, so a frame's
    latent depends on that frame only and batching never changes results.

    Args:
        config: The codec's shape.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        n = c.levels
        enc: list[nn.Module] = [
            nn.Identity(),  # held the pixel-unshuffle, now folded into the next conv; keeps the checkpoint keys
            UnshuffleConv2d(c.in_channels, c.level_width(1), 3, 2),
            nn.SiLU(),
        ]
        for level in range(2, n + 1):
            enc += [nn.Conv2d(c.level_width(level - 1), c.level_width(level), 3, stride=2, padding=1), nn.SiLU()]
        enc += [ResBlock(c.level_width(n)) for _ in range(c.encoder_blocks)]
        enc += [nn.Conv2d(c.level_width(n), c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, c.level_width(n), 3, padding=1), nn.SiLU()]
        for level in range(n, 1, -1):
            dec += [ResBlock(c.level_width(level)) for _ in range(c.decoder_blocks)]
            dec += [nn.Conv2d(c.level_width(level), 4 * c.level_width(level - 1), 1), PixelShuffle(2), nn.SiLU()]
        dec += [nn.Conv2d(c.level_width(1), c.in_channels * 4, 3, padding=1), PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)

        # Per-channel latent statistics, set by codec training; persistent so they ship with the weights.
        self.register_buffer("latent_mean", torch.zeros(c.latent_channels))
        self.register_buffer("latent_std", torch.ones(c.latent_channels))

    def encode(self, x: Tensor) -> Tensor:
        """Encode model-space frames to standardised latents.

        Args:
            x: ``(N, in_channels, H, W)`` in [-1, 1]; H and W divisible by ``factor``.

        Returns:
            ``(N, latent_channels, H / factor, W / factor)``.
        """
        z = self.encoder(x)  # (N, C, h, w)
        return (z - self.latent_mean.view(1, -1, 1, 1)) / self.latent_std.view(1, -1, 1, 1)

    def decode(self, z: Tensor) -> Tensor:
        """Decode standardised latents to model-space frames (not clamped).

        Args:
            z: ``(N, latent_channels, h, w)``.

        Returns:
            ``(N, in_channels, h * factor, w * factor)``.
        """
        z = z * self.latent_std.view(1, -1, 1, 1) + self.latent_mean.view(1, -1, 1, 1)
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct frames (the codec's training forward).

        Args:
            x: ``(N, in_channels, H, W)``.

        Returns:
            ``(N, in_channels, H, W)``.
        """
        return self.decode(self.encode(x))
