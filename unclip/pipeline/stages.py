"""Running one stage of the cascade with per-sample randomness, callbacks and editing constraints.

The model helpers (``sample_prior``, ``sample_decoder``, ``sample_upsampler``) draw their own x_T and
take no callback; the pipeline needs both (fixed or inverted noise for variations, interpolation and
text diffs; progress bars), so it composes the same diffusion pieces here: ``Denoiser`` →
``classifier_free_guidance`` → a sampler of ``unclip.diffusion`` over the respaced chain.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unclip.diffusion import (
    Denoiser,
    GaussianDiffusion,
    classifier_free_guidance,
    clip_x0,
    ddim_invert,
    make_generators,
    randn,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from unclip.models import StageSpec

from .errors import InputError
from .repaint import sample_repaint
from .settings import StageSettings

StepCallback = Callable[[int, int, torch.Tensor], torch.Tensor | None]  # (step, num_steps, x after the step)


class Autocast(nn.Module):
    """Runs a network under ``dtype`` autocast (matmuls and convolutions in bf16, norms in float32,
    weights kept float32); the samplers keep x_t and the diffusion math in float32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        with torch.autocast(x_t.device.type, dtype=self.dtype):
            return self.net(x_t, t, **cond)


@dataclass
class Stage:
    """A loaded stage: its release spec, network (eval, on device), training chain and dtype."""

    name: str
    spec: StageSpec
    model: nn.Module
    diffusion: GaussianDiffusion
    dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def denoiser(self, guidance_scale: float = 1.0, null: dict[str, torch.Tensor] | None = None):
        net = self.model if self.dtype == torch.float32 else Autocast(self.model, self.dtype)
        den = Denoiser(net, self.diffusion.alphas_cumprod, mean_type=self.spec.mean_type,
                       learned_variance=self.spec.learned_variance)
        if guidance_scale != 1.0 and null:
            den = classifier_free_guidance(den, guidance_scale, null)
        return den

    def gamma(self, steps: int) -> np.ndarray | None:
        """Analytic-DPM Γ for ``steps`` stored in the release (``extra.analytic_gamma[str(steps)]``)."""
        table = (self.spec.extra or {}).get("analytic_gamma") or {}
        g = table.get(str(steps))
        return None if g is None else np.asarray(g, dtype=np.float64)


def stage_generators(seeds: Sequence[int], stage_index: int, device) -> list[torch.Generator]:
    """One generator per sample for one stage, from the sample's seed (so stages draw independent noise)."""
    return make_generators([derive_seed(s, stage_index) for s in seeds])  # CPU: same numbers on every machine


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence), e.g. (call seed, image index)."""
    state = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def _variance(stage: Stage, st: StageSettings) -> tuple[str, np.ndarray | None]:
    if st.sampler != "ddpm":
        return "small", None
    gamma = stage.gamma(st.steps)
    if st.variance == "auto":
        if stage.spec.learned_variance:
            return "learned", None
        return ("analytic", gamma) if gamma is not None else ("small", None)
    if st.variance == "analytic" and gamma is None:
        have = sorted((stage.spec.extra or {}).get("analytic_gamma", {}) or {})
        raise InputError("settings", f"{stage.name}: variance 'analytic' needs Γ for {st.steps} steps in the release "
                                     f"(extra.analytic_gamma has {have}); use variance 'auto' or 'small'")
    if st.variance == "learned" and not stage.spec.learned_variance:
        raise InputError("settings", f"{stage.name}: variance 'learned' but this network has no learned σ")
    return st.variance, gamma


def image_x0_transform(known: torch.Tensor | None = None, keep: torch.Tensor | None = None):
    """pred_x0 of an image stage: clamped to the data range [−1, 1] (as GLIDE and ADM sample with
    ``clip_denoised``: early steps of the cosine schedule otherwise amplify small ε errors without
    bound), then the known pixels written back when editing (``keep`` 1 = known)."""
    if known is None:
        return clip_x0
    return lambda x0: keep * known + (1 - keep) * clip_x0(x0)


def _step_end(callback: StepCallback | None, chain):
    """The samplers' ``step_end`` for a pipeline step callback: (step, number of steps, latents after it)."""
    return None if callback is None else (lambda step, t, x: callback(step, chain.num_timesteps, x))


def run_sampler(stage: Stage, st: StageSettings, denoiser, x_t: torch.Tensor, cond: dict, generators,
                callback: StepCallback | None = None, x0_transform=None, eta: float | None = None) -> torch.Tensor:
    """Sample from x_T = ``x_t`` over the stage's chain respaced to ``st.steps``."""
    chain = stage.diffusion.respace(st.steps)
    kw = dict(cond=cond, generator=generators, step_end=_step_end(callback, chain), x0_transform=x0_transform)
    if st.sampler == "ddpm":
        variance, gamma = _variance(stage, st)
        return sample_ddpm(denoiser, x_t, chain, variance=variance, gamma=gamma, **kw)
    if st.sampler == "ddim":
        return sample_ddim(denoiser, x_t, chain, eta=st.eta if eta is None else eta, **kw)
    return sample_dpmpp_2m(denoiser, x_t, chain, **kw)


