"""The released form of a stage: ``<dir>/<stage>/{config.yaml, model.safetensors}``.

``config.yaml`` holds everything needed to rebuild the network and its diffusion without this
repository's configs: the stage, the preset name, every preset field (resolved), and the diffusion
settings (schedule, steps, parameterization). ``model.safetensors`` holds the (EMA) weights.
Nothing is pickled. Training writes releases; the sampling pipeline reads them.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from unclip.diffusion import Denoiser, GaussianDiffusion, MeanType, make_betas
from unclip.io import read_release_config, write_release

from .presets import STAGES, get_preset

FORMAT = "unclip-stage/1"

# Paper defaults (Ramesh et al. 2022, §2 and Table 3): the prior predicts x0 directly; the decoder and
# upsamplers predict ε; sr1024 uses a linear schedule, the others cosine.
PAPER_DIFFUSION: dict[str, dict[str, Any]] = {
    "prior": {"schedule": "cosine", "mean_type": "x0"},
    "decoder": {"schedule": "cosine", "mean_type": "eps"},
    "sr256": {"schedule": "cosine", "mean_type": "eps"},
    "sr1024": {"schedule": "linear", "mean_type": "eps"},
}


@dataclass
class StageSpec:
    """What a stage is: network preset + diffusion settings. Serialises to ``config.yaml``."""

    stage: str
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # preset fields changed from the named preset
    schedule: str | None = None  # None: the paper's choice for the stage
    num_timesteps: int = 1000
    mean_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. analytic-DPM Γ per step count for the prior

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}: expected one of {STAGES}")
        self.schedule = self.schedule or PAPER_DIFFUSION[self.stage]["schedule"]
        self.mean_type = MeanType(self.mean_type or PAPER_DIFFUSION[self.stage]["mean_type"]).value
        get_preset(self.stage, self.preset, **self.overrides)  # unknown fields fail here, not at load time

    @property
    def fields(self) -> dict[str, Any]:
        """Every preset field, resolved."""
        return dataclasses.asdict(get_preset(self.stage, self.preset, **self.overrides))

    @property
    def learned_variance(self) -> bool:
        return bool(self.fields.get("learned_sigma", False))

    def build_model(self) -> nn.Module:
        return get_preset(self.stage, self.preset, **self.overrides).build()

    def diffusion(self) -> GaussianDiffusion:
        return GaussianDiffusion(make_betas(self.schedule, self.num_timesteps))

    def denoiser(self, model: nn.Module) -> Denoiser:
        """The parameterization wrapper that turns the network's raw output into a Prediction."""
        return Denoiser(model, self.diffusion().alphas_cumprod, mean_type=self.mean_type,
                        learned_variance=self.learned_variance)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "stage": self.stage, "preset": self.preset, "overrides": dict(self.overrides),
                "fields": self.fields, "schedule": self.schedule, "num_timesteps": self.num_timesteps,
                "mean_type": self.mean_type, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> StageSpec:
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: not an unclip stage config (format {d.get('format')!r}, expected {FORMAT!r})")
        # Rebuild from the resolved fields, so a release survives later changes to the named presets.
        overrides = _changed_fields(d["stage"], d["preset"], d["fields"])
        return cls(stage=d["stage"], preset=d["preset"], overrides=overrides,
                   schedule=d["schedule"], num_timesteps=int(d["num_timesteps"]), mean_type=d["mean_type"],
                   extra=dict(d.get("extra") or {}))


# Fields older releases wrote that no network reads any more: dropped on load when they hold the value that
# meant "off" (None: any value; the field never changed a network).
RETIRED_FIELDS: dict[str, Any] = {"noise_cond": False, "sample_steps": None}


def _changed_fields(stage: str, preset: str, fields: dict[str, Any]) -> dict[str, Any]:
    base = dataclasses.asdict(get_preset(stage, preset))
    fields = dict(fields)
    for name, off in RETIRED_FIELDS.items():
        if name in fields and name not in base:
            value = fields.pop(name)
            if off is not None and value != off:
                raise ValueError(f"{stage} release has {name}={value!r}: this version of unclip removed that "
                                 f"option (only {name}={off!r} loads)")
    unknown = sorted(set(fields) - set(base))
    if unknown:
        raise ValueError(f"{stage} release has fields this version of unclip does not know: {unknown}")
    norm = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return {k: v for k, v in norm.items() if base[k] != v}


def save_stage(directory: str | os.PathLike, spec: StageSpec, model: nn.Module) -> Path:
    """Write ``directory/config.yaml`` and ``directory/model.safetensors`` atomically."""
    return write_release(directory, spec.to_dict(), model, {"format": FORMAT, "stage": spec.stage})


def load_stage(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[StageSpec, nn.Module]:
    """Rebuild a released stage: returns its spec and the network (eval mode, on ``device``)."""
    cfg, cfg_path, weights = read_release_config(directory, "stage release", FORMAT)
    spec = StageSpec.from_dict(cfg, source=str(cfg_path))
    model = spec.build_model()
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except SafetensorError as err:  # truncated or corrupt file
        raise ValueError(f"{weights} cannot be read (truncated or corrupt?): {err}") from None
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{weights} does not match the {spec.stage} network of {cfg_path}: {err}") from None
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the {spec.stage} network of {cfg_path}: "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return spec, model.to(device).eval()
