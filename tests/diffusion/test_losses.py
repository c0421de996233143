"""Losses: MSE targets, the VLB term (KL and discretized decoder NLL) and the hybrid objective's gradients."""

import math

import numpy as np
import pytest
import torch

from unclip.diffusion import (
    GaussianDiffusion,
    HybridLoss,
    MeanType,
    MSELoss,
    Prediction,
    VarType,
    VLBLoss,
    discretized_gaussian_log_likelihood,
    make_betas,
)

DIFF = GaussianDiffusion(make_betas("cosine"))


def _batch(seed=0, b=6):
    gen = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (b, 3, 4, 4), generator=gen).double()
    x0 = levels / 127.5 - 1  # 256 levels in [−1, 1]
    x0[0, 0, 0, 0], x0[0, 0, 0, 1] = -1.0, 1.0
    noise = torch.randn(b, 3, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 0, 1, 17, 500, 999])[:b]
    return x0, noise, t, DIFF.q_sample(x0, t, noise), gen


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_discretized_likelihood_is_a_distribution_over_the_256_bins():
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, std in ((0.3, 0.2), (-0.99, 0.01), (0.0, 5.0), (1.7, 0.05)):
        logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, math.log(std)))
        assert torch.isfinite(logp).all()
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        k, h = 100, 1 / 255  # an interior bin: Φ((x + h − μ)/σ) − Φ((x − h − μ)/σ)
        xk = x[k].item()
        expected = _phi((xk + h - mean) / std) - _phi((xk - h - mean) / std)
        if expected > 1e-12:
            assert logp[k].exp().item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("var_type", list(VarType))
def test_vlb_is_finite_and_nonnegative_including_decoder_nll(var_type):
    x0, noise, t, x_t, gen = _batch()
    pred = Prediction(x0=torch.randn_like(x0), eps=noise, var_frac=torch.rand(x0.shape, generator=gen, dtype=x0.dtype))
    vlb = VLBLoss(DIFF, var_type)(pred, x0, x_t, t, noise)
    assert vlb.shape == (6,) and torch.isfinite(vlb).all() and (vlb >= 0).all() and (vlb[:2] > 0).all()


def test_vlb_takes_the_decoder_nll_exactly_at_the_t0_rows_wherever_they_sit():
    """The NLL is computed only for the t = 0 rows (on the CPU): each row must equal the formula applied to
    that sample alone, KL rows must not change, and a batch without t = 0 is all KL."""
    x0, noise, _, _, gen = _batch(seed=3)
    t = torch.tensor([17, 0, 999, 0, 1, 500])
    x_t = DIFF.q_sample(x0, t, noise)
    frac = torch.rand(x0.shape, generator=gen, dtype=x0.dtype).requires_grad_()
    pred = Prediction(x0=torch.randn(x0.shape, generator=gen, dtype=x0.dtype), eps=noise, var_frac=frac)
    vlb = VLBLoss(DIFF, VarType.LEARNED_RANGE)(pred, x0, x_t, t, noise)
    mean, _, _ = DIFF.q_posterior_mean_variance(pred.x0, x_t, t)
    logvar = DIFF.p_log_variance(VarType.LEARNED_RANGE, t, x_t, frac)
    for row in (1, 3):
        nll = -discretized_gaussian_log_likelihood(x0[row], mean[row], 0.5 * logvar[row]).mean() / math.log(2)
        assert vlb[row].item() == pytest.approx(nll.item(), rel=1e-12)
    kl_only = VLBLoss(DIFF, VarType.LEARNED_RANGE)(
        Prediction(pred.x0[[0, 2, 4, 5]], noise[[0, 2, 4, 5]], frac[[0, 2, 4, 5]]), x0[[0, 2, 4, 5]],
        x_t[[0, 2, 4, 5]], t[[0, 2, 4, 5]], noise[[0, 2, 4, 5]])
    torch.testing.assert_close(vlb[[0, 2, 4, 5]], kl_only, rtol=0, atol=0)
    vlb.sum().backward()
    assert frac.grad.flatten(1).abs().sum(1).gt(0).all()  # every row, NLL or KL, trains its variance


def test_vlb_is_zero_at_the_true_posterior_and_matches_closed_form_kl():
    x0, noise, t, x_t, _ = _batch()
    tp = t[t > 0]
    x0, noise, x_t = x0[t > 0], noise[t > 0], x_t[t > 0]
    zero = torch.zeros_like(x0)
    for var_type, frac in ((VarType.LEARNED_RANGE, zero), (VarType.FIXED_SMALL, None)):
        vlb = VLBLoss(DIFF, var_type)(Prediction(x0, noise, frac), x0, x_t, tp, noise)
        assert vlb.abs().max().item() < 1e-12
    # a wrong mean and variance: KL(N(μ̃, β̃) ‖ N(μ, σ²)) per element from the 1-D formula, in bits
    shifted = x0 + 0.1
    frac = torch.full_like(x0, 0.5)
    vlb = VLBLoss(DIFF, VarType.LEARNED_RANGE)(Prediction(shifted, noise, frac), x0, x_t, tp, noise)
    c1 = DIFF.posterior_mean_coef1[tp.numpy()]
    v_true = DIFF.posterior_variance[tp.numpy()]
    v_model = np.sqrt(v_true * DIFF.betas[tp.numpy()])  # geometric midpoint of β̃ and β
    kl = 0.5 * (np.log(v_model / v_true) + v_true / v_model + (0.1 * c1) ** 2 / v_model - 1) / math.log(2)
    np.testing.assert_allclose(vlb.numpy(), kl, rtol=1e-6)  # the t = 999 term is ~1e-8: cancellation


