"""Few-step flow-matching sampling with spatially varying initial noise.

Flow matching here: ``x_t = (1 - t) x_0 + t eps`` with t in [0, 1]; the DiT
predicts the velocity ``v = eps - x_0``, so ``x_0 = x_t - t v``.

**Spatially varying noise (WorldWarp).** The warp of the spatial memory
already shows most of the new frame. A token whose patch is fully covered by
the warp starts from the warp latent at the partial noise level
``warp_noise``; a token over a hole starts from pure noise (t = 1); partly
covered tokens start in between, linearly in their covered fraction. The DiT
gets each token's own timestep, so "refine what was warped" and "generate
what was not" happen in one pass. At denoising step k a token sits at
``min(start, timesteps[k])``: once the schedule falls below a token's start
level, all tokens move together.

**Solvers.** ``"renoise"`` (default) is the sampler of few-step generators
distilled with DMD / self-forcing: predict ``x_0``, then re-noise it with
fresh noise to the next level. ``"euler"`` integrates the ODE with the
predicted velocity (deterministic given the initial noise). Both draw every
random number from the caller's ``torch.Generator``, so a seed fixes the
frames.

**How the generated frame enters the cache** is the world model's choice
(``ModelConfig.cache_update``); see :mod:`worldenv.model.world_model`. The
sampler only returns the clean latent ``x_0`` of the last step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SamplerConfig", "FlowSampler", "token_coverage", "token_start_times", "tokens_to_cells"]

SOLVERS = ("renoise", "euler")

# denoise(x (B, C, h, w), t (B, N), step index) -> velocity (B, C, h, w)
Denoiser = Callable[[Tensor, Tensor, int], Tensor]


@dataclass
class SamplerConfig:
    """Few-step schedule.

    Attributes:
        timesteps: Noise levels at which the DiT is called, strictly decreasing,
            first 1.0, 1 to 4 of them. ``(1.0, 0.2)`` is WorldFM's 2-step
            schedule with t_mid = 200 / 1000.
        warp_noise: Start level of tokens fully covered by the warp, in (0, 1].
        solver: ``"renoise"`` (x0 prediction + fresh noise) or ``"euler"``.
        coverage_levels: A token's warp coverage is rounded to multiples of
            ``1 / coverage_levels`` before it sets the token's start level.
    """

    timesteps: tuple[float, ...] = (1.0, 0.2)
    warp_noise: float = 0.6
    solver: str = "renoise"
    coverage_levels: int = 8

    def __post_init__(self) -> None:
        ts = tuple(float(t) for t in self.timesteps)
        self.timesteps = ts
        if not 1 <= len(ts) <= 4:
            raise ValueError(f"Expect `timesteps` to have 1 to 4 entries, actually: {len(ts)}")
        if ts[0] != 1.0:
            raise ValueError(f"Expect `timesteps` to start at 1.0 (holes start from pure noise), actually: {ts[0]}")
        if any(not (0.0 < t <= 1.0) for t in ts) or any(a <= b for a, b in zip(ts[:-1], ts[1:], strict=True)):
            raise ValueError(f"Expect `timesteps` strictly decreasing in (0, 1], actually: {ts}")
        if not (0.0 < float(self.warp_noise) <= 1.0):
            raise ValueError(f"Expect `warp_noise` in (0, 1], actually: {self.warp_noise}")
        lv = self.coverage_levels
        if not isinstance(lv, int) or isinstance(lv, bool) or lv < 1:
            raise ValueError(f"Expect `coverage_levels` to be a positive int, actually: {lv!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"Expect `solver` to be one of {SOLVERS}, actually: {self.solver!r}")

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def token_coverage(mask_latent: Tensor, patch: int, levels: int) -> Tensor:
    """Fraction of each token's patch covered by the warp, rounded to multiples of ``1 / levels``.

    Args:
        mask_latent: ``(B, 1, h, w)`` validity at latent resolution, in [0, 1].
        patch: Patch side in latent cells.
        levels: Rounding steps.

    Returns:
        ``(B, N)``, row-major over the token grid.
    """
    cov = F.avg_pool2d(mask_latent, patch).flatten(1)  # (B, gh*gw)
    return torch.round(cov * levels) / levels


def token_start_times(coverage: Tensor, warp_noise: float) -> Tensor:
    """Start noise level per token: 1 over holes, ``warp_noise`` where fully warped, linear between.

    Args:
        coverage: ``(B, N)`` in [0, 1].
        warp_noise: Level of a fully covered token.

    Returns:
        ``(B, N)``.
    """
    return 1.0 - coverage * (1.0 - warp_noise)


def tokens_to_cells(t: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """Per-token values ``(B, N)`` -> per-latent-cell map ``(B, 1, gh * p, gw * p)``."""
    B = t.shape[0]
    gh, gw = grid
    t = t.view(B, 1, gh, 1, gw, 1).expand(B, 1, gh, patch, gw, patch)  # (B, 1, gh, p, gw, p)
    return t.reshape(B, 1, gh * patch, gw * patch)


class FlowSampler:
    """Few-step sampler over a denoiser callable (the DiT bound to a stream's cache and conditions).

    Args:
        config: The schedule.
        grid: Token grid (gh, gw).
        patch: Patch side in latent cells.
    """

    def __init__(self, config: SamplerConfig, grid: tuple[int, int], patch: int) -> None:
        self.config = config
        self.grid = grid
        self.patch = patch

    def noise_draws(self) -> int:
        """Gaussian draws of latent shape one :meth:`sample` consumes."""
        return self.config.steps if self.config.solver == "renoise" else 1

    def sample(
        self,
        denoise: Denoiser,
        z_warp: Tensor,
        coverage: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Sample clean latents for one frame per stream.

        Args:
            denoise: ``denoise(x, t, k)`` -> velocity for ``x`` ``(B, C, h, w)`` at per-token
                timesteps ``t`` ``(B, N)`` in step ``k``.
            z_warp: ``(B, C, h, w)`` latent of the warp (holes encoded as zeros in model space).
            coverage: ``(B, N)`` warp coverage per token (from :func:`token_coverage`).
            generator: Source of every random number.

        Returns:
            ``(B, C, h, w)`` float32 clean latent ``x_0``.
        """
        cfg = self.config
        start = token_start_times(coverage, cfg.warp_noise)  # (B, N)
        noise = torch.randn(
            (self.noise_draws(), *z_warp.shape), generator=generator, device=z_warp.device, dtype=torch.float32
        )  # (draws, B, C, h, w)
        t = start
        t_cells = tokens_to_cells(t, self.grid, self.patch)  # (B, 1, h, w)
        x = torch.lerp(z_warp.float(), noise[0], t_cells)  # (1 - t) z_warp + t eps
        for k in range(cfg.steps):
            v = denoise(x, t, k).float()
            x0 = x - t_cells * v
            if k + 1 == cfg.steps:
                return x0
            t_next = torch.clamp(start, max=cfg.timesteps[k + 1])  # (B, N)
            next_cells = tokens_to_cells(t_next, self.grid, self.patch)
            if cfg.solver == "renoise":
                x = torch.lerp(x0, noise[k + 1], next_cells)
            else:
                x = x + (next_cells - t_cells) * v
            t, t_cells = t_next, next_cells
        raise AssertionError("unreachable: the schedule has at least one step")
