"""Stage 1: train the RGB-D codec (and the warp blend) on ground-truth frames and warps.

Losses, in model space (RGB in [-1, 1], normalised log-depth):

- reconstruction: L1 on RGB and on depth, plus L1 on their horizontal and
  vertical finite differences (the gradient term keeps edges sharp; an L1
  alone settles for blur). Frames are ground-truth targets and memory warps
  (holes zeroed, as the world model encodes them).
- blend: the :class:`~worldenv.model.blend.WarpBlend` learns where to trust
  the full-resolution warp over a decoded frame. The decoded frame it sees is
  the codec's reconstruction from a *perturbed* latent (Gaussian noise of a
  random scale), standing in for the generator's imperfect latents, so the
  blend does not learn to trust the decoder more than a generated frame
  deserves. The blend's gradient does not reach the codec.

At the end the latent statistics (``latent_mean`` / ``latent_std``) are set
from training frames, so the DiT sees roughly unit-variance latents.

Run: ``worldenv train codec --out runs/codec --steps 1500``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldenv.model import ModelConfig, WorldModel, frames_to_model
from worldenv.train.run import Run, RunConfig, clip_grad
from worldenv.train.state import EMA

__all__ = ["CodecTrainConfig", "train_codec", "recon_loss", "frames_of"]


@dataclass
class CodecTrainConfig:
    """Codec stage.

    Attributes:
        run: Shared run options.
        model: World model shape (only the codec and blend parts are trained here).
        frames_per_step: Ground-truth frames per step per process (drawn from the batch's clips).
        warps_per_step: Warp frames per step per process.
        grad_weight: Weight of the finite-difference term.
        depth_weight: Weight of the depth terms relative to RGB.
        blend_noise: Largest latent perturbation (in latent standard deviations) for the blend.
        stats_batches: Batches used to set the latent statistics at the end.
    """

    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out="runs/codec", lr=1e-3, steps=1500))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    frames_per_step: int = 12
    warps_per_step: int = 4
    grad_weight: float = 0.5
    depth_weight: float = 1.0
    blend_noise: float = 1.0
    stats_batches: int = 8

    def __post_init__(self) -> None:
        if self.frames_per_step < 1 or self.warps_per_step < 0:
            raise ValueError(
                f"Expect `frames_per_step` >= 1 and `warps_per_step` >= 0, "
                f"actually: {self.frames_per_step}, {self.warps_per_step}"
            )
        if self.grad_weight < 0 or self.depth_weight < 0 or self.blend_noise < 0:
            raise ValueError("Expect `grad_weight`, `depth_weight`, `blend_noise` >= 0, actually: a negative value")
        if self.model.height != self.run.clip.size or self.model.width != self.run.clip.size:
            raise ValueError(
                f"Expect the clip size ({self.run.clip.size}) to equal the model's frame size "
                f"({self.model.height}x{self.model.width}), actually: they differ"
            )


def frames_of(batch: dict[str, Tensor], cfg: ModelConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Model-space targets, warps and warp masks of a clip batch, flattened over (B, T).

    Returns:
        ``x`` ``(B*T, 4, H, W)``, ``x_warp`` ``(B*T, 4, H, W)`` with holes zeroed, ``m`` ``(B*T, 1, H, W)``.
    """
    rgb = batch["rgb"].flatten(0, 1)
    depth = batch["depth"].flatten(0, 1).float()
    x = frames_to_model(rgb, depth, cfg.depth_near, cfg.depth_far)
    m = batch["warp_mask"].flatten(0, 1)[:, None].float()
    x_warp = frames_to_model(
        batch["warp_rgb"].flatten(0, 1), batch["warp_depth"].flatten(0, 1).float(), cfg.depth_near, cfg.depth_far
    ) * m
    return x, x_warp, m


def _grad_l1(a: Tensor, b: Tensor) -> Tensor:
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def recon_loss(pred: Tensor, target: Tensor, grad_weight: float, depth_weight: float) -> tuple[Tensor, dict[str, float]]:
    """L1 + finite-difference L1 on RGB and depth.

    Args:
        pred: ``(N, 4, H, W)`` model space.
        target: ``(N, 4, H, W)``.
        grad_weight: Weight of the finite-difference term.
        depth_weight: Weight of depth relative to RGB.

    Returns:
        The loss and its parts for logging.
    """
    l_rgb = (pred[:, :3] - target[:, :3]).abs().mean()
    l_depth = (pred[:, 3:] - target[:, 3:]).abs().mean()
    g_rgb = _grad_l1(pred[:, :3], target[:, :3])
    g_depth = _grad_l1(pred[:, 3:], target[:, 3:])
    loss = l_rgb + depth_weight * l_depth + grad_weight * (g_rgb + depth_weight * g_depth)
    return loss, {"l1_rgb": l_rgb.item(), "l1_depth": l_depth.item(), "grad_rgb": g_rgb.item()}


def psnr_rgb(pred: Tensor, target: Tensor) -> float:
    """PSNR (dB) of model-space RGB, measured in [0, 1]."""
    mse = ((pred[:, :3].clamp(-1, 1) - target[:, :3]) / 2).pow(2).mean()
    return float(10 * torch.log10(1.0 / mse.clamp_min(1e-12)))


class _CodecAndBlend(nn.Module):
    """The modules this stage trains, as one DDP unit."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.codec = model.codec
        self.blend = model.blend

    def forward(self, x: Tensor, x_warp: Tensor, m: Tensor, sigma: Tensor, eps: Tensor) -> tuple[Tensor, Tensor | None]:
        z = self.codec.encode(x)  # (N, C, h, w); the first eps.shape[0] frames are ground truth
        recon = self.codec.decode(z)
        if self.blend is None:
            return recon, None
        zg = z[: eps.shape[0]].detach()
        noisy = zg + sigma.view(-1, 1, 1, 1) * zg.std() * eps
        with torch.no_grad():
            dec = self.codec.decode(noisy)
        return recon, self.blend(dec, x_warp, m)


@torch.no_grad()
def set_latent_stats(model: WorldModel, run: Run, batches: int, cfg: ModelConfig) -> None:
    """Set the codec's latent mean/std from training frames (encode/decode round trips are unchanged)."""
    codec = model.codec
    codec.latent_mean.zero_()
    codec.latent_std.fill_(1.0)
    zs = []
    for _ in range(batches):
        x, _, _ = frames_of(run.batch(), cfg)
        zs.append(codec.encode(x).transpose(0, 1).flatten(1))  # (C, N*h*w)
    z = torch.cat(zs, 1)
    if run.dist.distributed:  # every rank must ship the same buffers
        import torch.distributed as dist

        stats = torch.stack([z.mean(1), z.pow(2).mean(1)])
        dist.all_reduce(stats)
        stats /= run.dist.world_size
        mean, sq = stats
    else:
        mean, sq = z.mean(1), z.pow(2).mean(1)
    codec.latent_mean.copy_(mean)
    codec.latent_std.copy_((sq - mean**2).clamp_min(1e-8).sqrt())


def train_codec(cfg: CodecTrainConfig) -> WorldModel:
    """Train the codec and blend; write ``<out>/model.safetensors`` (a WorldModel with an untrained DiT)."""
    rc = cfg.run
    run = Run(rc, {"stage": "codec", **_asdict(cfg)})
    dev = run.dist.device
    torch.manual_seed(rc.seed)  # same initial weights on every rank
    model = WorldModel(cfg.model).to(dev)
    unit = _CodecAndBlend(model)
    params = [p for p in unit.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=rc.lr, weight_decay=rc.weight_decay)
    ema = EMA(unit, rc.ema_decay)
    start = run.resume({"unit": unit}, {"opt": opt}, {"unit": ema})
    net = run.wrap(unit)
    run.start_logging(start)
    for step in range(start, rc.steps):
        lr = run.set_lr(step, opt)
        x, x_warp, m = frames_of(run.batch(), cfg.model)
        n_gt = min(cfg.frames_per_step, x.shape[0])
        pick = torch.randperm(x.shape[0], generator=run.gen, device="cpu")[:n_gt].to(dev)
        wpick = pick[: cfg.warps_per_step]
        inputs = torch.cat([x[pick], x_warp[wpick]])  # GT frames, then warps (holes zeroed)
        sigma = torch.rand(n_gt, generator=run.gen, device="cpu").to(dev) * cfg.blend_noise
        lat = (n_gt, cfg.model.latent_channels, cfg.model.height // cfg.model.codec_factor,
               cfg.model.width // cfg.model.codec_factor)  # fmt: skip
        eps = torch.randn(lat, generator=run.gen, device=dev)
        recon, blended = net(inputs, x_warp[pick], m[pick], sigma, eps)
        loss, parts = recon_loss(recon, inputs, cfg.grad_weight, cfg.depth_weight)
        if blended is not None:
            l_blend = (blended - x[pick]).abs().mean()
            loss = loss + l_blend
            parts["blend_l1"] = l_blend.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        parts["grad_norm"] = clip_grad(params, rc.grad_clip)
        opt.step()
        ema.update(unit)
        parts["loss"] = loss.item()
        parts["psnr_recon"] = psnr_rgb(recon[:n_gt].detach(), inputs[:n_gt])
        parts["lr"] = lr
        run.log(step, parts)
        run.checkpoint(step + 1, force=step + 1 == rc.steps)
    ema.copy_to(unit)
    set_latent_stats(model, run, cfg.stats_batches, cfg.model)
    if run.dist.main:
        model.save_pretrained(run.out / "model.safetensors")
    run.dist.barrier()
    run.finish()
    return model


def _asdict(cfg: object) -> dict:
    d = dataclasses.asdict(cfg)  # type: ignore[call-overload]
    if "model" in d:
        d["model"]["timesteps"] = list(d["model"]["timesteps"])
    return d
