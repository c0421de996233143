"""Classifier-free guidance, per-sample randomness and x0 thresholding."""

import numpy as np
import pytest
import torch

from unclip.diffusion import (
    GaussianDiffusion,
    Prediction,
    classifier_free_guidance,
    clip_x0,
    dynamic_threshold,
    make_betas,
    make_generators,
    randn,
    sample_ddim,
)

from .analytic import AnalyticDenoiser, GaussianData


class _Toy:
    """x0 = 2·x_t + y (+ lowres), ε = x_t − y, var_frac = sigmoid(y); records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_t, t, y, lowres=None):
        self.calls.append((x_t.shape[0], t.clone(), y.clone(), None if lowres is None else lowres.clone()))
        extra = 0 if lowres is None else lowres
        return Prediction(x0=2 * x_t + y + extra, eps=x_t - y, var_frac=torch.sigmoid(y))


def _inputs():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 5, generator=gen)
    return x, torch.tensor([10, 20, 30]), y


def test_scale_one_is_exactly_conditional_and_one_doubled_forward():
    x, t, y = _inputs()
    toy = _Toy()
    # the conditional half of the same doubled forward (a separate batch-of-3 call may differ in the last bit:
    # vectorised sigmoid on AVX2 rounds a row differently at another offset in the batch)
    doubled = toy(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, torch.zeros(3, 5)]))
    separate = toy(x, t, y=y)
    torch.testing.assert_close(doubled.var_frac[:3], separate.var_frac, rtol=1e-6, atol=1e-7)
    toy.calls.clear()
    out = classifier_free_guidance(toy, 1.0, {"y": torch.zeros(1, 5)})(x, t, y=y)
    for field in ("x0", "eps", "var_frac"):
        assert torch.equal(getattr(out, field), getattr(doubled, field)[:3]), field
    assert len(toy.calls) == 1
    batch, tt, yy, _ = toy.calls[0]
    assert batch == 6 and torch.equal(tt, torch.cat([t, t]))
    assert torch.equal(yy[:3], y) and torch.equal(yy[3:], torch.zeros(3, 5))


def test_scale_gives_closed_form_combination_and_per_sample_scales():
    x, t, y = _inputs()
    # cond x0 = 2x + y, uncond 2x  →  2x + s·y;  cond ε = x − y, uncond x  →  x − s·y
    out = classifier_free_guidance(_Toy(), 3.0, {"y": torch.zeros(3, 5)})(x, t, y=y)
    torch.testing.assert_close(out.x0, 2 * x + 3.0 * y)
    torch.testing.assert_close(out.eps, x - 3.0 * y)
    torch.testing.assert_close(out.var_frac, torch.sigmoid(y))
    s = torch.tensor([1.0, 2.0, 5.0])
    out = classifier_free_guidance(_Toy(), s, {"y": torch.zeros(1, 5)})(x, t, y=y)
    torch.testing.assert_close(out.x0, 2 * x + s[:, None] * y)
    assert torch.equal(out.x0[0], (2 * x + y)[0])  # scale 1 rows are exactly conditional


def test_cond_without_uncond_is_shared_and_errors_are_clear():
    x, t, y = _inputs()
    toy = _Toy()
    lowres = torch.ones(3, 5)
    out = classifier_free_guidance(toy, 2.0, {"y": torch.zeros(1, 5)})(x, t, y=y, lowres=lowres)
    assert torch.equal(toy.calls[0][3], torch.ones(6, 5))
    torch.testing.assert_close(out.x0, 2 * x + 2 * y + 1)
    with pytest.raises(ValueError, match="uncond keys \\['z'\\]"):
        classifier_free_guidance(toy, 2.0, {"z": torch.zeros(1, 5)})(x, t, y=y)
    with pytest.raises(ValueError, match="uncond\\['y'\\] has shape \\(2, 5\\)"):
        classifier_free_guidance(toy, 2.0, {"y": torch.zeros(2, 5)})(x, t, y=y)
    with pytest.raises(ValueError, match="scale has shape \\(2,\\)"):
        classifier_free_guidance(toy, torch.ones(2), {"y": torch.zeros(1, 5)})(x, t, y=y)


def test_guided_sampling_is_batch_independent_with_per_sample_generators():
    base = GaussianDiffusion(make_betas("cosine"))
    den = AnalyticDenoiser(GaussianData([0.0, 0.0], 0.5), base.alphas_cumprod)

    def cond_den(x_t, t, y):
        pred = den(x_t, t)
        return Prediction(pred.x0 + y, pred.eps)

    def draw(seeds, ys):
        guided = classifier_free_guidance(cond_den, 3.0, {"y": torch.zeros(1, 2, dtype=torch.float64)})
        return sample_ddim(guided, (len(seeds), 2), base.respace(10), eta=1.0, cond={"y": ys},
                           generator=make_generators(seeds), dtype=torch.float64)

    ys = torch.arange(8, dtype=torch.float64).reshape(4, 2) / 10
    assert torch.equal(draw([3], ys[2:3])[0], draw([0, 1, 3, 4], ys)[2])


def test_randn_per_sample_rows_come_from_their_own_generator():
    rows = randn((3, 2, 4), make_generators([5, 6, 7]), dtype=torch.float64)
    for i, seed in enumerate([5, 6, 7]):
        expected = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert torch.equal(rows[i], expected)
    one = randn((3, 2), torch.Generator().manual_seed(1))
    assert torch.equal(one, torch.randn(3, 2, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="got 2 generators for a batch of 3"):
        randn((3, 2), make_generators([1, 2]))
    with pytest.raises(ValueError, match="expected a sequence of ints"):
        make_generators(5)


def test_dynamic_threshold_bounds_and_identity_in_range():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.2, 1.0, 3.0, 10.0], dtype=torch.float64)[:, None, None, None]
    x = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64) * scales
    out = dynamic_threshold(0.995)(x)
    assert out.abs().max() <= 1.0
    for i in range(4):  # Imagen: s = max(1, quantile(|x|, p)); clip to [−s, s]; divide by s
        s = max(1.0, np.quantile(x[i].abs().numpy(), 0.995))
        np.testing.assert_allclose(out[i].numpy(), np.clip(x[i].numpy(), -s, s) / s, rtol=1e-12)
    inside = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    assert torch.equal(dynamic_threshold()(inside), inside)
    assert torch.equal(clip_x0(inside), inside) and clip_x0(x).abs().max() <= 1
    with pytest.raises(ValueError, match="percentile=1.5"):
        dynamic_threshold(1.5)


def test_x0_transform_is_applied_and_eps_recomputed():
    base = GaussianDiffusion(make_betas("cosine"))
    chain = base.respace(8)
    den = AnalyticDenoiser(GaussianData([0.0, 0.0, 0.0], 3.0), base.alphas_cumprod)  # x0 often outside [−1, 1]
    seen = []
    out = sample_ddim(den, (64, 3), chain, x0_transform=dynamic_threshold(0.9), dtype=torch.float64,
                      generator=torch.Generator().manual_seed(0),
                      callback=lambda i, t, x, pred: seen.append((t, x, pred)))
    assert out.abs().max() <= 1.0
    for t, x, pred in seen:
        acp = base.alphas_cumprod[t]
        assert pred.x0.abs().max() <= 1.0
        torch.testing.assert_close(np.sqrt(acp) * pred.x0 + np.sqrt(1 - acp) * pred.eps, x)
