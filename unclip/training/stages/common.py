"""Pieces the diffusion stages share: the diffusion objective, the stage spec, the frozen CLIP."""
from __future__ import annotations

import logging

import torch
from torch import nn

from unclip.clip import FrozenCLIP
from unclip.devices import to_device
from unclip.diffusion import Denoiser, HybridLoss, MSELoss
from unclip.models import StageSpec

log = logging.getLogger(__name__)


def stage_spec(cfg, **dims) -> StageSpec:
    """The StageSpec of this run: preset + overrides (+ CLIP dims that differ from the preset)."""
    from unclip.models import get_preset

    if cfg.model.get("init_from"):
        return _release_spec(cfg, dims)
    overrides = dict(cfg.model.overrides)
    base = get_preset(cfg.stage.name, cfg.model.preset, **overrides)
    for k, v in dims.items():
        if getattr(base, k) != v:
            overrides[k] = v
    return StageSpec(stage=cfg.stage.name, preset=cfg.model.preset, overrides=overrides,
                     schedule=cfg.stage.schedule, num_timesteps=cfg.stage.num_timesteps,
                     mean_type=cfg.stage.get("mean_type"))


def _release_spec(cfg, dims: dict) -> StageSpec:
    """The spec of the release ``model.init_from`` (fine-tuning), with ``model.overrides`` on top."""
    from unclip.io import read_release_config
    from unclip.models.release import FORMAT

    d, path, _ = read_release_config(cfg.model.init_from, "model.init_from release", FORMAT)
    rel = StageSpec.from_dict(d, source=str(path))
    if rel.stage != cfg.stage.name:
        raise ValueError(f"model.init_from={cfg.model.init_from} holds a {rel.stage} release, this run trains "
                         f"{cfg.stage.name}")
    fields = rel.fields
    wrong = {k: (v, fields[k]) for k, v in dims.items() if fields.get(k) != v}
    if wrong:
        raise ValueError(f"model.init_from={cfg.model.init_from}: the CLIP dims (data, release) differ: {wrong}; "
                         "use the CLIP the release was made with (its pipeline's clip/)")
    return StageSpec(stage=rel.stage, preset=rel.preset, overrides={**rel.overrides, **dict(cfg.model.overrides)},
                     schedule=rel.schedule, num_timesteps=rel.num_timesteps, mean_type=rel.mean_type, extra=rel.extra)


class DiffusionObjective:
    """Draw t ~ U{0..T−1} and ε ~ N(0, I), noise x0 with q_sample, and return the stage's per-sample
    loss (MSE on the spec's target, or the hybrid loss for learned σ) [B]."""

    def __init__(self, spec: StageSpec, loss: str, min_snr_gamma: float | None = None):
        self.spec, self.diffusion = spec, spec.diffusion()
        if loss == "hybrid":
            if not spec.learned_variance:
                raise ValueError(f"stage.loss=hybrid needs a {spec.stage} preset with learned_sigma=true")
            self.loss = HybridLoss(self.diffusion, target=spec.mean_type, min_snr_gamma=min_snr_gamma)
        elif loss == "mse":
            self.loss = MSELoss(self.diffusion, target=spec.mean_type, min_snr_gamma=min_snr_gamma)
        else:
            raise ValueError(f"stage.loss={loss!r}: expected 'mse' or 'hybrid'")

    def __call__(self, model: nn.Module, x0: torch.Tensor, cond: dict, generator: torch.Generator) -> torch.Tensor:
        b, dev = x0.shape[0], x0.device
        # drawn on the host (the same draws on any device), copied without a host sync
        t = to_device(torch.randint(0, self.diffusion.num_timesteps, (b,), generator=generator), dev)  # [B]
        noise = to_device(torch.randn(x0.shape, generator=generator), dev)
        x_t = self.diffusion.q_sample(x0, t, noise)
        denoiser = Denoiser(model, self.diffusion.alphas_cumprod, mean_type=self.spec.mean_type,
                            learned_variance=self.spec.learned_variance)
        pred = denoiser(x_t, t, **cond)
        return self.loss(pred, x0.float(), x_t.float(), t, noise.float())  # [B]


def load_clip(cfg, device: torch.device) -> FrozenCLIP:
    """The frozen CLIP of ``cfg.clip``: a saved FrozenCLIP directory, else ``arch`` with random weights."""
    if cfg.clip.path:
        return FrozenCLIP.load(cfg.clip.path, device=device)
    log.warning("clip.path is not set: using %s with RANDOM weights (fine for tests; train the clip stage "
                "or pass clip.path=<pipeline>/clip for real runs)", cfg.clip.arch)
    torch.manual_seed(cfg.seed)  # the same random CLIP on every rank
    return FrozenCLIP.create(cfg.clip.arch, device=device)


def cycle_first(pipeline, n: int) -> list:
    """The first batches of a pipeline holding at least ``n`` samples (for fixed eval batches)."""
    out, seen = [], 0
    for batch in pipeline:
        out.append(batch)
        seen += len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch["caption"])
        if seen >= n:
            break
    if not out:
        raise ValueError("the validation shards hold no samples")
    return out