def run_prior(stage: Stage, st: StageSettings, text_emb, text_tokens, text_mask, seeds: Sequence[int],
              callback: StepCallback | None = None) -> torch.Tensor:
    """z_i [B, D] for B captions (§2.2): ``n_candidates`` draws each, keep the highest z_i·z_t."""
    prior, b, n = stage.model, text_emb.shape[0], st.n_candidates
    dev = text_emb.device
    cond = {"text_emb": text_emb, "text_tokens": text_tokens, "text_mask": text_mask}
    cond = {k: v.repeat_interleave(n, dim=0) for k, v in cond.items()}
    cond["drop_text"] = torch.zeros(b * n, dtype=torch.bool, device=dev)
    den = stage.denoiser(st.guidance_scale, {"drop_text": torch.ones(1, dtype=torch.bool, device=dev)})
    gens = make_generators([derive_seed(s, 0, c) for s in seeds for c in range(n)])
    x_t = randn((b * n, prior.embed_dim), gens, dev, torch.float32)
    z = run_sampler(stage, st, den, x_t, cond, gens, callback)
    z = prior.normalizer.denormalize(z.to(torch.float32)).view(b, n, -1)  # [B, n, D]
    best = (z * text_emb[:, None]).sum(-1).argmax(dim=1)  # [B]
    return z[torch.arange(b, device=dev), best]


def decoder_cond(stage: Stage, image_emb, text_tokens=None, text_mask=None, known=None, keep=None, text_emb=None):
    """(cond, null) of the decoder: guidance drops z_i and the caption together (§2.1). ``text_emb`` (z_t)
    goes in only for a decoder that reads it (``text_time="clip_embedding"``)."""
    dev, b = image_emb.device, image_emb.shape[0]
    cond = {"image_emb": image_emb, "drop_image": torch.zeros(b, dtype=torch.bool, device=dev)}
    if text_tokens is not None:
        cond.update(text_tokens=text_tokens, drop_text=cond["drop_image"].clone())
        if text_mask is not None:
            cond["text_mask"] = text_mask
        if getattr(stage.model, "text_time", "pooled") == "clip_embedding":
            cond["text_emb"] = text_emb
    if stage.model.inpaint:
        if known is None:  # generation with an inpainting decoder: nothing is known
            known = torch.zeros(b, 3, stage.model.image_size, stage.model.image_size, device=dev)
            keep = torch.zeros(b, 1, *known.shape[2:], device=dev)
        cond.update(masked_image=known, mask=keep)
    ones = torch.ones(1, dtype=torch.bool, device=dev)
    return cond, {k: ones for k in cond if k.startswith("drop_")}


def run_decoder(stage: Stage, st: StageSettings, image_emb, text_tokens, text_mask, seeds: Sequence[int], *,
                x_t: torch.Tensor | None = None, eta: float | None = None, known=None, keep=None,
                repaint_resample: int = 1, callback: StepCallback | None = None, text_emb=None) -> torch.Tensor:
    """64-px images [B, 3, S, S] in [−1, 1]. ``x_t``: start noise (else drawn from the seeds). With
    ``known``/``keep`` (1 = known pixel): the inpainting decoder's channels plus pred_x0 write-back,
    or RePaint (Lugmayr et al. 2022) for a decoder without inpainting channels."""
    dev, size = image_emb.device, stage.model.image_size
    cond, null = decoder_cond(stage, image_emb, text_tokens, text_mask, known, keep, text_emb)
    den = stage.denoiser(st.guidance_scale, null)
    gens = stage_generators(seeds, 1, dev)
    if x_t is None:
        x_t = randn((len(seeds), 3, size, size), gens, dev, torch.float32)
    if known is not None and not stage.model.inpaint:
        variance, _ = _variance(stage, StageSettings("ddpm", st.steps, variance="auto"))
        return sample_repaint(den, x_t, stage.diffusion.respace(st.steps), known, keep, cond=cond, generator=gens,
                              variance=variance, resample=repaint_resample, callback=callback)
    return run_sampler(stage, st, den, x_t, cond, gens, callback, image_x0_transform(known, keep), eta)


def invert_decoder(stage: Stage, st: StageSettings, images, image_emb, text_tokens=None, text_mask=None,
                   callback: StepCallback | None = None) -> torch.Tensor:
    """DDIM-invert 64-px images [B, 3, S, S] to their x_T under the decoder (Song et al. 2021, §4.3)."""
    cond, null = decoder_cond(stage, image_emb, text_tokens, text_mask)
    chain = stage.diffusion.respace(st.steps)
    return ddim_invert(stage.denoiser(st.guidance_scale, null), images, chain, cond=cond,
                       step_end=_step_end(callback, chain))


def run_upsampler(stage: Stage, st: StageSettings, low_res, seeds: Sequence[int], stage_index: int, *,
                  known=None, keep=None, callback: StepCallback | None = None) -> torch.Tensor:
    """Upsample [B, 3, h, w] → [B, 3, h·s, w·s] (unguided, §2.1); known pixels are written back into
    pred_x0 at every step so the upsampled hole agrees with its surroundings."""
    model, dev = stage.model, low_res.device
    b, _, h, w = low_res.shape
    gens = stage_generators(seeds, stage_index, dev)
    x_t = randn((b, 3, h * model.scale, w * model.scale), gens, dev, torch.float32)
    return run_sampler(stage, st, stage.denoiser(), x_t, {"low_res": low_res}, gens, callback,
                       image_x0_transform(known, keep))
