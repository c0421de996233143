"""Per-sample training losses: callables `loss(pred, x0, x_t, t, noise) -> Tensor[B]`.

`t` indexes the diffusion the loss was built with (the training chain, so it is also the original
step id); `pred` is the denoiser's Prediction at (x_t, t); `noise` is the ε with x_t = q_sample(x0, t, ε).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .denoiser import Prediction
from .enums import MeanType, VarType
from .gaussian import GaussianDiffusion, _table


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch dimension."""
    return x.flatten(1).mean(1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log_normal_mass(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) for lo < hi, stable in both tails (uses Φ(b) − Φ(a) = Φ(−a) − Φ(−b))."""
    flip = lo > 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log((-torch.expm1(log_lo - log_hi)).clamp_min(torch.finfo(hi.dtype).tiny))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256) -> Tensor:
    """Elementwise log-probability of the bin of x ∈ [−1, 1] (`bins` levels) under N(mean, e^{2·log_scale});
    the edge bins extend to ±∞ (Ho et al. 2020, eq. 13)."""
    half = 1.0 / (bins - 1)  # half a bin width on [−1, 1]
    inv_std = torch.exp(-log_scale)
    lo, hi = inv_std * (x - mean - half), inv_std * (x - mean + half)
    inner = _log_normal_mass(lo, hi)
    upper = torch.where(x > 1 - half, torch.special.log_ndtr(-lo), inner)
    return torch.where(x < -1 + half, torch.special.log_ndtr(hi), upper)


def min_snr_weight(diffusion: GaussianDiffusion, t: Tensor, target: MeanType | str, gamma: float) -> Tensor:
    """Min-SNR-γ loss weights [B] (Hang et al. 2023, eq. 8 and Table 1): the x0-space weight min(SNR_t, γ),
    rewritten for the target's own MSE — ε: min(SNR, γ)/SNR; x0: min(SNR, γ); v: min(SNR, γ)/(SNR + 1).
    It caps the weight of the easy low-noise steps, so high-noise steps (layout, colour) get a larger share."""
    acp = _table(diffusion.alphas_cumprod, t.device)[t]  # on t's device, no host sync
    snr = acp / (1.0 - acp)
    capped = snr.clamp(max=gamma)
    target = MeanType(target)
    w = capped / snr if target is MeanType.EPS else capped if target is MeanType.X0 else capped / (snr + 1.0)
    return w.float()


class MSELoss:
    """‖target − prediction‖² averaged per sample, for target ε, x0 or v = sqrt(ᾱ)ε − sqrt(1−ᾱ)x0
    (L_simple of Ho et al. 2020 for ε; the unCLIP prior uses x0). With ``min_snr_gamma`` each sample is
    weighted by min-SNR-γ (``min_snr_weight``); None is the plain mean."""

    def __init__(self, diffusion: GaussianDiffusion, target: MeanType | str = MeanType.EPS,
                 min_snr_gamma: float | None = None):
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0 (Hang et al. use 5), got {min_snr_gamma}")
        self.diffusion, self.target, self.min_snr_gamma = diffusion, MeanType(target), min_snr_gamma

    def __call__(self, pred: Prediction, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        if self.target is MeanType.EPS:
            loss = mean_flat((pred.eps - noise) ** 2)
        elif self.target is MeanType.X0:
            loss = mean_flat((pred.x0 - x0) ** 2)
        else:
            v_pred = self.diffusion.v_from_x0_eps(pred.x0, pred.eps, t)
            loss = mean_flat((v_pred - self.diffusion.v_from_x0_eps(x0, noise, t)) ** 2)
        if self.min_snr_gamma is None:
            return loss
        return loss * min_snr_weight(self.diffusion, t, self.target, self.min_snr_gamma).to(loss.dtype)


class VLBLoss:
    """The variational-bound term L_t in bits/dim (Ho et al. 2020, eq. 5): KL(q(x_{t−1}|x_t,x0) ‖ p(x_{t−1}|x_t))
    for t > 0 and the discretized-Gaussian decoder NLL −log p(x0|x_1) at t = 0 (data in [−1, 1], 256 bins).

    With `detach_mean` (default) the model mean is stop-gradient'ed so this term trains only the variance,
    as in improved-diffusion's hybrid objective (Nichol & Dhariwal 2021, §3.1).
    """

    def __init__(self, diffusion: GaussianDiffusion, var_type: VarType | str = VarType.LEARNED_RANGE,
                 detach_mean: bool = True):
        self.diffusion, self.var_type, self.detach_mean = diffusion, VarType(var_type), detach_mean

    def __call__(self, pred: Prediction, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        d = self.diffusion
        pred_x0 = pred.x0.detach() if self.detach_mean else pred.x0
        true_mean, _, true_logvar = d.q_posterior_mean_variance(x0, x_t, t)
        model_mean, _, _ = d.q_posterior_mean_variance(pred_x0, x_t, t)
        model_logvar = d.p_log_variance(self.var_type, t, x_t, pred.var_frac)
        model_logvar = torch.as_tensor(model_logvar, dtype=x_t.dtype, device=x_t.device).expand_as(x_t)
        kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
        first = t == 0  # [B]
        if t.device.type == "cpu":  # the NLL only for the rows that use it (a batch rarely has t = 0)
            rows = first.nonzero().squeeze(1)  # no device sync on the CPU
            nll = kl.new_zeros(kl.shape).index_copy(0, rows, _decoder_nll(x0[rows], model_mean[rows],
                                                                          model_logvar[rows]))  # [B]
        else:
            nll = _decoder_nll(x0, model_mean, model_logvar)  # [B]
        return torch.where(first, nll, kl)


def _decoder_nll(x0: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """−log p(x0 | x_1) per sample in bits/dim (the VLB's t = 0 term)."""
    return -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)) / math.log(2.0)


class HybridLoss:
    """L_hybrid = L_simple + λ·L_vlb with λ = 0.001 (Nichol & Dhariwal 2021, eq. 16).

    L_vlb = Σ_t L_t is a sum over T terms; with t drawn uniformly, T·L_t is its unbiased one-sample
    estimate, so the VLB term here is vlb_weight·T·L_t (bits/dim) — at T = 1000 exactly improved-diffusion's
    `mse + vb·T/1000`. The mean is detached inside the VLB term, so it only trains the variance channels.
    """

    def __init__(self, diffusion: GaussianDiffusion, target: MeanType | str = MeanType.EPS,
                 var_type: VarType | str = VarType.LEARNED_RANGE, vlb_weight: float = 0.001,
                 min_snr_gamma: float | None = None):
        self.mse = MSELoss(diffusion, target, min_snr_gamma)
        self.vlb = VLBLoss(diffusion, var_type, detach_mean=True)
        self.vlb_scale = vlb_weight * diffusion.num_timesteps

    def __call__(self, pred: Prediction, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self.mse(pred, x0, x_t, t, noise) + self.vlb_scale * self.vlb(pred, x0, x_t, t, noise)
