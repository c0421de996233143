"""RePaint (Lugmayr et al. 2022, Alg. 1): inpainting with an unconditional-on-mask diffusion model.

At every reverse step the known region is replaced by the known image noised to the same level,
q(x_{t−1} | x0_known), and the unknown region comes from the model's ancestral step; ``resample``
times per step the merged x_{t−1} is diffused back to t (x_t = sqrt(1−β_t)·x_{t−1} + sqrt(β_t)·z)
and denoised again, which harmonises the generated region with its surroundings.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .gaussian import GaussianDiffusion
from .rng import randn_like
from .samplers import StepEnd, apply_step_end, clip_x0


@torch.no_grad()
def sample_repaint(denoiser, x: Tensor, chain: GaussianDiffusion, known: Tensor, keep: Tensor, *,
                   cond: dict | None = None, generator=None, variance: str = "small", resample: int = 4,
                   step_end: StepEnd | None = None) -> Tensor:
    """x: x_T [B, C, H, W]; known: the image [B, C, H, W]; keep: [B, 1, H, W], 1 = known pixel.
    Returns x0 with the known pixels exactly equal to ``known``. ``step_end`` as for the other samplers."""
    n = chain.num_timesteps
    for step, i in enumerate(reversed(range(n))):
        t = torch.full((x.shape[0],), int(chain.timesteps[i]), dtype=torch.long, device=x.device)
        for u in range(resample):
            pred = denoiser(x, t, **(cond or {}))
            x0 = clip_x0(pred.x0)  # images live in [−1, 1] (see decoder.image_x0_transform)
            if i == 0:
                x = keep * known + (1 - keep) * x0
                break
            mean, _, _ = chain.q_posterior_mean_variance(x0, x, i)
            log_var = chain.p_log_variance(variance, i, x, pred.var_frac)
            std = torch.exp(0.5 * log_var) if isinstance(log_var, Tensor) else math.exp(0.5 * log_var)
            unknown = mean + std * randn_like(x, generator)
            known_prev = chain.q_sample(known, i - 1, randn_like(known, generator))
            x = keep * known_prev + (1 - keep) * unknown  # x_{i−1}
            if u < resample - 1:  # jump back to step i and denoise again
                beta = float(chain.betas[i])
                x = math.sqrt(1 - beta) * x + math.sqrt(beta) * randn_like(x, generator)
        x = apply_step_end(step_end, step, chain.timesteps[i], x)  # the latents after the step (may be replaced)
    return x
