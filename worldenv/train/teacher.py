"""Stage 2: the teacher, a multi-step flow-matching DiT with the world model's conditioning.

A training clip is laid out as the streaming model sees it
(:class:`~worldenv.model.ClipLayout` with ``noisy=True``)::

    [ ref | ctx_1 .. ctx_T (clean latents, t = 0) | noisy_1 .. noisy_T ]

Noisy frame j attends to the reference, to the last W clean context frames
before it and to itself, and carries its warp latent and mask (made through
the spatial memory, see :mod:`worldenv.train.data`) on the condition
channels. Flow matching: ``x_t = (1 - t) x_0 + t eps`` per token, target
velocity ``eps - x_0``.

**Per-token noise levels (fill and revise, after WorldWarp).** Each frame
draws two levels: ``u_hole ~ U(0, 1)`` for tokens over holes and
``u_warp ~ U(0, warp_t_max)`` for tokens the warp covers; a partly covered
token mixes them by its coverage. The model thus learns both "generate what
is missing" and "revise what was warped" within one frame, at independent
levels, as the sampler later asks of it.

**Conditioning dropout.** With probability ``cond_dropout`` a frame's warp
latent and mask are zeroed, so the teacher also models the unconditional
velocity (classifier-free guidance during distillation).

Run: ``worldenv train teacher --init runs/codec/model.safetensors --out runs/teacher``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldenv.model import (
    ClipLayout,
    ModelConfig,
    WorldModel,
    frames_to_model,
    token_coverage,
)
from worldenv.model.sampler import tokens_to_cells
from worldenv.train.codec import _asdict, frames_of
from worldenv.train.run import Run, RunConfig, clip_grad
from worldenv.train.state import EMA

__all__ = ["TeacherTrainConfig", "train_teacher", "ClipInputs", "encode_clip", "clip_forward"]


@dataclass
class TeacherTrainConfig:
    """Teacher stage.

    Attributes:
        run: Shared run options.
        model: World model shape (the teacher shares the student's DiT shape, so the
            student can start from its weights).
        init: A WorldModel checkpoint to start from (the codec stage's result); its codec is frozen.
        cond_dropout: Probability of zeroing a frame's warp condition.
        warp_t_max: Largest noise level of warped tokens.
        clip_frames: Target frames per clip used (<= the clips' T).
    """

    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out="runs/teacher", lr=3e-4, steps=2000))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    init: str = "runs/codec/model.safetensors"
    cond_dropout: float = 0.1
    warp_t_max: float = 0.7
    clip_frames: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"Expect `cond_dropout` in [0, 1), actually: {self.cond_dropout}")
        if not 0.0 < self.warp_t_max <= 1.0:
            raise ValueError(f"Expect `warp_t_max` in (0, 1], actually: {self.warp_t_max}")
        if self.clip_frames < 1:
            raise ValueError(f"Expect `clip_frames` >= 1, actually: {self.clip_frames}")


@dataclass
class ClipInputs:
    """A clip batch in latent space.

    Attributes:
        z_ref: ``(B, 1, C, h, w)`` reference latent.
        z: ``(B, T, C, h, w)`` target latents.
        cond: ``(B, T, C + 1, h, w)`` warp latents and mask at latent resolution.
        coverage: ``(B, T, N)`` warp coverage per token.
        plucker: ``(B, 1 + 2T, N, 6)`` camera rays of [ref, ctx, noisy].
        proj: ``(B, 1 + 2T, 4, 4)`` PRoPE matrices.
        layout: The clip layout.
    """

    z_ref: Tensor
    z: Tensor
    cond: Tensor
    coverage: Tensor
    plucker: Tensor
    proj: Tensor
    layout: ClipLayout


@torch.no_grad()
def encode_clip(model: WorldModel, batch: dict[str, Tensor], frames: int) -> ClipInputs:
    """Encode a clip batch with the (frozen) codec; the first ``frames`` targets are used."""
    cfg = model.config
    per_frame = ("rgb", "depth", "c2w", "warp_rgb", "warp_depth", "warp_mask")
    batch = {k: v[:, :frames] if k in per_frame else v for k, v in batch.items()}
    B, T = batch["rgb"].shape[:2]
    x, x_warp, m = frames_of(batch, cfg)  # (B*T, 4, H, W) x2, (B*T, 1, H, W)
    x_ref = frames_to_model(batch["ref_rgb"], batch["ref_depth"].float(), cfg.depth_near, cfg.depth_far)
    z_all = model.codec.encode(torch.cat([x_ref, x, x_warp]))  # (B + 2BT, C, h, w)
    z_ref, z, z_warp = z_all[:B], z_all[B : B + B * T], z_all[B + B * T :]
    m_lat = F.avg_pool2d(m, cfg.codec_factor)  # (B*T, 1, h, w)
    cond = torch.cat([z_warp, m_lat], 1)
    cov = token_coverage(m_lat, cfg.patch_size, cfg.coverage_levels)  # (B*T, N)
    c2w = torch.cat([batch["ref_c2w"][:, None], batch["c2w"], batch["c2w"]], 1)  # (B, 1 + 2T, 4, 4)
    plucker, proj = model.camera_inputs(batch["ref_c2w"], c2w, batch["K"])
    lat = z.shape[1:]
    return ClipInputs(
        z_ref=z_ref.view(B, 1, *lat),
        z=z.view(B, T, *lat),
        cond=cond.view(B, T, lat[0] + 1, *lat[1:]),
        coverage=cov.view(B, T, -1),
        plucker=plucker,
        proj=proj,
        layout=ClipLayout.build(1, T, cfg.window, noisy=True),
    )


def clip_forward(dit, model: WorldModel, ci: ClipInputs, ctx: Tensor, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """Velocity of the noisy frames of a clip.

    Args:
        dit: The DiT (or its DDP wrapper).
        model: For shapes and the PRoPE switch.
        ci: The clip's encoded inputs.
        ctx: ``(B, T, C, h, w)`` clean context latents.
        x_t: ``(B, T, C, h, w)`` noisy latents.
        t: ``(B, T, N)`` per-token levels of the noisy frames.
        cond: ``(B, T, C + 1, h, w)`` conditions of the noisy frames.

    Returns:
        ``(B, T, C, h, w)`` predicted velocity of the noisy frames.
    """
    B, T = x_t.shape[:2]
    N = t.shape[-1]
    x_in = torch.cat([ci.z_ref, ctx, x_t], 1)  # (B, 1 + 2T, C, h, w)
    t_in = torch.cat([t.new_zeros(B, 1 + T, N), t], 1)  # (B, 1 + 2T, N)
    c_in = torch.cat([cond.new_zeros(B, 1 + T, *cond.shape[2:]), cond], 1)
    v = dit(x_in, t_in, c_in, ci.plucker, ci.proj if model.config.prope else None, ci.layout)
    return v[:, 1 + T :]


def draw_levels(coverage: Tensor, warp_t_max: float, gen: torch.Generator) -> Tensor:
    """Per-token noise levels: holes at ``u_hole``, warped tokens at ``u_warp``, mixed by coverage.

    Args:
        coverage: ``(B, T, N)`` warp coverage.
        warp_t_max: Top of the warped tokens' range.
        gen: Random source.

    Returns:
        ``(B, T, N)`` in [0, 1].
    """
    B, T, _ = coverage.shape
    dev = coverage.device
    u_hole = torch.rand(B, T, 1, generator=gen, device=dev)
    u_warp = torch.rand(B, T, 1, generator=gen, device=dev) * warp_t_max
    return coverage * u_warp + (1.0 - coverage) * u_hole


def cells(t: Tensor, model: WorldModel) -> Tensor:
    """``(B, T, N)`` per-token values to ``(B, T, 1, h, w)`` per latent cell."""
    B, T, N = t.shape
    dc = model.dit.config
    return tokens_to_cells(t.reshape(B * T, N), dc.grid, dc.patch_size).view(B, T, 1, *dc.latent_size)


def train_teacher(cfg: TeacherTrainConfig) -> WorldModel:
    """Train the teacher DiT; write ``<out>/model.safetensors`` (codec + blend + teacher DiT, EMA weights)."""
    rc = cfg.run
    run = Run(rc, {"stage": "teacher", **_asdict(cfg)})
    dev = run.dist.device
    torch.manual_seed(rc.seed)
    model = WorldModel.from_pretrained(cfg.init, device=dev) if cfg.init else WorldModel(cfg.model).to(dev)
    if model.config.to_dict() != cfg.model.to_dict():
        # The checkpoint fixes the shape; say so rather than silently training another one.
        print(f"teacher: using the model config of {cfg.init}", flush=True)
    model.train()
    for p in model.codec.parameters():
        p.requires_grad_(False)
    if model.blend is not None:
        for p in model.blend.parameters():
            p.requires_grad_(False)
    dit = model.dit
    params = list(dit.parameters())
    opt = torch.optim.AdamW(params, lr=rc.lr, weight_decay=rc.weight_decay)
    ema = EMA(dit, rc.ema_decay)
    start = run.resume({"dit": dit}, {"opt": opt}, {"dit": ema})
    net = run.wrap(dit)
    run.start_logging(start)
    for step in range(start, rc.steps):
        lr = run.set_lr(step, opt)
        ci = encode_clip(model, run.batch(), cfg.clip_frames)
        B, T = ci.z.shape[:2]
        t = draw_levels(ci.coverage, cfg.warp_t_max, run.gen)  # (B, T, N)
        eps = torch.randn(ci.z.shape, generator=run.gen, device=dev)
        x_t = torch.lerp(ci.z, eps, cells(t, model))
        keep = (torch.rand(B, T, 1, 1, 1, generator=run.gen, device=dev) >= cfg.cond_dropout).float()
        v = clip_forward(net, model, ci, ci.z, x_t, t, ci.cond * keep)
        loss = F.mse_loss(v, eps - ci.z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = clip_grad(params, rc.grad_clip)
        opt.step()
        ema.update(dit)
        with torch.no_grad():  # x0 error in the warped and hole tokens, the two jobs of the model
            x0 = x_t - cells(t, model) * v.detach()
            err = (x0 - ci.z).pow(2).mean(2)  # (B, T, h, w)
            cov = cells(ci.coverage, model)[:, :, 0]
            warped = float((err * cov).sum() / cov.sum().clamp_min(1))
            holes = float((err * (1 - cov)).sum() / (1 - cov).sum().clamp_min(1))
        run.log(step, {"loss": loss.item(), "x0_mse_warped": warped, "x0_mse_holes": holes, "grad_norm": gn,
                       "lr": lr})  # fmt: skip
        run.checkpoint(step + 1, force=step + 1 == rc.steps)
    ema.copy_to(dit)
    model.eval()
    if run.dist.main:
        model.save_pretrained(run.out / "model.safetensors")
    run.dist.barrier()
    run.finish()
    return model
