"""Samplers against closed forms: the Bayes-optimal denoiser for Gaussian and mixture data."""

import numpy as np
import pytest
import torch

from unclip.diffusion import (
    GaussianDiffusion,
    analytic_variance,
    ddim_invert,
    estimate_analytic_gamma,
    make_betas,
    make_generators,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)

from .analytic import AnalyticDenoiser, GaussianData, MixtureData, gaussian_sampler_moments

BASE = GaussianDiffusion(make_betas("cosine"))
DATA = GaussianData([0.3, -0.5, 0.1, 0.8], 0.5)
MIX = MixtureData([0.3, 0.7], [[-1.0], [1.0]], [0.25, 0.25])
N = 40_000  # samples: with d = 4 the pooled variance has relative standard error sqrt(2/(N·d)) ≈ 0.35 %
Z = 5.0  # tolerance in standard errors


def _noise(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _run(kind, chain, denoiser, x, seed=1):
    gen = torch.Generator().manual_seed(seed)
    if kind.startswith("ddpm-"):
        variance = kind.split("-")[1]
        gamma = DATA.gamma(chain) if variance == "analytic" else None
        return sample_ddpm(denoiser, x, chain, variance=variance, gamma=gamma, generator=gen)
    if kind.startswith("ddim-"):
        return sample_ddim(denoiser, x, chain, eta=float(kind.split("-")[1]), generator=gen)
    return sample_dpmpp_2m(denoiser, x, chain, generator=gen)


def _expected(kind, chain):
    """Exact moments of the discretised sampler (tests/diffusion/analytic.py), independent of the library."""
    acp = chain.alphas_cumprod
    prev = np.concatenate([[1.0], acp[:-1]])
    beta = 1 - acp / prev
    if kind.startswith("ddpm-"):
        variances = {"small": beta * (1 - prev) / (1 - acp), "large": beta,
                     "analytic": DATA.reverse_variance(chain)}[kind.split("-")[1]]
        return gaussian_sampler_moments(DATA, acp, "ddpm", variances=variances)
    if kind.startswith("ddim-"):
        return gaussian_sampler_moments(DATA, acp, "ddim", eta=float(kind.split("-")[1]))
    return gaussian_sampler_moments(DATA, acp, "dpm")


# The largest relative variance bias of the discretised sampler itself at 50 cosine steps
# (first-order samplers shrink the variance, ~13 % for DDPM-β̃ here; DPM++(2M) is second order).
BIAS_BOUND = {"ddpm-small": 0.15, "ddpm-large": 0.06, "ddpm-analytic": 0.002, "ddim-0": 0.08, "ddim-1": 0.15,
              "dpm": 0.05}


@pytest.mark.parametrize("kind", list(BIAS_BOUND))
def test_gaussian_moments(kind):
    chain = BASE.respace(50)
    x = _run(kind, chain, AnalyticDenoiser(DATA, BASE.alphas_cumprod), _noise(N, 4))
    mean, var = _expected(kind, chain)
    s2 = DATA.std**2
    # 1) the samples follow the exact law of the discretised chain, within Z standard errors;
    assert np.all(np.abs(x.mean(0).numpy() - mean) < Z * np.sqrt(var / N))
    assert abs(x.var(0).mean().item() - var) < Z * var * np.sqrt(2 / (N * 4))
    # 2) which reproduces the data's moments up to the sampler's known discretisation bias.
    assert np.all(np.abs(mean - DATA.mean.numpy()) < 0.01)
    assert abs(var / s2 - 1) < BIAS_BOUND[kind]


@pytest.mark.parametrize("kind", ["ddpm-small", "ddpm-large", "ddpm-analytic", "ddim-0", "ddim-1", "dpm"])
def test_mixture_weight_and_means(kind):
    n, chain = 20_000, BASE.respace(50)
    gamma = None
    if kind == "ddpm-analytic":
        x0 = MIX.means[torch.multinomial(MIX.weights, n, True, generator=torch.Generator().manual_seed(3))]
        x0 = x0 + MIX.stds[0] * _noise(n, 1, seed=4)
        gamma = estimate_analytic_gamma(AnalyticDenoiser(MIX, BASE.alphas_cumprod), x0, chain,
                                        generator=torch.Generator().manual_seed(5))
    den = AnalyticDenoiser(MIX, BASE.alphas_cumprod)
    gen = torch.Generator().manual_seed(1)
    if gamma is not None:
        x = sample_ddpm(den, _noise(n, 1), chain, variance="analytic", gamma=gamma, generator=gen)
    else:
        x = _run(kind, chain, den, _noise(n, 1))
    x = x.flatten()
    left = x < 0  # the components sit 4 standard deviations from 0: the split is the component label
    w = left.double().mean().item()
    # weight: binomial SE plus 0.01 discretisation allowance (measured ≤ 0.006 at 50 steps);
    assert abs(w - 0.3) < Z * np.sqrt(0.3 * 0.7 / n) + 0.01
    # component means: SE of each mean plus 0.03 allowance (the first-order samplers shrink toward 0 by ~0.012).
    for sel, m, frac in ((left, -1.0, 0.3), (~left, 1.0, 0.7)):
        assert abs(x[sel].mean().item() - m) < Z * 0.25 / np.sqrt(frac * n) + 0.03


def test_analytic_dpm_is_nearly_exact_in_few_steps_and_small_is_not():
    chain, x_T = BASE.respace(10), _noise(N, 4)
    den, s2 = AnalyticDenoiser(DATA, BASE.alphas_cumprod), DATA.std**2
    se = s2 * np.sqrt(2 / (N * 4))
    x_ana = sample_ddpm(den, x_T, chain, variance="analytic", gamma=DATA.gamma(chain),
                        generator=torch.Generator().manual_seed(1))
    x_small = sample_ddpm(den, x_T, chain, variance="small", generator=torch.Generator().manual_seed(1))
    err_ana, err_small = abs(x_ana.var(0).mean().item() - s2), abs(x_small.var(0).mean().item() - s2)
    assert err_ana < Z * se
    assert err_small > 20 * se and err_small > 10 * err_ana
    assert torch.allclose(x_ana.mean(0), DATA.mean, atol=Z * DATA.std / np.sqrt(N))


def test_analytic_variance_equals_exact_reverse_variance_for_gaussian_data():
    # For isotropic Gaussian data the true reverse step is isotropic Gaussian, so Analytic-DPM's σ*² is it.
    chain = BASE.respace("ddim15")
    np.testing.assert_allclose(analytic_variance(chain, DATA.gamma(chain))[1:], DATA.reverse_variance(chain)[1:],
                               rtol=1e-9)


def test_estimate_analytic_gamma_matches_closed_form():
    chain, n = BASE.respace(10), 4000
    x0 = DATA.sample(n, torch.Generator().manual_seed(0))
    den = AnalyticDenoiser(DATA, BASE.alphas_cumprod)
    gamma = estimate_analytic_gamma(den, [x0[:2000], x0[2000:]], chain, generator=torch.Generator().manual_seed(1))
    # ε̂ is Gaussian with variance Γ per dim, so ε̂² has relative standard error sqrt(2/(n·d)).
    np.testing.assert_allclose(gamma, DATA.gamma(chain), rtol=Z * np.sqrt(2 / (n * 4)))


def test_learned_variance_with_optimal_frac_is_exact():
    chain = BASE.respace(10)
    den = AnalyticDenoiser(DATA, BASE.alphas_cumprod, var_chain=chain)
    x = sample_ddpm(den, _noise(N, 4), chain, variance="learned", generator=torch.Generator().manual_seed(1))
    s2 = DATA.std**2
    assert abs(x.var(0).mean().item() - s2) < Z * s2 * np.sqrt(2 / (N * 4))
    assert torch.allclose(x.mean(0), DATA.mean, atol=Z * DATA.std / np.sqrt(N))
    frac = den(x[:1], torch.tensor([int(chain.timesteps[5])])).var_frac
    assert 0 < frac.min() and frac.max() < 1  # the optimum lies strictly inside [β̃, β]


@pytest.mark.parametrize("data, steps, tol", [(DATA, 100, 0.04), (DATA, 250, 0.02), (MIX, 250, 0.03)])
def test_ddim_inversion_reconstructs(data, steps, tol):
    chain = BASE.respace(steps)
    gen = torch.Generator().manual_seed(0)
    if data is DATA:
        x0 = DATA.sample(256, gen)
    else:
        x0 = MIX.means[torch.multinomial(MIX.weights, 256, True, generator=gen)] + 0.25 * _noise(256, 1)
    den = AnalyticDenoiser(data, BASE.alphas_cumprod)
    x_T = ddim_invert(den, x0, chain)
    if data is DATA:
        assert 0.9 < x_T.std().item() < 1.1  # inverted latents look like N(0, I) (1024 values)
    rec = sample_ddim(den, x_T, chain)
    assert ((rec - x0).norm() / x0.norm()).item() < tol


@pytest.mark.parametrize("kind", ["ddpm-small", "ddim-0.5"])
def test_per_sample_generators_are_batch_independent(kind):
    chain, den = BASE.respace(20), AnalyticDenoiser(DATA, BASE.alphas_cumprod)

    def draw(seeds):
        gens = make_generators(seeds)
        if kind == "ddpm-small":
            return sample_ddpm(den, (len(seeds), 4), chain, generator=gens, dtype=torch.float64)
        return sample_ddim(den, (len(seeds), 4), chain, eta=0.5, generator=gens, dtype=torch.float64)

    alone = draw([7])
    batch = draw([1, 2, 3, 7, 5])
    assert torch.equal(alone[0], batch[3])
    assert not torch.equal(batch[0], batch[1])


def test_callback_sees_every_step_with_original_timesteps():
    chain, seen = BASE.respace("ddim15"), []
    sample_dpmpp_2m(AnalyticDenoiser(DATA, BASE.alphas_cumprod), (3, 4), chain, dtype=torch.float64,
                    callback=lambda i, t, x, pred: seen.append((i, t, x.shape, pred.x0.shape)),
                    generator=torch.Generator().manual_seed(0))
    assert [s[0] for s in seen] == list(range(15))
    assert [s[1] for s in seen] == list(chain.timesteps[::-1])
    assert all(s[2] == s[3] == (3, 4) for s in seen)


def test_bad_variance_and_missing_gamma_are_clear():
    chain = BASE.respace(5)
    den = AnalyticDenoiser(DATA, BASE.alphas_cumprod)
    with pytest.raises(ValueError, match="variance='tiny'"):
        sample_ddpm(den, (2, 4), chain, variance="tiny")
    with pytest.raises(ValueError, match="needs gamma"):
        sample_ddpm(den, (2, 4), chain, variance="analytic")


def _with_step_end(kind, chain, den, x, step_end, seed=1):
    gen = torch.Generator().manual_seed(seed)
    fn = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpm": sample_dpmpp_2m}[kind]
    return fn(den, x, chain, generator=gen, step_end=step_end)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_step_end_replacing_latents_continues_from_them(kind):
    """Memoryless samplers: swapping run B's latents after step k for run A's makes B finish exactly as A
    (same noise draws after k), so the sampler really continues from what step_end returns."""
    chain, den, k = BASE.respace(12), AnalyticDenoiser(DATA, BASE.alphas_cumprod), 5
    seen = {}

    def record(step, t, x):
        seen[step] = (t, x.clone())

    a = _with_step_end(kind, chain, den, _noise(8, 4, seed=1), record)
    assert sorted(seen) == list(range(12)) and [seen[s][0] for s in range(12)] == list(chain.timesteps[::-1])
    assert torch.equal(seen[11][1], a)  # the last step's latents are the sample
    b = _with_step_end(kind, chain, den, _noise(8, 4, seed=2), lambda s, t, x: seen[k][1] if s == k else None)
    plain_b = _with_step_end(kind, chain, den, _noise(8, 4, seed=2), None)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    assert (plain_b - a).abs().max() > 1e-6  # without the swap B ends elsewhere (DDPM forgets x_T: only a little)


def test_step_end_none_changes_nothing_and_the_last_step_sets_the_output():
    chain, den = BASE.respace(10), AnalyticDenoiser(DATA, BASE.alphas_cumprod)
    plain = _with_step_end("dpm", chain, den, _noise(8, 4), None)
    assert torch.equal(_with_step_end("dpm", chain, den, _noise(8, 4), lambda s, t, x: None), plain)
    out = _with_step_end("dpm", chain, den, _noise(8, 4), lambda s, t, x: torch.full_like(x, 0.25) if s == 9 else None)
    assert torch.equal(out, torch.full_like(plain, 0.25))
    inv = ddim_invert(den, plain, chain, step_end=lambda s, t, x: torch.zeros_like(x) if s == 9 else None)
    assert torch.equal(inv, torch.zeros_like(plain))
    with pytest.raises(ValueError, match=r"step_end returned \(3,\): expected None or a tensor of shape \(8, 4\)"):
        _with_step_end("ddim", chain, den, _noise(8, 4), lambda s, t, x: torch.zeros(3))
