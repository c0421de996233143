"""Forward process, true posterior (Bayes' rule), conversions and the parameterization wrapper."""

import numpy as np
import pytest
import torch

from unclip.diffusion import Denoiser, GaussianDiffusion, MeanType, make_betas

BASE = GaussianDiffusion(make_betas("linear"))


def _acp(betas):
    return np.cumprod(1 - betas)  # the definition, independent of GaussianDiffusion


def test_q_sample_mean_and_variance():
    gen = torch.Generator().manual_seed(0)
    n, t = 200_000, 400
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    x_t = BASE.q_sample(x0, torch.full((n,), t), torch.randn(n, 1, generator=gen, dtype=torch.float64))
    acp = _acp(make_betas("linear"))[t]
    assert abs(x_t.mean().item() - np.sqrt(acp) * 0.7) < 5 * np.sqrt((1 - acp) / n)
    assert abs(x_t.var().item() / (1 - acp) - 1) < 5 * np.sqrt(2 / n)
    mean, var, log_var = BASE.q_mean_variance(x0[:3], torch.tensor([t] * 3))
    torch.testing.assert_close(mean, torch.full((3, 1), np.sqrt(acp) * 0.7, dtype=torch.float64))
    torch.testing.assert_close(var, torch.full((3, 1), 1 - acp, dtype=torch.float64))
    torch.testing.assert_close(log_var, torch.full((3, 1), np.log(1 - acp), dtype=torch.float64))


@pytest.mark.parametrize("chain", [BASE, GaussianDiffusion(make_betas("cosine")).respace("ddim15")])
def test_posterior_is_bayes_rule(chain):
    """q(x_{t−1} | x_t, x0) from the joint Gaussian of (x_{t−1}, x_t) given x0 on this chain:
    x_{t−1} ~ N(sqrt(ᾱ_{t−1})·x0, 1 − ᾱ_{t−1}),  x_t = sqrt(α_t)·x_{t−1} + sqrt(1 − α_t)·z, α_t = ᾱ_t/ᾱ_{t−1}."""
    acp = chain.alphas_cumprod
    t = torch.arange(1, chain.num_timesteps)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(len(t), 3, generator=gen, dtype=torch.float64)
    x_t = torch.randn(len(t), 3, generator=gen, dtype=torch.float64)
    mean, var, log_var = chain.q_posterior_mean_variance(x0, x_t, t)
    a_prev, alpha = acp[t - 1], acp[t] / acp[t - 1]
    m1, v1 = np.sqrt(a_prev)[:, None] * x0.numpy(), (1 - a_prev)[:, None]
    cov, v2 = np.sqrt(alpha)[:, None] * v1, alpha[:, None] * v1 + (1 - alpha)[:, None]
    np.testing.assert_allclose(mean.numpy(), m1 + cov / v2 * (x_t.numpy() - np.sqrt(alpha)[:, None] * m1), rtol=1e-9)
    np.testing.assert_allclose(var.numpy().ravel(), (v1 - cov**2 / v2).ravel(), rtol=1e-9)
    np.testing.assert_allclose(log_var.numpy().ravel(), np.log(v1 - cov**2 / v2).ravel(), rtol=1e-9)
    # at t = 0 the posterior is the point x0; its log-variance is clipped to the t = 1 value
    mean0, var0, log_var0 = chain.q_posterior_mean_variance(x0[:1], x_t[:1], 0)
    torch.testing.assert_close(mean0, x0[:1])
    assert var0 == 0 and log_var0 == pytest.approx(np.log(chain.posterior_variance[1]))


def test_conversions_are_mutual_inverses():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 6, 2, 5, 5, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 10, 300, 500, 900, 999])
    x_t = BASE.q_sample(x0, t, eps)
    torch.testing.assert_close(BASE.x0_from_eps(x_t, t, eps), x0)
    torch.testing.assert_close(BASE.eps_from_x0(x_t, t, x0), eps)
    v = BASE.v_from_x0_eps(x0, eps, t)
    torch.testing.assert_close(BASE.x0_from_v(x_t, t, v), x0)
    torch.testing.assert_close(BASE.eps_from_v(x_t, t, v), eps)
    acp = _acp(make_betas("linear"))[t.numpy()][:, None, None, None]
    np.testing.assert_allclose(v.numpy(), np.sqrt(acp) * eps.numpy() - np.sqrt(1 - acp) * x0.numpy(), rtol=1e-12)
    # int t gives the same as a tensor t
    torch.testing.assert_close(BASE.x0_from_eps(x_t[2:3], 300, eps[2:3]), x0[2:3])


class _Oracle(torch.nn.Module):
    """A backbone that returns the true target for the batch it was given, plus variance channels."""

    def __init__(self, target, x0, eps, var_value=None):
        super().__init__()
        self.target, self.x0, self.eps, self.var_value = target, x0, eps, var_value

    def forward(self, x_t, t):
        out = {MeanType.EPS: self.eps, MeanType.X0: self.x0,
               MeanType.V: BASE.v_from_x0_eps(self.x0, self.eps, t)}[self.target]
        return out if self.var_value is None else torch.cat([out, self.var_value], dim=1)


@pytest.mark.parametrize("mean_type", list(MeanType))
@pytest.mark.parametrize("learned", [False, True])
def test_denoiser_recovers_x0_for_every_parameterization(mean_type, learned):
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 3, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 250, 700, 999])
    var_value = torch.rand(4, 3, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1 if learned else None
    den = Denoiser(_Oracle(mean_type, x0, eps, var_value), BASE.alphas_cumprod, mean_type, learned_variance=learned)
    pred = den(BASE.q_sample(x0, t, eps), t)
    torch.testing.assert_close(pred.x0, x0)
    torch.testing.assert_close(pred.eps, eps)
    if learned:
        torch.testing.assert_close(pred.var_frac, (var_value + 1) / 2)
    else:
        assert pred.var_frac is None


def test_denoiser_rejects_wrong_output_channels():
    x = torch.zeros(2, 3, 4, 4)
    den = Denoiser(lambda x_t, t: torch.zeros(2, 3, 4, 4), BASE.alphas_cumprod, "eps", learned_variance=True)
    with pytest.raises(ValueError, match=r"expected \(2, 6, 4, 4\)"):
        den(x, torch.tensor([1, 2]))


def test_bad_t_is_a_clear_error():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"ranges over \[5, 1000\]: expected step indices in \[0, 1000\)"):
        BASE.q_sample(x, torch.tensor([5, 1000]))
    with pytest.raises(ValueError, match="expected an integer tensor"):
        BASE.q_sample(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"t=-1: expected a step index"):
        BASE.q_sample(x, -1)