def test_mse_targets():
    x0, noise, t, x_t, _ = _batch()
    exact = Prediction(x0=x0, eps=noise)
    for target in MeanType:
        assert MSELoss(DIFF, target)(exact, x0, x_t, t, noise).abs().max().item() < 1e-20
    off = Prediction(x0=x0, eps=noise + 0.1)
    torch.testing.assert_close(MSELoss(DIFF, "eps")(off, x0, x_t, t, noise), torch.full((6,), 0.01, dtype=x0.dtype))
    torch.testing.assert_close(MSELoss(DIFF, "x0")(Prediction(x0 - 0.2, noise), x0, x_t, t, noise),
                               torch.full((6,), 0.04, dtype=x0.dtype))
    a = torch.from_numpy(np.sqrt(DIFF.alphas_cumprod[t.numpy()]))
    torch.testing.assert_close(MSELoss(DIFF, "v")(off, x0, x_t, t, noise), 0.01 * a**2)  # v error = sqrt(ᾱ)·0.1


def test_hybrid_trains_variance_through_vlb_only_and_mean_through_mse_only():
    x0, noise, t, x_t, gen = _batch()
    eps_param = torch.randn(x0.shape, generator=gen, dtype=x0.dtype, requires_grad=True)
    var_param = torch.zeros(x0.shape, dtype=x0.dtype, requires_grad=True)

    def pred():
        return Prediction(DIFF.x0_from_eps(x_t, t, eps_param), eps_param, (var_param + 1) / 2)

    VLBLoss(DIFF).__call__(pred(), x0, x_t, t, noise).sum().backward()
    assert eps_param.grad is None and var_param.grad.abs().sum() > 0
    g_var_vlb = var_param.grad.clone()
    var_param.grad = None
    MSELoss(DIFF)(pred(), x0, x_t, t, noise).sum().backward()
    assert var_param.grad is None
    g_eps_mse = eps_param.grad.clone()
    eps_param.grad = None
    hybrid = HybridLoss(DIFF)
    assert hybrid.vlb_scale == pytest.approx(0.001 * 1000)
    hybrid(pred(), x0, x_t, t, noise).sum().backward()
    torch.testing.assert_close(var_param.grad, hybrid.vlb_scale * g_var_vlb)
    torch.testing.assert_close(eps_param.grad, g_eps_mse)
    # without the stop-gradient the VLB term would reach the mean
    eps_param.grad = None
    VLBLoss(DIFF, detach_mean=False)(pred(), x0, x_t, t, noise).sum().backward()
    assert eps_param.grad.abs().sum() > 0


def test_min_snr_weights_match_their_closed_forms():
    """Hang et al. 2023, Table 1: ε target min(SNR, γ)/SNR, x0 target min(SNR, γ), v target min(SNR, γ)/(SNR+1)."""
    from unclip.diffusion.losses import min_snr_weight

    d = GaussianDiffusion(make_betas("cosine", 1000))
    t = torch.tensor([0, 100, 500, 800, 999])
    acp = torch.as_tensor(d.alphas_cumprod, dtype=torch.float64)[t]
    snr = acp / (1 - acp)
    gamma = 5.0
    eps_w, x0_w, v_w = (min_snr_weight(d, t, k, gamma).double() for k in ("eps", "x0", "v"))
    torch.testing.assert_close(x0_w, snr.clamp(max=gamma), rtol=1e-6, atol=0)
    torch.testing.assert_close(eps_w, snr.clamp(max=gamma) / snr, rtol=1e-6, atol=0)
    torch.testing.assert_close(v_w, snr.clamp(max=gamma) / (snr + 1), rtol=1e-6, atol=0)
    assert eps_w[-1] == pytest.approx(1.0) and eps_w[0] < 0.01  # low noise capped, high noise untouched


def test_min_snr_weighting_scales_the_per_sample_mse():
    d = GaussianDiffusion(make_betas("cosine", 1000))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([10, 300, 700, 990])
    pred = Prediction(x0=x0 + 0.1, eps=noise - 0.2)
    plain = MSELoss(d, "v")(pred, x0, d.q_sample(x0, t, noise), t, noise)
    weighted = MSELoss(d, "v", min_snr_gamma=5.0)(pred, x0, d.q_sample(x0, t, noise), t, noise)
    from unclip.diffusion.losses import min_snr_weight
    torch.testing.assert_close(weighted, plain * min_snr_weight(d, t, "v", 5.0))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        MSELoss(d, "v", min_snr_gamma=0.0)
