"""The parameterization wrapper: backbone output → (x0, ε, variance fraction).

A *denoiser*, for every sampler and for guidance, is any callable
`(x_t, t: LongTensor[B] of ORIGINAL timestep ids, **cond) -> Prediction`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from . import gaussian as g
from .enums import MeanType


@dataclass
class Prediction:
    """A denoiser's output at (x_t, t)."""

    x0: Tensor  # predicted clean sample E[x0 | x_t]
    eps: Tensor  # predicted noise, consistent with x0 at this x_t: x_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·eps
    var_frac: Tensor | None = None  # learned-range fraction f ∈ [0, 1] (log σ² = f·log β + (1−f)·log β̃)


class Denoiser(nn.Module):
    """Wraps a backbone `net(x_t, t, **cond) -> Tensor` that never knows what it predicts.

    `alphas_cumprod` is the BASE (training) schedule, indexed by the original timestep; respacing keeps
    ᾱ exact at the kept steps, so one Denoiser serves every respaced sampler. With `learned_variance`
    the net returns 2C channels for C input channels: C for the mean target, C for a value in [−1, 1]
    mapped to var_frac = (value + 1)/2 (improved-diffusion; not clamped, as there).
    """

    def __init__(self, net: Callable[..., Tensor], alphas_cumprod: np.ndarray, mean_type: MeanType | str = MeanType.EPS,
                 learned_variance: bool = False):
        super().__init__()
        acp = np.asarray(alphas_cumprod, dtype=np.float64)
        if acp.ndim != 1 or not np.all((acp > 0) & (acp < 1)):
            raise ValueError(f"alphas_cumprod of shape {acp.shape}: expected a 1-D array in (0, 1)")
        self.net, self.mean_type, self.learned_variance = net, MeanType(mean_type), learned_variance
        self.sqrt_acp, self.sqrt_one_minus_acp = np.sqrt(acp), np.sqrt(1.0 - acp)  # numpy: immune to .half()

    def forward(self, x_t: Tensor, t: Tensor, **cond) -> Prediction:
        out = self.net(x_t, t, **cond)
        channels = x_t.shape[1] * (2 if self.learned_variance else 1)
        if out.shape != (x_t.shape[0], channels, *x_t.shape[2:]):
            expected = (x_t.shape[0], channels, *x_t.shape[2:])
            raise ValueError(f"net output has shape {tuple(out.shape)}: expected {expected} for input "
                             f"{tuple(x_t.shape)} (learned_variance={self.learned_variance})")
        var_frac = None
        if self.learned_variance:
            out, var_value = out.chunk(2, dim=1)
            var_frac = (var_value + 1) / 2
        dtype = torch.promote_types(out.dtype, torch.float32)  # conversions divide by small sqrt(ᾱ): not in bf16
        out, x = out.to(dtype), x_t.to(dtype)
        a, s = g.extract(self.sqrt_acp, t, x), g.extract(self.sqrt_one_minus_acp, t, x)
        if self.mean_type is MeanType.EPS:
            eps = out
            x0 = g.x0_from_eps(x, eps, a, s)
        elif self.mean_type is MeanType.X0:
            x0 = out
            eps = g.eps_from_x0(x, x0, a, s)
        else:
            x0, eps = g.x0_from_v(x, out, a, s), g.eps_from_v(x, out, a, s)
        return Prediction(x0=x0, eps=eps, var_frac=var_frac)
