"""Closed-form optimal denoisers for Gaussian and Gaussian-mixture data, for testing samplers.

With x_t = a·x0 + σ·ε (a = sqrt(ᾱ), σ = sqrt(1−ᾱ)) and x0 ~ N(m, s²I):
  x_t ~ N(a·m, (a²s² + σ²) I),  E[x0 | x_t] = m + a·s²/(a²s² + σ²)·(x_t − a·m),
  Var[x0 | x_t] = s²σ²/(a²s² + σ²),  E‖E[ε | x_t]‖²/d = σ²/(a²s² + σ²).
A mixture Σ_k w_k N(m_k, s_k²I) has E[x0 | x_t] = Σ_k r_k(x_t)·E_k[x0 | x_t], r_k ∝ w_k N(x_t; a·m_k, (a²s_k² + σ²)I).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from unclip.diffusion import GaussianDiffusion, Prediction


def _per_sample(values: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).to(like).reshape(-1, *([1] * (like.dim() - 1)))


class GaussianData:
    """x0 ~ N(mean, std²·I) in d = len(mean) dimensions."""

    def __init__(self, mean, std: float):
        self.mean, self.std = torch.as_tensor(mean, dtype=torch.float64), float(std)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.mean + self.std * torch.randn(n, len(self.mean), generator=generator, dtype=torch.float64)

    def posterior_mean(self, x_t: Tensor, a: np.ndarray, sig: np.ndarray) -> Tensor:
        gain = _per_sample(a * self.std**2 / (a**2 * self.std**2 + sig**2), x_t)
        a_t, m = _per_sample(a, x_t), self.mean.to(x_t)
        return m + gain * (x_t - a_t * m)

    def posterior_var(self, a: np.ndarray, sig: np.ndarray) -> np.ndarray:
        return self.std**2 * sig**2 / (a**2 * self.std**2 + sig**2)

    def gamma(self, diffusion: GaussianDiffusion) -> np.ndarray:
        acp = diffusion.alphas_cumprod
        return (1 - acp) / (acp * self.std**2 + 1 - acp)

    def reverse_variance(self, diffusion: GaussianDiffusion) -> np.ndarray:
        """Exact Var[x_{n−1} | x_n] on a chain: β̃_n + coef1_n²·Var[x0 | x_n] (law of total variance)."""
        a, sig = diffusion.sqrt_alphas_cumprod, diffusion.sqrt_one_minus_alphas_cumprod
        return diffusion.posterior_variance + diffusion.posterior_mean_coef1**2 * self.posterior_var(a, sig)


class MixtureData:
    """x0 ~ Σ_k w_k N(m_k, s_k²·I), means [K, d]."""

    def __init__(self, weights, means, stds):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)

    def posterior_mean(self, x_t: Tensor, a: np.ndarray, sig: np.ndarray) -> Tensor:
        a_t, sig_t = _per_sample(a, x_t).flatten(), _per_sample(sig, x_t).flatten()  # [B]
        var = a_t[:, None] ** 2 * self.stds**2 + sig_t[:, None] ** 2  # [B, K] marginal variance of x_t
        diff = x_t[:, None, :] - a_t[:, None, None] * self.means  # [B, K, d]
        d = x_t.shape[1]
        logp = self.weights.log() - 0.5 * (diff**2).sum(-1) / var - 0.5 * d * var.log()  # [B, K]
        resp = torch.softmax(logp, dim=1)
        cond_mean = self.means + (a_t[:, None] * self.stds**2 / var)[..., None] * diff  # [B, K, d]
        return (resp[..., None] * cond_mean).sum(1)


class AnalyticDenoiser:
    """The Bayes-optimal denoiser (x_t, t_original) -> Prediction on the base schedule `alphas_cumprod`.

    With `var_chain`, also returns the var_frac whose LEARNED_RANGE variance on that (respaced) chain is
    the exact reverse variance (GaussianData only)."""

    def __init__(self, data, alphas_cumprod: np.ndarray, var_chain: GaussianDiffusion | None = None):
        self.data, self.acp, self.var_chain, self.calls = data, np.asarray(alphas_cumprod), var_chain, 0

    def __call__(self, x_t: Tensor, t: Tensor, **cond) -> Prediction:
        self.calls += 1
        tt = t.cpu().numpy()
        a, sig = np.sqrt(self.acp[tt]), np.sqrt(1 - self.acp[tt])
        x0 = self.data.posterior_mean(x_t, a, sig)
        eps = (x_t - _per_sample(a, x_t) * x0) / _per_sample(sig, x_t)
        var_frac = None
        if self.var_chain is not None:
            chain = self.var_chain
            i = np.searchsorted(chain.timesteps, tt)
            lo, hi = chain.posterior_log_variance_clipped[i], np.log(chain.betas[i])
            frac = (np.log(self.data.reverse_variance(chain)[i]) - lo) / (hi - lo)
            var_frac = _per_sample(frac, x_t).expand_as(x_t)
        return Prediction(x0=x0, eps=eps, var_frac=var_frac)


def gaussian_sampler_moments(data: GaussianData, acp: np.ndarray, kind: str, *, eta: float = 0.0,
                             variances: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Exact mean [d] and per-dim variance of a sampler's OUTPUT, run with the optimal denoiser for
    GaussianData from x_T ~ N(0, I) over a chain with cumulative ᾱ = `acp`, written from the papers'
    step formulas (independently of unclip.diffusion).

    Every step is affine in x plus independent noise, so x = g·x_T + o + (noise of variance q):
    "ddpm" (Ho et al. 2020, eq. 7 mean, `variances[n]` for σ_n²), "ddim" (Song et al. 2021, eq. 12),
    "dpm" (DPM-Solver++(2M), Lu et al. 2022, Alg. 2).
    """
    s2, m = data.std**2, data.mean.numpy()
    g, o, q = 1.0, np.zeros_like(m), 0.0
    x0_prev, h_prev = None, None
    lam = 0.5 * np.log(acp / (1 - acp))
    for n in reversed(range(len(acp))):
        a, sg = np.sqrt(acp[n]), np.sqrt(1 - acp[n])
        k = a * s2 / (a**2 * s2 + sg**2)  # E[x0|x] = k·x + (1 − k·a)·m
        x0 = (k * g, k * o + (1 - k * a) * m, k**2 * q)
        if n == 0:
            return x0[1], x0[0] ** 2 + x0[2]
        ap = acp[n - 1]
        if kind == "ddpm":
            beta = 1 - acp[n] / ap
            c1, c2 = np.sqrt(ap) * beta / (1 - acp[n]), np.sqrt(1 - beta) * (1 - ap) / (1 - acp[n])
            A, b, noise = c1 * k + c2, c1 * (1 - k * a) * m, variances[n]
        elif kind == "ddim":
            sig2 = eta**2 * (1 - ap) / (1 - acp[n]) * (1 - acp[n] / ap)
            ce = np.sqrt(1 - ap - sig2) / sg  # ε̂ = (x − a·x0̂)/σ
            A = np.sqrt(ap) * k + ce * (1 - a * k)
            b = (np.sqrt(ap) - ce * a) * (1 - k * a) * m
            noise = sig2
        elif kind == "dpm":
            h = lam[n - 1] - lam[n]
            d = x0[:2] if x0_prev is None else tuple(
                (1 + h / (2 * h_prev)) * cur - h / (2 * h_prev) * prv for cur, prv in zip(x0[:2], x0_prev))
            coef = -np.sqrt(ap) * np.expm1(-h)
            x0_prev, h_prev = x0[:2], h
            g, o = np.sqrt(1 - ap) / sg * g + coef * d[0], np.sqrt(1 - ap) / sg * o + coef * d[1]
            continue
        else:
            raise ValueError(kind)
        g, o, q = A * g, A * o + b, A**2 * q + noise
    raise AssertionError("unreachable")
