"""Samplers: small free functions over a denoiser `(x_t, t_original: LongTensor[B], **cond) -> Prediction`.

Every sampler takes (denoiser, x, diffusion) where x is the starting noise x_T or a shape to draw it
with `generator`, and `diffusion` is the (respaced) chain whose steps it walks from the last to t = 0;
it returns the final x0 sample. Shared keywords: `cond` (dict passed to the denoiser), `generator`
(None, one torch.Generator, or one per sample — see rng.py), `callback(step_index, t, x_t, prediction)`
(sees each step's input and prediction), `step_end(step_index, t, x)` (called with the latents after each step,
the last one's being the sample; a tensor it returns replaces them — diffusers' callback_on_step_end),
`x0_transform` (e.g. clip_x0, dynamic_threshold(): applied to pred_x0, ε recomputed from it),
`device`/`dtype` (only when x is a shape) and `progress` (tqdm bar).

Step coefficients are python floats, so a sample does not depend on the batch it is drawn in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from . import rng
from .denoiser import Prediction
from .enums import VarType
from .gaussian import GaussianDiffusion

DenoiserFn = Callable[..., Prediction]
X0Transform = Callable[[Tensor], Tensor]
Callback = Callable[[int, int, Tensor, Prediction], None]
StepEnd = Callable[[int, int, Tensor], Tensor | None]


def clip_x0(x0: Tensor) -> Tensor:
    """Static thresholding: clamp pred_x0 to the data range [−1, 1]."""
    return x0.clamp(-1.0, 1.0)


def dynamic_threshold(percentile: float = 0.995) -> X0Transform:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3): per sample, s = max(1, the `percentile`
    quantile of |pred_x0|); clamp to [−s, s] and divide by s. In-range samples (s = 1) are unchanged."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile={percentile!r}: expected a value in (0, 1]")

    def threshold(x0: Tensor) -> Tensor:
        flat = x0.detach().abs().flatten(1).to(torch.promote_types(x0.dtype, torch.float32))  # quantile: no fp16
        s = torch.quantile(flat, percentile, dim=1).clamp_min(1.0)
        s = s.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
        return torch.minimum(torch.maximum(x0, -s), s) / s

    return threshold


def _start(x: Tensor | Sequence[int], generator, device, dtype) -> Tensor:
    return x if isinstance(x, Tensor) else rng.randn(x, generator, device, dtype or torch.float32)


def _steps(indices: Iterable[int], progress: bool, desc: str) -> Iterable[int]:
    if not progress:
        return indices
    from tqdm.auto import tqdm

    return tqdm(list(indices), desc=desc)


def apply_step_end(step_end: StepEnd | None, step: int, t, x: Tensor) -> Tensor:
    """The latents after a step: ``step_end``'s replacement when it returns one (same shape), else ``x``."""
    if step_end is None:
        return x
    out = step_end(step, int(t), x)
    if out is None:
        return x
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"step_end returned {got}: expected None or a tensor of shape {tuple(x.shape)}")
    return out.to(x.dtype)


def _predict(denoiser: DenoiserFn, x: Tensor, i: int, diffusion: GaussianDiffusion, cond: dict | None,
             x0_transform: X0Transform | None) -> Prediction:
    """The denoiser at chain index i (called with its ORIGINAL timestep), with the x0 transform applied."""
    t = torch.full((x.shape[0],), int(diffusion.timesteps[i]), dtype=torch.long, device=x.device)
    pred = denoiser(x, t, **(cond or {}))
    if x0_transform is None:
        return pred
    x0 = x0_transform(pred.x0)
    return Prediction(x0=x0, eps=diffusion.eps_from_x0(x, i, x0), var_frac=pred.var_frac)


def analytic_variance(diffusion: GaussianDiffusion, gamma: np.ndarray) -> np.ndarray:
    """Analytic-DPM's optimal reverse variance (Bao et al. 2022, Thm. 1, DDPM case λ_n² = β̃_n):
    σ*² = λ² + (sqrt(β̄_n/α_n) − sqrt(β̄_{n−1} − λ²))²·(1 − Γ_n), with α_n, β̄_n = 1 − ᾱ_n of the respaced
    chain and Γ_n = E‖ε_θ(x_n, n)‖²/d; Γ is clipped to [0, 1], i.e. σ*² to its range in Thm. 2."""
    gamma = np.asarray(gamma, dtype=np.float64)
    if gamma.shape != (diffusion.num_timesteps,):
        raise ValueError(f"gamma has shape {gamma.shape}: expected ({diffusion.num_timesteps},), one per step")
    lam2 = diffusion.posterior_variance
    bbar, bbar_prev = 1 - diffusion.alphas_cumprod, 1 - diffusion.alphas_cumprod_prev
    gap = (np.sqrt(bbar / (1 - diffusion.betas)) - np.sqrt(np.maximum(bbar_prev - lam2, 0.0))) ** 2
    return lam2 + gap * (1 - np.clip(gamma, 0.0, 1.0))


