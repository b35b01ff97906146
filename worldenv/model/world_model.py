"""The world model: codec + causal DiT + spatiotemporal cache + few-step sampler, streamed over B episodes.

One :meth:`WorldModel.step`, as data flows::

    warp_rgb, warp_depth, warp_mask ──frames_to_model, holes zeroed──> (B, 4, H, W)
        ──codec.encode──> z_warp (B, C, h, w);  mask ──avg-pool──> m (B, 1, h, w)
    c2w ──relative to the reference──> Plücker rays (+ PRoPE matrices) ──> camera tokens (once per step)
    noise ──spatially varying start (warped tokens at warp_noise, holes at 1)──> x
    for t in timesteps:  DiT([x, z_warp, m], t per token, camera, cache) -> v;  x0 = x - t v; re-noise
    cache update (see below); cache.commit()   -> the frame enters the history ring
    x0 ──codec.decode──> rgb (B, H, W, 3), depth (B, H, W)

**How the generated frame enters the cache** (``ModelConfig.cache_update``):

- ``"clean"`` (default): one extra DiT forward over the clean output ``x0``
  at t = 0 with empty warp/mask channels, as self-forcing and CausVid do. It
  stops after the last layer's keys/values are written (no last-layer
  attention, MLP or head). It costs about one denoising step, but the history
  the model attends to is then exactly what it generated and carries no warp
  signal (InSpatio-World zero-pads the geometric channels of history frames),
  which is also what a trainer feeds as context frames.
- ``"last_step"``: keep the keys/values of the last denoising forward (input
  ``x`` at the last noise level, with its warp channels). Saves that forward
  (about a third of the DiT time with 2 steps, half with 1) at the price of slightly noisy,
  warp-tainted history; a model must be trained for it (context frames =
  last-step inputs in the :class:`~worldenv.model.dit.ClipLayout`).

Exactness: streaming through the cache computes the same function as
``DiT.forward`` over the clip from the episode's start with
``ClipLayout.build(R, T, W)`` (tested to float tolerance).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldenv._checks import check_finite, check_intrinsics, check_tensor
from worldenv.model.blend import WarpBlend
from worldenv.model.cache import CacheState, KVCache
from worldenv.model.camera import (
    normalized_intrinsics,
    plucker_rays,
    prope_matrices,
    ray_directions,
    relative_pose,
)
from worldenv.model.checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from worldenv.model.codec import Codec, CodecConfig, frames_to_model, model_to_frames
from worldenv.model.dit import ClipLayout, DiT, DiTConfig
from worldenv.model.sampler import FlowSampler, SamplerConfig, token_coverage

__all__ = ["ModelConfig", "WorldModel", "WorldModelState", "CACHE_UPDATES", "PRECISIONS"]

CACHE_UPDATES = ("clean", "last_step")
PRECISIONS = ("auto", "fp32", "bf16")
_FLOAT = (torch.float32, torch.float64)


@dataclass
class ModelConfig:
    """Everything that fixes the world model's shape and inference behaviour.

    The default is sized for throughput at B = 16 on a 2-core CPU (the
    environment's 100 frames/s target) and latency at B = 1: one denoising
    step plus the cache-update forward, 16x16x16 latents, 64 tokens per
    frame, a 192-wide 3-block DiT (1.8 M parameters), W = 4, and a codec
    capped at 96 channels (0.48 M). At B = 16 the step is bound by FLOPs,
    shared about equally between the codec (encode, decode, blend) and the
    DiT; at B = 1 by per-op latency. A second denoising step bought nothing
    measurable: the earlier 2-step weights, run with one step, scored the same
    in ``worldenv eval fidelity`` (seen-pixel PSNR 15.46 vs 15.39 dB, loop
    closure 28.9 vs 28.8 dB). PRoPE adds about 2 ms per DiT forward at B = 1
    and is off by default. See ``benchmarks/model.py``.

    Attributes:
        height: Frame height in pixels.
        width: Frame width in pixels.
        depth_near: Nearest depth (m) of the log-depth encoding.
        depth_far: Farthest depth (m) of the log-depth encoding.
        codec_factor: Codec downsampling factor (power of two).
        latent_channels: Channels C of a latent cell.
        codec_width: Codec channels at half resolution (doubling per level).
        codec_max_width: Cap on codec channels.
        codec_encoder_blocks: Codec encoder residual blocks (at latent resolution).
        codec_decoder_blocks: Codec decoder residual blocks per level (latent to quarter resolution).
        patch_size: DiT patch side in latent cells.
        dim: DiT token width.
        layers: DiT blocks.
        heads: DiT attention heads.
        mlp_ratio: DiT MLP width over ``dim``.
        prope: Add PRoPE camera encoding in attention (Plücker rays are always on).
        rope_theta: RoPE base.
        num_ref_frames: Reference (sink) frames per episode, R.
        window: History frames kept, W.
        timesteps: Few-step schedule, e.g. ``(1.0, 0.2)``.
        warp_noise: Start noise level of fully warped tokens.
        solver: ``"renoise"`` or ``"euler"``.
        coverage_levels: Rounding steps of a token's warp coverage (sets its start noise level).
        cache_update: ``"clean"`` or ``"last_step"`` (see module docstring).
        warp_blend: Blend the decoded frame with the full-resolution warp through a learned
            per-pixel weight (:class:`~worldenv.model.blend.WarpBlend`), so regions the memory
            already shows keep their detail instead of passing through the codec.
    """

    height: int = 128
    width: int = 128
    depth_near: float = 0.1
    depth_far: float = 100.0
    codec_factor: int = 8
    latent_channels: int = 16
    codec_width: int = 24
    codec_max_width: int = 96
    codec_encoder_blocks: int = 1
    codec_decoder_blocks: int = 1
    patch_size: int = 2
    dim: int = 192
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    prope: bool = False
    rope_theta: float = 100.0
    num_ref_frames: int = 1
    window: int = 4
    timesteps: tuple[float, ...] = (1.0,)
    warp_noise: float = 0.6
    solver: str = "renoise"
    coverage_levels: int = 8
    cache_update: str = "clean"
    warp_blend: bool = True

    def __post_init__(self) -> None:
        self.timesteps = tuple(float(t) for t in self.timesteps)
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Expect `{name}` to be a positive int, actually: {v!r}")
        if not (0 < self.depth_near < self.depth_far):
            raise ValueError(
                f"Expect 0 < `depth_near` < `depth_far`, "
                f"actually: depth_near={self.depth_near}, depth_far={self.depth_far}"
            )
        if not isinstance(self.warp_blend, bool):
            raise ValueError(f"Expect `warp_blend` to be a bool, actually: {self.warp_blend!r}")
        if not isinstance(self.prope, bool):
            raise ValueError(f"Expect `prope` to be a bool, actually: {self.prope!r}")
        if self.cache_update not in CACHE_UPDATES:
            raise ValueError(f"Expect `cache_update` to be one of {CACHE_UPDATES}, actually: {self.cache_update!r}")
        codec = self.codec_config()  # validates the codec fields
        for name, size in (("height", self.height), ("width", self.width)):
            if size % codec.factor:
                raise ValueError(
                    f"Expect `{name}` ({size}) to be divisible by `codec_factor`, actually: {codec.factor}"
                )
        self.dit_config()
        self.sampler_config()

    def codec_config(self) -> CodecConfig:
        return CodecConfig(
            in_channels=4,
            latent_channels=self.latent_channels,
            factor=self.codec_factor,
            width=self.codec_width,
            max_width=self.codec_max_width,
            encoder_blocks=self.codec_encoder_blocks,
            decoder_blocks=self.codec_decoder_blocks,
        )

    def dit_config(self) -> DiTConfig:
        return DiTConfig(
            latent_channels=self.latent_channels,
            latent_size=(self.height // self.codec_factor, self.width // self.codec_factor),
            patch_size=self.patch_size,
            dim=self.dim,
            layers=self.layers,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            num_ref=self.num_ref_frames,
            window=self.window,
            prope=self.prope,
            rope_theta=self.rope_theta,
        )

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(
            timesteps=self.timesteps,
            warp_noise=self.warp_noise,
            solver=self.solver,
            coverage_levels=self.coverage_levels,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        d = dataclasses.asdict(self)
        d["timesteps"] = list(self.timesteps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Expect ModelConfig fields only, actually: unknown key(s) {unknown}")
        return cls(**d)


@dataclass
class WorldModelState:
    """A copy of the whole streaming state (see :meth:`WorldModel.snapshot`).

    Attributes:
        cache: The KV cache's contents.
        c2w_ref: ``(B, 4, 4)`` float64 reference camera of each stream.
        dirs: ``(B, N, 3)`` token ray directions (from each stream's intrinsics).
        kn: ``(B, 3, 3)`` float64 normalised intrinsics.
        ready: ``(B,)`` bool, stream has been reset.
        frames: ``(B,)`` frames generated since each stream's reset.
        generator: State of the model's own generator (used when ``step`` gets none).
    """

    cache: CacheState
    c2w_ref: Tensor
    dirs: Tensor
    kn: Tensor
    ready: Tensor
    frames: Tensor
    generator: Tensor


@dataclass
class _Streams:
    cache: KVCache
    c2w_ref: Tensor  # (B, 4, 4) float64
    dirs: Tensor  # (B, N, 3)
    kn: Tensor  # (B, 3, 3) float64
    ready: Tensor  # (B,) bool
    frames: Tensor  # (B,) long
    zero_cond: Tensor  # (B, C + 1, h, w)
    zero_t: Tensor  # (B, 1)
    ready_host: list[bool] = field(default_factory=list)


class WorldModel(nn.Module):
    """A learned, 3D-aware, autoregressive video world model over B streams.

    Each stream is an episode: :meth:`reset` gives it a posed RGB-D reference
    view; each :meth:`step` gives the spatial memory's warp at the new camera
    and returns the generated RGB-D frame there. Streams batch together even
    when they are at different points of their episodes.

    Args:
        config: The model's shape; the default config when None.
        seed: Seed of the model's own generator, used when :meth:`step` gets no generator.
        compile: Wrap the DiT's streaming forward and the codec with ``torch.compile``.
        precision: ``"auto"`` (bfloat16 autocast on CUDA, float32 on CPU), ``"fp32"`` or
            ``"bf16"`` (autocast on any device, e.g. a CPU with bfloat16 units). Weights stay
            float32; the KV cache is stored in the compute precision.

    Example:
        >>> model = WorldModel.from_pretrained("default")  # doctest: +SKIP
        >>> model.reset(rgb, depth, c2w, K)  # doctest: +SKIP
        >>> rgb, depth = model.step(warp_rgb, warp_depth, warp_mask, c2w_next)  # doctest: +SKIP
    """

    def __init__(
        self, config: ModelConfig | None = None, *, seed: int = 0, compile: bool = False, precision: str = "auto"
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"Expect `precision` to be one of {PRECISIONS}, actually: {precision!r}")
        self.precision = precision
        self.config = config if config is not None else ModelConfig()
        self.codec = Codec(self.config.codec_config())
        self.dit = DiT(self.config.dit_config())
        self.blend = WarpBlend(4) if self.config.warp_blend else None
        dc = self.dit.config
        self.sampler = FlowSampler(self.config.sampler_config(), dc.grid, dc.patch_size)
        self.seed = int(seed)
        self.use_compile = bool(compile)
        self._streams: _Streams | None = None
        self._generator: torch.Generator | None = None
        self._stream_fn = self.dit.forward_stream
        self._encode_fn = self.codec.encode
        self._decode_fn = self.codec.decode
        if self.use_compile:
            self._stream_fn = torch.compile(self.dit.forward_stream, dynamic=False)
            self._encode_fn = torch.compile(self.codec.encode, dynamic=False)
            self._decode_fn = torch.compile(self.codec.decode, dynamic=False)

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return self.codec.latent_mean.device

    @property
    def num_streams(self) -> int:
        """B of the current episodes (0 before the first :meth:`reset`)."""
        return 0 if self._streams is None else self._streams.cache.batch

    @property
    def frames_since_reset(self) -> Tensor:
        """``(B,)`` frames generated by each stream since its reset."""
        if self._streams is None:
            return torch.zeros(0, dtype=torch.long)
        return self._streams.frames.clone()

    @property
    def cache(self) -> KVCache | None:
        """The streams' KV cache (None before the first :meth:`reset`)."""
        return None if self._streams is None else self._streams.cache

    def _bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and self.device.type == "cuda")

    def _compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self._bf16() else torch.float32

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self._bf16())

    # ------------------------------------------------------------------ frames

    def finish_frame(self, x0: Tensor, x_warp: Tensor, m: Tensor) -> Tensor:
        """Decode clean latents and blend with the full-resolution warp (the last part of a step).

        Args:
            x0: ``(B, C, h, w)`` clean latents.
            x_warp: ``(B, 4, H, W)`` warp in model space, zeros in holes.
            m: ``(B, 1, H, W)`` float validity of the warp.

        Returns:
            ``(B, 4, H, W)`` model-space frame (not clamped).
        """
        frame = self._decode_fn(x0)  # (B, 4, H, W)
        if self.blend is not None:
            frame = self.blend(frame, x_warp, m)
        return frame

    # ------------------------------------------------------------------ cameras

    def camera_inputs(self, c2w_ref: Tensor, c2w: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
        """Plücker rays and PRoPE matrices of frames relative to a reference camera (for clips and streaming).

        Args:
            c2w_ref: ``(B, 4, 4)`` reference camera-to-world.
            c2w: ``(B, F, 4, 4)`` camera-to-world of the frames.
            K: ``(B, 3, 3)`` pixel intrinsics of the episode.

        Returns:
            ``plucker`` ``(B, F, N, 6)`` and ``proj`` ``(B, F, 4, 4)`` float32.
        """
        B, Fr = c2w.shape[:2]
        size = (self.config.height, self.config.width)
        dirs = ray_directions(K, size, self.dit.config.grid)  # (B, N, 3)
        rel = relative_pose(c2w_ref[:, None], c2w).reshape(B * Fr, 4, 4)  # (B*F, 4, 4)
        plucker = plucker_rays(rel, dirs.repeat_interleave(Fr, 0))  # (B*F, N, 6)
        kn = normalized_intrinsics(K, size).repeat_interleave(Fr, 0)  # (B*F, 3, 3)
        proj, _ = prope_matrices(rel, kn)  # (B*F, 4, 4)
        return plucker.view(B, Fr, -1, 6), proj.view(B, Fr, 4, 4)

    # ------------------------------------------------------------------ validation

    def _check_frames(
        self, prefix: str, rgb: Any, depth: Any, dims: dict[str, int], lead: tuple[str | int, ...]
    ) -> None:
        H, W = self.config.height, self.config.width
        dev = self.device
        check_tensor(
            f"{prefix}rgb", rgb, shape=(*lead, H, W, 3), dtype=(torch.float32, torch.uint8), device=dev, dims=dims
        )
        check_tensor(f"{prefix}depth", depth, shape=(*lead, H, W), dtype=_FLOAT, device=dev, dims=dims)
        check_finite(f"{prefix}depth", depth)
        if bool((depth < 0).any()):
            raise ValueError(f"Expect `{prefix}depth` to be >= 0 metres (0 = unknown), actually: negative values")
        if rgb.dtype == torch.float32:
            check_finite(f"{prefix}rgb", rgb)
            lo, hi = torch.aminmax(rgb)
            if float(lo) < 0.0 or float(hi) > 1.0:
                raise ValueError(
                    f"Expect float `{prefix}rgb` in [0, 1], actually: values in [{float(lo):.4g}, {float(hi):.4g}]"
                )

    @staticmethod
    def _check_pose(name: str, c2w: Tensor) -> None:
        check_finite(name, c2w)
        bottom = c2w[..., 3, :].to(torch.float64)
        want = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=c2w.device)
        if bool(((bottom - want).abs() > 1e-4).any()):
            raise ValueError(
                f"Expect `{name}` to be rigid 4x4 camera-to-world matrices with last row [0, 0, 0, 1], "
                f"actually: {bottom.reshape(-1, 4)[0].tolist()}"
            )
        R = c2w[..., :3, :3].to(torch.float64)
        eye = torch.eye(3, dtype=torch.float64, device=c2w.device)
        if bool(((R.transpose(-1, -2) @ R - eye).abs() > 1e-3).any()):
            raise ValueError(
                f"Expect the rotation part of `{name}` to be orthonormal, "
                "actually: R^T R differs from I by more than 1e-3"
            )

    # ------------------------------------------------------------------ episodes

    @torch.no_grad()
    def reset(self, rgb: Tensor, depth: Tensor, c2w: Tensor, K: Tensor, mask: Tensor | None = None) -> None:
        """Start episodes from posed RGB-D reference views.

        With ``mask=None`` every stream restarts (and B may change); otherwise
        only the streams where ``mask`` is True restart and the others are
        left untouched.

        Args:
            rgb: ``(B, H, W, 3)`` float32 in [0, 1] or uint8; ``(B, R, H, W, 3)`` when
                ``num_ref_frames`` R > 1 (the first reference defines the episode's frame).
            depth: ``(B, H, W)`` (or ``(B, R, H, W)``) float32 metres, 0 = unknown.
            c2w: ``(B, 4, 4)`` (or ``(B, R, 4, 4)``) camera-to-world, OpenCV axes.
            K: ``(B, 3, 3)`` pixel intrinsics, used for the whole episode.
            mask: ``(B,)`` bool, streams to reset; None resets all.
        """
        R = self.config.num_ref_frames
        dims: dict[str, int] = {}
        if R == 1 and isinstance(rgb, Tensor) and rgb.dim() == 4:
            lead: tuple[str | int, ...] = ("B",)
        else:
            lead = ("B", R)
        self._check_frames("", rgb, depth, dims, lead)
        check_tensor("c2w", c2w, shape=(*lead, 4, 4), dtype=_FLOAT, device=self.device, dims=dims)
        check_tensor("K", K, shape=("B", 3, 3), dtype=_FLOAT, device=self.device, dims=dims)
        self._check_pose("c2w", c2w)
        check_intrinsics("K", K)
        B = dims["B"]
        if len(lead) == 1:
            rgb, depth, c2w = rgb[:, None], depth[:, None], c2w[:, None]  # (B, 1, ...)
        if mask is None:
            if self.num_streams != B:
                self._allocate(B)  # same B: reuse the preallocated state, so memory stays put across episodes
            idx = torch.arange(B, device=self.device)
        else:
            if self._streams is None:
                raise ValueError("Expect `mask` to be None on the first reset (no streams exist yet), actually: a mask")
            check_tensor("mask", mask, shape=(self.num_streams,), dtype=torch.bool, device=self.device)
            if B != self.num_streams:
                raise ValueError(f"Expect `rgb` to have batch size {self.num_streams} (the streams), actually: {B}")
            idx = mask.nonzero().flatten()
            if idx.numel() == 0:
                return
        s = self._streams
        assert s is not None
        cfg = self.config
        with self._autocast():
            M = idx.numel()
            x = frames_to_model(
                rgb[idx].flatten(0, 1), depth[idx].flatten(0, 1), cfg.depth_near, cfg.depth_far
            )  # (M*R, 4, H, W)
            z = (
                self._encode_fn(x).float().view(M, R, cfg.latent_channels, *self.dit.config.latent_size)
            )  # (M, R, C, h, w)
            c2w_ref = c2w[idx, 0]  # (M, 4, 4)
            plucker, proj = self.camera_inputs(c2w_ref, c2w[idx], K[idx])  # (M, R, N, 6), (M, R, 4, 4)
            layout = ClipLayout.build(R, 0, cfg.window, noisy=False)
            t = torch.zeros(M, R, 1, device=self.device)
            cond = torch.zeros(M, R, cfg.latent_channels + 1, *z.shape[-2:], device=self.device)
            kv: list[tuple[Tensor, Tensor]] = []
            self.dit(z, t, cond, plucker, proj if cfg.prope else None, layout, kv_out=kv)
        s.cache.reset_streams(idx, [k for k, _ in kv], [v for _, v in kv])
        size = (cfg.height, cfg.width)
        s.c2w_ref[idx] = c2w_ref.to(torch.float64)
        s.dirs[idx] = ray_directions(K[idx], size, self.dit.config.grid)
        s.kn[idx] = normalized_intrinsics(K[idx], size)
        s.ready[idx] = True
        s.frames[idx] = 0
        for b in idx.tolist():
            s.ready_host[b] = True

    def _allocate(self, B: int) -> None:
        c, dc = self.config, self.dit.config
        dev = self.device
        cache = KVCache(
            layers=dc.layers,
            batch=B,
            heads=dc.heads,
            head_dim=dc.head_dim,
            tokens=dc.tokens,
            num_ref=dc.num_ref,
            window=dc.window,
            slot_table=self.dit.key_table(torch.arange(dc.slots, device=dev)),
            device=dev,
            dtype=self._compute_dtype(),
        )
        eye = torch.eye(4, dtype=torch.float64, device=dev).repeat(B, 1, 1)
        self._streams = _Streams(
            cache=cache,
            c2w_ref=eye,
            dirs=torch.zeros(B, dc.tokens, 3, device=dev),
            kn=torch.eye(3, dtype=torch.float64, device=dev).repeat(B, 1, 1),
            ready=torch.zeros(B, dtype=torch.bool, device=dev),
            frames=torch.zeros(B, dtype=torch.long, device=dev),
            zero_cond=torch.zeros(B, c.latent_channels + 1, *dc.latent_size, device=dev),
            zero_t=torch.zeros(B, 1, device=dev),
            ready_host=[False] * B,
        )

    def _generator_for(self, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            if torch.device(generator.device).type != self.device.type:
                raise ValueError(f"Expect `generator` on device type {self.device.type}, actually: {generator.device}")
            return generator
        if self._generator is None or torch.device(self._generator.device).type != self.device.type:
            self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        return self._generator

    @torch.no_grad()
    def step(
        self,
        warp_rgb: Tensor,
        warp_depth: Tensor,
        warp_mask: Tensor,
        c2w: Tensor,
        generator: torch.Generator | None = None,
        record: dict[str, Any] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Generate the next frame of every stream at its new camera.

        Args:
            warp_rgb: ``(B, H, W, 3)`` float32 in [0, 1] or uint8, the memory's render at ``c2w``.
            warp_depth: ``(B, H, W)`` float32 metres of the render.
            warp_mask: ``(B, H, W)`` bool, True where the render is valid (holes False).
            c2w: ``(B, 4, 4)`` camera-to-world of the new frame, OpenCV axes.
            generator: Source of all noise; the model's own seeded generator when None.
            record: If a dict, receives what a trainer needs to redo this step with gradients
                (self-forcing): ``"x"`` / ``"t"`` lists of each denoising step's input ``(B, C, h, w)``
                and per-token levels ``(B, N)``, ``"cond"`` ``(B, C+1, h, w)``, ``"x0"`` ``(B, C, h, w)``,
                ``"x_warp"`` ``(B, 4, H, W)`` and ``"m"`` ``(B, 1, H, W)``.

        Returns:
            ``rgb`` ``(B, H, W, 3)`` float32 in [0, 1] and ``depth`` ``(B, H, W)`` float32 metres (0 = unknown).
        """
        s = self._streams
        if s is None or not all(s.ready_host):
            raise RuntimeError("Call `reset` on every stream before `step`: some streams have no reference frame yet")
        dims = {"B": s.cache.batch}
        self._check_frames("warp_", warp_rgb, warp_depth, dims, ("B",))
        H, W = self.config.height, self.config.width
        check_tensor("warp_mask", warp_mask, shape=("B", H, W), dtype=torch.bool, device=self.device, dims=dims)
        check_tensor("c2w", c2w, shape=("B", 4, 4), dtype=_FLOAT, device=self.device, dims=dims)
        self._check_pose("c2w", c2w)
        gen = self._generator_for(generator)
        cfg, dc = self.config, self.dit.config
        with self._autocast():
            m = warp_mask[:, None].to(torch.float32)  # (B, 1, H, W)
            x_warp = frames_to_model(warp_rgb, warp_depth, cfg.depth_near, cfg.depth_far) * m  # (B, 4, H, W)
            z_warp = self._encode_fn(x_warp).float()  # (B, C, h, w)
            m_lat = F.avg_pool2d(m, cfg.codec_factor)  # (B, 1, h, w)
            cond = torch.cat([z_warp, m_lat], dim=1)  # (B, C+1, h, w)
            rel = relative_pose(s.c2w_ref, c2w)  # (B, 4, 4)
            plucker = plucker_rays(rel, s.dirs)[:, None]  # (B, 1, N, 6)
            proj = prope_matrices(rel, s.kn)[0][:, None] if dc.prope else None  # (B, 1, 4, 4)
            camera = self.dit.prepare_camera(plucker, proj)
            cache = s.cache
            mask = cache.attn_mask(dense=self.use_compile)  # (B, 1, 1, S*N) or None; fixed until the commit
            stream = self._stream_fn

            def denoise(x: Tensor, t: Tensor, k: int) -> Tensor:
                if record is not None:
                    record.setdefault("x", []).append(x.clone())
                    record.setdefault("t", []).append(t.clone())
                return stream(x, t, cond, camera, cache, mask)

            coverage = token_coverage(m_lat, dc.patch_size, self.sampler.config.coverage_levels)  # (B, N)
            x0 = self.sampler.sample(denoise, z_warp, coverage, gen)  # (B, C, h, w)
            if cfg.cache_update == "clean":
                stream(x0, s.zero_t, s.zero_cond, camera, cache, mask, True)
            cache.commit()
            s.frames += 1
            frame = self.finish_frame(x0, x_warp, m)  # (B, 4, H, W)
            if record is not None:
                record.update(cond=cond, x0=x0, x_warp=x_warp, m=m)
        return model_to_frames(frame, cfg.depth_near, cfg.depth_far)

    # ------------------------------------------------------------------ branching

    def snapshot(self) -> WorldModelState:
        """Copy the whole streaming state (cache, cameras, counters, own generator) for branching."""
        s = self._streams
        if s is None:
            raise RuntimeError("Nothing to snapshot: call `reset` first")
        gen = self._generator_for(None)
        return WorldModelState(
            cache=s.cache.snapshot(),
            c2w_ref=s.c2w_ref.clone(),
            dirs=s.dirs.clone(),
            kn=s.kn.clone(),
            ready=s.ready.clone(),
            frames=s.frames.clone(),
            generator=gen.get_state(),
        )

    def restore(self, state: WorldModelState) -> None:
        """Return to a :meth:`snapshot`; the continuation is then identical to the original's.

        Args:
            state: From :meth:`snapshot` of a model with the same config and B.
        """
        if not isinstance(state, WorldModelState):
            raise TypeError(f"Expect `state` to be a WorldModelState, actually: {type(state).__name__}")
        B = int(state.ready.shape[0])
        if self._streams is None or self.num_streams != B:
            self._allocate(B)
        s = self._streams
        assert s is not None
        s.cache.restore(state.cache)
        s.c2w_ref.copy_(state.c2w_ref)
        s.dirs.copy_(state.dirs)
        s.kn.copy_(state.kn)
        s.ready.copy_(state.ready)
        s.frames.copy_(state.frames)
        s.ready_host = [bool(r) for r in state.ready.tolist()]
        self._generator_for(None).set_state(state.generator)

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Save weights and config (safetensors, atomic).

        Args:
            path: A ``.safetensors`` file, or a directory (``model.safetensors`` + ``config.json``).
        """
        save_checkpoint(path, self.state_dict(), self.config.to_dict())

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        seed: int = 0,
        compile: bool = False,
        precision: str = "auto",
    ) -> WorldModel:
        """Load a checkpoint.

        Args:
            name_or_path: ``"default"`` (shipped with the package), a ``.safetensors`` file or a directory.
            device: Where to put the model (default: CUDA when available, else CPU).
            seed: Seed of the model's own generator.
            compile: Use ``torch.compile`` for the streaming forward and the codec.
            precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see :class:`WorldModel`).

        Raises:
            FileNotFoundError: No checkpoint there (for ``"default"``: how to train one).
            ValueError: A pickle file, a malformed file, or tensors that do not match the config.
        """
        config_dict, tensors = load_checkpoint(name_or_path)
        config = ModelConfig.from_dict(config_dict)
        model = cls(config, seed=seed, compile=compile, precision=precision)
        expected = model.state_dict()
        check_state_dict(expected, tensors, source=f"checkpoint {name_or_path}")
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device).eval()
