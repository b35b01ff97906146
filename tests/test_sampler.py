"""Few-step flow-matching sampler with spatially varying initial noise."""

from __future__ import annotations

import pytest
import torch

from worldenv.model.sampler import FlowSampler, SamplerConfig, token_coverage, token_start_times, tokens_to_cells

GRID, PATCH = (2, 3), 2  # 6 tokens over a 4x6 latent


def oracle(x0: torch.Tensor, grid: tuple[int, int] = GRID, patch: int = PATCH, log: list | None = None):
    """A denoiser that knows the answer: returns the exact velocity towards ``x0`` (so x0_hat = x0)."""

    def denoise(x: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
        if log is not None:
            log.append((x.clone(), t.clone(), k))
        tc = tokens_to_cells(t, grid, patch)
        return (x - x0) / tc  # x = (1 - t) x0 + t eps  =>  v = eps - x0 = (x - x0) / t

    return denoise


def test_start_times_and_coverage() -> None:
    m = torch.zeros(1, 1, 4, 6)
    m[:, :, :2, :2] = 1.0  # token 0 fully covered
    m[:, :, :2, 2] = 1.0  # token 1 half covered
    cov = token_coverage(m, PATCH, levels=8)
    torch.testing.assert_close(cov, torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0, 0.0]]))
    t = token_start_times(cov, warp_noise=0.6)
    torch.testing.assert_close(t, torch.tensor([[0.6, 0.8, 1.0, 1.0, 1.0, 1.0]]))
    # Coverage is rounded to the levels.
    m2 = torch.full((1, 1, 4, 6), 0.3)
    assert torch.allclose(token_coverage(m2, PATCH, levels=4), torch.full((1, 6), 0.25))


def test_tokens_to_cells_layout() -> None:
    t = torch.arange(6.0).view(1, 6)
    cells = tokens_to_cells(t, GRID, PATCH)
    assert cells.shape == (1, 1, 4, 6)
    assert cells[0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert cells[0, 0, 3].tolist() == [3, 3, 4, 4, 5, 5]


@pytest.mark.parametrize("solver", ["renoise", "euler"])
@pytest.mark.parametrize("timesteps", [(1.0,), (1.0, 0.2), (1.0, 0.7, 0.4, 0.1)])
def test_exact_denoiser_recovers_x0(solver: str, timesteps: tuple[float, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 6, generator=g)
    z_warp = torch.randn(2, 3, 4, 6, generator=g)
    cov = torch.rand(2, 6, generator=g)
    sampler = FlowSampler(SamplerConfig(timesteps=timesteps, solver=solver), GRID, PATCH)
    out = sampler.sample(oracle(x0), z_warp, cov, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_spatially_varying_start_and_per_token_times() -> None:
    """Warped tokens start from the warp at warp_noise, holes from pure noise; each step clamps to the schedule."""
    cfg = SamplerConfig(timesteps=(1.0, 0.5, 0.2), warp_noise=0.6)
    sampler = FlowSampler(cfg, GRID, PATCH)
    z_warp = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(2))
    cov = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.5, 0.0]])
    log: list = []
    sampler.sample(oracle(torch.zeros_like(z_warp), log=log), z_warp, cov, torch.Generator().manual_seed(3))
    ts = [t for _, t, _ in log]
    torch.testing.assert_close(ts[0], torch.tensor([[0.6, 0.6, 1.0, 1.0, 0.8, 1.0]]))
    torch.testing.assert_close(ts[1], torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]))
    torch.testing.assert_close(ts[2], torch.full((1, 6), 0.2))
    assert [k for _, _, k in log] == [0, 1, 2]
    # The initial latent of a fully warped token is (1 - 0.6) z_warp + 0.6 eps; replay eps to check.
    eps = torch.randn((3, 1, 3, 4, 6), generator=torch.Generator().manual_seed(3))[0]
    x_init = log[0][0]
    torch.testing.assert_close(x_init[..., :2, :2], 0.4 * z_warp[..., :2, :2] + 0.6 * eps[..., :2, :2])
    torch.testing.assert_close(x_init[..., :2, 4:], eps[..., :2, 4:])  # a hole token: pure noise


def test_same_generator_same_sample_and_different_seed_differs() -> None:
    def denoise(x: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
        return torch.tanh(x) * tokens_to_cells(t, GRID, PATCH)

    sampler = FlowSampler(SamplerConfig(), GRID, PATCH)
    z = torch.randn(2, 3, 4, 6)
    cov = torch.rand(2, 6)
    a = sampler.sample(denoise, z, cov, torch.Generator().manual_seed(7))
    b = sampler.sample(denoise, z, cov, torch.Generator().manual_seed(7))
    c = sampler.sample(denoise, z, cov, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timesteps": ()}, "Expect `timesteps` to have 1 to 4 entries, actually: 0"),
        ({"timesteps": (1.0, 0.8, 0.6, 0.4, 0.2)}, "Expect `timesteps` to have 1 to 4 entries, actually: 5"),
        ({"timesteps": (0.9, 0.2)}, "Expect `timesteps` to start at 1.0 (holes start from pure noise), actually: 0.9"),
        ({"timesteps": (1.0, 0.2, 0.3)}, "Expect `timesteps` strictly decreasing in (0, 1], actually: (1.0, 0.2, 0.3)"),
        ({"timesteps": (1.0, 0.0)}, "Expect `timesteps` strictly decreasing in (0, 1], actually: (1.0, 0.0)"),
        ({"warp_noise": 0.0}, "Expect `warp_noise` in (0, 1], actually: 0.0"),
        ({"solver": "ddim"}, "Expect `solver` to be one of ('renoise', 'euler'), actually: 'ddim'"),
        ({"coverage_levels": 0}, "Expect `coverage_levels` to be a positive int, actually: 0"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        SamplerConfig(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message