@torch.no_grad()
def estimate_analytic_gamma(denoiser: DenoiserFn, x0: Tensor | Iterable, diffusion: GaussianDiffusion,
                            cond: dict | None = None,
                            generator: torch.Generator | None = None) -> np.ndarray:
    """Monte-Carlo Γ_n = E_{x0, ε}‖ε_θ(x_n, n)‖²/d for every step n of `diffusion` (Bao et al. 2022, eq. 8).

    `x0` is a tensor or an iterable of batches, each a tensor (used with `cond`) or an (x0, cond) pair;
    each batch is noised once per step.
    """
    batches = [x0] if isinstance(x0, Tensor) else x0
    total, count = np.zeros(diffusion.num_timesteps), 0
    for batch in batches:
        xb, cb = batch if isinstance(batch, (tuple, list)) else (batch, cond)
        for i in range(diffusion.num_timesteps):
            x_t = diffusion.q_sample(xb, i, rng.randn_like(xb, generator))
            eps = _predict(denoiser, x_t, i, diffusion, cb, None).eps
            total[i] += eps.double().pow(2).flatten(1).mean(1).sum().item()
        count += xb.shape[0]
    if count == 0:
        raise ValueError("estimate_analytic_gamma got no data: expected at least one non-empty batch")
    return total / count


def _reverse_log_variance(diffusion: GaussianDiffusion, variance: VarType | str, gamma: np.ndarray | None):
    """(i, x, var_frac) -> log σ_i² for sample_ddpm's `variance` (validated here, once)."""
    if variance == "analytic":
        if gamma is None:
            raise ValueError('variance="analytic" needs gamma: expected estimate_analytic_gamma(...) '
                             "for this chain")
        log_var = np.log(np.maximum(analytic_variance(diffusion, gamma), 1e-300))
        return lambda i, x, var_frac: float(log_var[i])
    if variance not in [v.value for v in VarType]:
        raise ValueError(f"variance={variance!r}: expected one of {[v.value for v in VarType] + ['analytic']}")
    var_type = VarType(variance)
    return lambda i, x, var_frac: diffusion.p_log_variance(var_type, i, x, var_frac)


