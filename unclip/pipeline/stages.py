"""A loaded stage, and the pipeline's part of running it: per-image seeds and named settings.

The sampling itself is the models' (``sample_prior``, ``sample_decoder``, ``invert_decoder``,
``sample_upsampler``), the one path the training grids use too; here each image's seed becomes its
own generator per stage, and a pipeline step callback becomes the samplers' ``step_end``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unclip.diffusion import GaussianDiffusion, derive_seed, make_generators
from unclip.models import StageSpec, invert_decoder, sample_decoder, sample_prior, sample_upsampler
from unclip.models.sampling import StageSettings

StepCallback = Callable[[int, int, torch.Tensor], torch.Tensor | None]  # (step, num_steps, x after the step)


@dataclass
class Stage:
    """A loaded stage: its release spec, network (eval, on device), training chain and dtype."""

    name: str
    spec: StageSpec
    model: nn.Module
    diffusion: GaussianDiffusion
    dtype: torch.dtype
    compiled: nn.Module | None = None  # torch.compile(model) when the pipeline was loaded with compile=True

    @property
    def net(self) -> nn.Module:
        """The module the samplers call: compiled when asked, else the network itself."""
        return self.model if self.compiled is None else self.compiled

    def gamma(self, steps: int) -> np.ndarray | None:
        """Analytic-DPM Γ for ``steps`` stored in the release (``extra.analytic_gamma[str(steps)]``)."""
        table = (self.spec.extra or {}).get("analytic_gamma") or {}
        g = table.get(str(steps))
        return None if g is None else np.asarray(g, dtype=np.float64)


def stage_generators(seeds: Sequence[int], stage_index: int) -> list[torch.Generator]:
    """One generator per sample for one stage, from the sample's seed (so stages draw independent noise)."""
    return make_generators([derive_seed(s, stage_index) for s in seeds])  # CPU: same numbers on every machine


def _step_end(callback: StepCallback | None, stage: Stage, st: StageSettings):
    """The samplers' ``step_end`` for a pipeline step callback: (step, number of steps, latents after it)."""
    if callback is None:
        return None
    steps = stage.diffusion.respace(st.steps).num_timesteps
    return lambda step, t, x: callback(step, steps, x)


def run_prior(stage: Stage, st: StageSettings, text_emb, text_tokens, text_mask, seeds: Sequence[int],
              callback: StepCallback | None = None) -> torch.Tensor:
    """z_i [B, D] for B captions (§2.2); candidate c of image i draws from derive_seed(seed_i, 0, c)."""
    gens = make_generators([derive_seed(s, 0, c) for s in seeds for c in range(st.n_candidates)])
    return sample_prior(stage.net, stage.diffusion, text_emb, text_tokens, text_mask, settings=st,
                        mean_type=stage.spec.mean_type, gamma=stage.gamma(st.steps), generator=gens,
                        step_end=_step_end(callback, stage, st), dtype=stage.dtype)


def run_decoder(stage: Stage, st: StageSettings, image_emb, text_tokens, text_mask, seeds: Sequence[int], *,
                x_t: torch.Tensor | None = None, eta: float | None = None, known=None, keep=None,
                repaint_resample: int = 1, callback: StepCallback | None = None, text_emb=None) -> torch.Tensor:
    """64-px images [B, 3, S, S] in [−1, 1]. ``x_t``: start noise (else drawn from the seeds); ``known``/
    ``keep`` (1 = known pixel): an edit (see ``sample_decoder``)."""
    return sample_decoder(stage.net, stage.diffusion, image_emb, text_tokens, text_mask, settings=st,
                          mean_type=stage.spec.mean_type, text_emb=text_emb, known=known, keep=keep,
                          repaint_resample=repaint_resample, gamma=stage.gamma(st.steps),
                          generator=stage_generators(seeds, 1), x_T=x_t, eta=eta,
                          step_end=_step_end(callback, stage, st), dtype=stage.dtype)


def run_invert(stage: Stage, st: StageSettings, images, image_emb, callback: StepCallback | None = None
               ) -> torch.Tensor:
    """DDIM-invert 64-px images [B, 3, S, S] to their x_T under the decoder (captionless)."""
    return invert_decoder(stage.net, stage.diffusion, images, image_emb, settings=st,
                          mean_type=stage.spec.mean_type, step_end=_step_end(callback, stage, st), dtype=stage.dtype)


def run_upsampler(stage: Stage, st: StageSettings, low_res, seeds: Sequence[int], stage_index: int, *,
                  known=None, keep=None, callback: StepCallback | None = None) -> torch.Tensor:
    """Upsample [B, 3, h, w] → [B, 3, h·s, w·s]; image i draws from derive_seed(seed_i, stage_index)."""
    return sample_upsampler(stage.net, stage.diffusion, low_res, settings=st, mean_type=stage.spec.mean_type,
                            known=known, keep=keep, gamma=stage.gamma(st.steps),
                            generator=stage_generators(seeds, stage_index),
                            step_end=_step_end(callback, stage, st), dtype=stage.dtype)
