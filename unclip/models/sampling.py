"""Sampler dispatch shared by the stages' sampling helpers: a name picks a sampler of unclip.diffusion.

The networks stay parameterization-free: helpers wrap them in ``Denoiser`` (and
``classifier_free_guidance`` when a scale ≠ 1 is asked), respace the training chain, and call here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from unclip.diffusion import GaussianDiffusion, sample_ddim, sample_ddpm, sample_dpmpp_2m

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")


def run_sampler(name: str, denoiser, shape: Sequence[int], diffusion: GaussianDiffusion, *,
                cond: Mapping[str, torch.Tensor] | None = None, generator=None, variance: str = "small",
                gamma: np.ndarray | None = None, eta: float = 0.0, x0_transform=None, device=None, progress: bool = False
                ) -> torch.Tensor:
    """Draw x_T of ``shape`` and run sampler ``name`` over the (respaced) chain ``diffusion``.

    ``variance``/``gamma`` apply to "ddpm" only (σ² choice; "analytic" = Analytic-DPM, Bao et al. 2022),
    ``eta`` to "ddim" only; ``x0_transform`` is applied to pred_x0 at every step (e.g. inpainting)."""
    kw = dict(cond=dict(cond or {}), generator=generator, x0_transform=x0_transform, device=device, progress=progress)
    if name == "ddpm":
        return sample_ddpm(denoiser, shape, diffusion, variance=variance, gamma=gamma, **kw)
    if name == "ddim":
        return sample_ddim(denoiser, shape, diffusion, eta=eta, **kw)
    if name == "dpmpp_2m":
        return sample_dpmpp_2m(denoiser, shape, diffusion, **kw)
    raise ValueError(f"unknown sampler {name!r}: expected one of {SAMPLERS}")