@torch.no_grad()
def sample_ddpm(denoiser: DenoiserFn, x: Tensor | Sequence[int], diffusion: GaussianDiffusion, *,
                variance: VarType | str = VarType.FIXED_SMALL, gamma: np.ndarray | None = None,
                cond: dict | None = None, generator=None, callback: Callback | None = None,
                step_end: StepEnd | None = None, x0_transform: X0Transform | None = None, device=None, dtype=None,
                progress: bool = False) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2): x_{t−1} = μ̃_t(pred_x0, x_t) + σ_t·z, with σ_t² from
    `variance`: "small" β̃_t, "large" β_t, "learned" (the prediction's var_frac on this chain's β and β̃,
    Nichol & Dhariwal 2021) or "analytic" (Analytic-DPM, Bao et al. 2022; needs `gamma`, see
    estimate_analytic_gamma). The last step returns the mean, which is pred_x0."""
    log_var = _reverse_log_variance(diffusion, variance, gamma)
    x = _start(x, generator, device, dtype)
    for step, i in enumerate(_steps(reversed(range(diffusion.num_timesteps)), progress, "ddpm")):
        pred = _predict(denoiser, x, i, diffusion, cond, x0_transform)
        if callback is not None:
            callback(step, int(diffusion.timesteps[i]), x, pred)
        mean, _, _ = diffusion.q_posterior_mean_variance(pred.x0, x, i)
        if i == 0:
            return apply_step_end(step_end, step, diffusion.timesteps[i], mean)
        lv = log_var(i, x, pred.var_frac)
        std = torch.exp(0.5 * lv) if isinstance(lv, Tensor) else math.exp(0.5 * lv)
        x = apply_step_end(step_end, step, diffusion.timesteps[i], mean + std * rng.randn_like(x, generator))
    return x


@torch.no_grad()
def sample_ddim(denoiser: DenoiserFn, x: Tensor | Sequence[int], diffusion: GaussianDiffusion, *, eta: float = 0.0,
                cond: dict | None = None, generator=None, callback: Callback | None = None,
                step_end: StepEnd | None = None, x0_transform: X0Transform | None = None, device=None, dtype=None,
                progress: bool = False) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_{t−1} = sqrt(ᾱ_{t−1})·pred_x0 + sqrt(1 − ᾱ_{t−1} − σ_t²)·ε_θ + σ_t·z,
    σ_t = η·sqrt((1−ᾱ_{t−1})/(1−ᾱ_t))·sqrt(1 − ᾱ_t/ᾱ_{t−1}). η = 0 is deterministic; η = 1 is DDPM with β̃."""
    x = _start(x, generator, device, dtype)
    for step, i in enumerate(_steps(reversed(range(diffusion.num_timesteps)), progress, "ddim")):
        pred = _predict(denoiser, x, i, diffusion, cond, x0_transform)
        if callback is not None:
            callback(step, int(diffusion.timesteps[i]), x, pred)
        if i == 0:
            return apply_step_end(step_end, step, diffusion.timesteps[i], pred.x0)
        acp, acp_prev = float(diffusion.alphas_cumprod[i]), float(diffusion.alphas_cumprod_prev[i])
        sigma = eta * math.sqrt((1 - acp_prev) / (1 - acp) * (1 - acp / acp_prev))
        x = math.sqrt(acp_prev) * pred.x0 + math.sqrt(max(1 - acp_prev - sigma**2, 0.0)) * pred.eps
        if sigma > 0:
            x = x + sigma * rng.randn_like(x, generator)
        x = apply_step_end(step_end, step, diffusion.timesteps[i], x)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: DenoiserFn, x: Tensor | Sequence[int], diffusion: GaussianDiffusion, *,
                    cond: dict | None = None, generator=None, callback: Callback | None = None,
                    step_end: StepEnd | None = None, x0_transform: X0Transform | None = None, device=None, dtype=None,
                progress: bool = False) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): multistep data prediction in λ = log(α/σ), α = sqrt(ᾱ),
    σ = sqrt(1−ᾱ), over the chain's steps: x_{i−1} = (σ_{i−1}/σ_i)·x_i − α_{i−1}·(e^{−h} − 1)·D with
    h = λ_{i−1} − λ_i and D = (1 + 1/2r)·x0_i − (1/2r)·x0_{i+1}, r = h_prev/h; first order (D = x0_i) on
    the first step; the final step to σ = 0 is first order too and returns pred_x0 at t = 0."""
    alpha, sigma = diffusion.sqrt_alphas_cumprod, diffusion.sqrt_one_minus_alphas_cumprod
    lam = np.log(alpha) - np.log(sigma)
    x = _start(x, generator, device, dtype)
    x0_prev, h_prev = None, None
    for step, i in enumerate(_steps(reversed(range(diffusion.num_timesteps)), progress, "dpm++2m")):
        pred = _predict(denoiser, x, i, diffusion, cond, x0_transform)
        if callback is not None:
            callback(step, int(diffusion.timesteps[i]), x, pred)
        if i == 0:
            return apply_step_end(step_end, step, diffusion.timesteps[i], pred.x0)
        h = float(lam[i - 1] - lam[i])
        d = pred.x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * pred.x0 - (1 / (2 * r)) * x0_prev
        x = float(sigma[i - 1] / sigma[i]) * x - float(alpha[i - 1]) * math.expm1(-h) * d
        x = apply_step_end(step_end, step, diffusion.timesteps[i], x)
        x0_prev, h_prev = pred.x0, h
    return x


@torch.no_grad()
def ddim_invert(denoiser: DenoiserFn, x0: Tensor, diffusion: GaussianDiffusion, cond: dict | None = None,
                callback: Callback | None = None, step_end: StepEnd | None = None,
                progress: bool = False) -> Tensor:
    """Deterministic DDIM (η = 0) run forwards, x0 → x at the chain's last step, so that sample_ddim
    from the result reconstructs x0 (Song et al. 2021, §4.3; used for image manipulations).

    Step i maps x at step i−1 (x0 itself for i = 0) to step i with ε_θ evaluated at the SOURCE point:
    x_i = sqrt(ᾱ_i)·pred_x0 + sqrt(1−ᾱ_i)·ε_θ(x_{i−1}, t_{i−1}); for i = 0 it uses the known x0 and ε_θ(x0, t_0).
    """
    x = x0
    for step, i in enumerate(_steps(range(diffusion.num_timesteps), progress, "ddim-invert")):
        j = max(i - 1, 0)
        pred = _predict(denoiser, x, j, diffusion, cond, None)
        if callback is not None:
            callback(step, int(diffusion.timesteps[j]), x, pred)
        x0_hat = x0 if i == 0 else pred.x0
        a, s = float(diffusion.sqrt_alphas_cumprod[i]), float(diffusion.sqrt_one_minus_alphas_cumprod[i])
        x = apply_step_end(step_end, step, diffusion.timesteps[i], a * x0_hat + s * pred.eps)
    return x
