"""How a stage samples: its settings, the denoiser a network is sampled through, and the sampler dispatch.

This is the one sampling path. ``sample_prior`` / ``sample_decoder`` / ``sample_upsampler`` build a
stage's conditioning and call ``run_sampler`` here; the training grids and the pipeline both call them
(the pipeline adds only per-image seeds and named settings). The networks stay parameterization-free:
``stage_denoiser`` wraps them in ``Denoiser`` (under autocast when asked, with classifier-free guidance
when a scale ≠ 1 is asked), and the sampler walks the training chain respaced to ``settings.steps``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unclip.diffusion import (
    Denoiser,
    GaussianDiffusion,
    classifier_free_guidance,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from unclip.diffusion.samplers import StepEnd  # (step, t, latents after it) -> None or their replacement
from unclip.errors import InputError

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")
VARIANCES = ("auto", "small", "large", "learned", "analytic")


@dataclass(frozen=True)
class StageSettings:
    """How one stage samples. The values of the paper and of the measured fast recipe are the pipeline's
    named presets (``unclip.pipeline.settings.PRESETS``); the training grids state theirs in the stage.

    ``variance`` (ddpm only): "auto" = learned σ when the network has it; else the Analytic-DPM variance
    when Γ for this step count is given (the prior's release stores it, ``extra.analytic_gamma``), else
    the posterior variance β̃ ("small"). ``eta`` is DDIM's η. ``n_candidates`` is the prior's number of
    draws per caption, keeping the one with the highest z_i·z_t (§2.2)."""

    sampler: str = "ddim"
    steps: int = 25
    guidance_scale: float = 1.0
    eta: float = 0.0
    variance: str = "auto"
    n_candidates: int = 1

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise InputError("settings", f"sampler {self.sampler!r}: expected one of {SAMPLERS}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InputError("settings", f"steps={self.steps!r}: expected a positive int")
        if self.variance not in VARIANCES:
            raise InputError("settings", f"variance {self.variance!r}: expected one of {VARIANCES}")
        if not self.eta >= 0.0:
            raise InputError("settings", f"eta={self.eta!r}: expected >= 0")
        if self.n_candidates < 1:
            raise InputError("settings", f"n_candidates={self.n_candidates!r}: expected >= 1")
        if not self.guidance_scale >= 0.0:
            raise InputError("settings", f"guidance_scale={self.guidance_scale!r}: expected >= 0")


class Autocast(nn.Module):
    """Runs a network under ``dtype`` autocast (matmuls and convolutions in bf16, norms in float32,
    weights kept float32); the samplers keep x_t and the diffusion math in float32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        with torch.autocast(x_t.device.type, dtype=self.dtype):
            return self.net(x_t, t, **cond)


@contextlib.contextmanager
def weight_casts_kept(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Within the block, autocast casts each float32 weight to ``dtype`` once, not at every network call.

    Autocast keeps its weight casts until the outermost autocast block exits; ``Autocast`` opens one per
    network call, so a sampling call re-cast every weight at every step (about 10 % of a bf16 sampling
    step on the CPU). An outer block, with autocast switched off inside it so the sampler's own maths stays
    float32 as before, keeps the casts for the whole call: the same bf16 copies, made once. (Autocast only
    keeps casts of leaf weights that require grad; others are cast per call, as before.)"""
    if dtype == torch.float32:
        yield
        return
    kind = torch.device(device).type
    with torch.autocast(kind, dtype=dtype), torch.autocast(kind, enabled=False):
        yield


def stage_denoiser(net: nn.Module, diffusion: GaussianDiffusion, *, mean_type: str, learned_variance: bool,
                   dtype: torch.dtype = torch.float32, guidance_scale: float = 1.0,
                   null: Mapping[str, torch.Tensor] | None = None):
    """``net`` as a denoiser of ``diffusion``'s training chain: under ``dtype`` autocast unless float32, and
    with classifier-free guidance towards ``null`` (the drop flags of the unconditional half) at a scale ≠ 1."""
    den = Denoiser(net if dtype == torch.float32 else Autocast(net, dtype), diffusion.alphas_cumprod,
                   mean_type=mean_type, learned_variance=learned_variance)
    if guidance_scale != 1.0 and null:
        den = classifier_free_guidance(den, guidance_scale, dict(null))
    return den


def resolve_variance(st: StageSettings, learned_variance: bool, gamma: np.ndarray | None) -> str:
    """The reverse-step variance of ``sample_ddpm`` that settings ``st`` ask of a network (see StageSettings)."""
    if st.variance == "auto":
        return "learned" if learned_variance else "analytic" if gamma is not None else "small"
    if st.variance == "analytic" and gamma is None:
        raise InputError("settings", f"variance 'analytic' needs Γ (gamma) for {st.steps} steps (a prior release "
                                     "stores them in extra.analytic_gamma); use variance 'auto' or 'small'")
    if st.variance == "learned" and not learned_variance:
        raise InputError("settings", "variance 'learned' but this network has no learned σ")
    return st.variance


def run_sampler(st: StageSettings, denoiser, x_T: torch.Tensor | tuple[int, ...], diffusion: GaussianDiffusion, *,
                cond: Mapping[str, torch.Tensor], generator=None, learned_variance: bool = False,
                gamma: np.ndarray | None = None, eta: float | None = None, x0_transform=None,
                step_end: StepEnd | None = None, device=None, progress: bool = False) -> torch.Tensor:
    """Sample from ``x_T`` (a tensor, or a shape drawn with ``generator``) over ``diffusion`` respaced to
    ``st.steps`` with sampler ``st.sampler``. ``gamma``: Analytic-DPM Γ for that step count (ddpm);
    ``eta`` overrides ``st.eta`` (ddim); ``x0_transform`` applies to pred_x0 at every step (clamping,
    inpainting); ``step_end(step, t, x)`` sees the latents after every step and may replace them."""
    chain = diffusion.respace(st.steps)
    kw = dict(cond=dict(cond), generator=generator, x0_transform=x0_transform, step_end=step_end, device=device,
              progress=progress)
    if st.sampler == "ddpm":
        variance = resolve_variance(st, learned_variance, gamma)
        return sample_ddpm(denoiser, x_T, chain, variance=variance, gamma=gamma if variance == "analytic" else None,
                           **kw)
    if st.sampler == "ddim":
        return sample_ddim(denoiser, x_T, chain, eta=st.eta if eta is None else eta, **kw)
    return sample_dpmpp_2m(denoiser, x_T, chain, **kw)
