"""Per-stage sampling settings and the two named presets, ``paper`` and ``fast``.

A ``PipelineSettings`` holds one ``StageSettings`` per stage (prior, decoder, sr256, sr1024) plus the
pipeline-level knobs (micro-batch size, RePaint resampling, seam feathering). Everything is a plain
frozen dataclass, so a record of a generation (``to_dict``) rebuilds the exact settings
(``from_dict``) and unknown keys fail loudly.

``paper`` is Ramesh et al. 2022 (§2, Table 3): prior 64 strided steps of DDPM with the Analytic-DPM
variance and 2 candidates, decoder 250 DDPM steps with learned σ and guidance, sr256 DDIM 27, sr1024
DDIM 15. ``fast`` is chosen by measurement (docs/sampling.md, ``sample/measure_samplers.py``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unclip.errors import InputError
from unclip.models import STAGES
from unclip.models.sampling import StageSettings


@dataclass(frozen=True)
class PipelineSettings:
    """Every setting of a cascade run; ``replace`` takes nested overrides."""

    prior: StageSettings = field(default_factory=StageSettings)
    decoder: StageSettings = field(default_factory=StageSettings)
    sr256: StageSettings = field(default_factory=StageSettings)
    sr1024: StageSettings = field(default_factory=StageSettings)
    batch_size: int = 8  # images per network call (per-sample RNG: results do not depend on it)
    repaint_resample: int = 4  # RePaint jumps per step for decoders without inpainting channels
    seam_feather: int = 4  # output pixels over which generated content blends into the hole's border

    def stage(self, name: str) -> StageSettings:
        return getattr(self, name)

    def replace(self, overrides: Mapping[str, Any] | None = None) -> PipelineSettings:
        """A copy with ``{"decoder": {"steps": 50}, "batch_size": 4}``-style overrides applied."""
        if not overrides:
            return self
        top = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - top)
        if unknown:
            raise InputError("settings", f"unknown setting(s) {unknown}: expected some of {sorted(top)}")
        new: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in STAGES:
                if isinstance(value, StageSettings):
                    new[key] = value
                    continue
                if not isinstance(value, Mapping):
                    raise InputError("settings", f"settings[{key!r}] must be a mapping, got {type(value).__name__}")
                fields = {f.name for f in dataclasses.fields(StageSettings)}
                bad = sorted(set(value) - fields)
                if bad:
                    raise InputError("settings", f"unknown {key} setting(s) {bad}: expected some of {sorted(fields)}")
                new[key] = dataclasses.replace(self.stage(key), **dict(value))
            else:
                new[key] = value
        out = dataclasses.replace(self, **new)
        if out.batch_size < 1 or out.repaint_resample < 1 or out.seam_feather < 0:
            raise InputError("settings", "batch_size and repaint_resample must be >= 1, seam_feather >= 0")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineSettings:
        return cls().replace(d)


PRESETS: dict[str, PipelineSettings] = {
    # Ramesh et al. 2022, §2.1–2.2 and Table 3. The prior is unguided (the paper found guidance did not
    # help it); the decoder uses classifier-free guidance.
    "paper": PipelineSettings(
        prior=StageSettings("ddpm", 64, variance="auto", n_candidates=2),
        decoder=StageSettings("ddpm", 250, guidance_scale=3.0, variance="auto"),
        sr256=StageSettings("ddim", 27),
        sr1024=StageSettings("ddim", 15),
    ),
    # Measured with sample/measure_samplers.py (docs/sampling.md): with the Bayes-optimal denoiser of a sharp
    # Gaussian mixture, DPM-Solver++(2M) at 25 steps is closer to the data (sliced W1 0.011) than ancestral
    # DDPM at 250 (0.018) on the cosine schedule; at 10 steps it is the best on cosine (sr256) but diverges
    # on the linear schedule, where DDIM 10 is the best (sr1024).
    "fast": PipelineSettings(
        prior=StageSettings("dpmpp_2m", 25, n_candidates=2),
        decoder=StageSettings("dpmpp_2m", 25, guidance_scale=3.0),
        sr256=StageSettings("dpmpp_2m", 10),
        sr1024=StageSettings("ddim", 10),
    ),
}


def resolve_settings(settings: str | PipelineSettings | Mapping[str, Any] | None,
                     base: PipelineSettings) -> PipelineSettings:
    """A preset name, a PipelineSettings, or a mapping of overrides on ``base`` (None: ``base``)."""
    if settings is None:
        return base
    if isinstance(settings, PipelineSettings):
        return settings
    if isinstance(settings, str):
        if settings not in PRESETS:
            raise InputError("settings", f"unknown settings preset {settings!r}: expected one of {sorted(PRESETS)}")
        return PRESETS[settings]
    if isinstance(settings, Mapping):
        settings = dict(settings)
        preset = settings.pop("preset", None)
        return resolve_settings(preset, base).replace(settings)
    raise InputError("settings", f"settings of type {type(settings).__name__}: expected a preset name, "
                                 "PipelineSettings or a mapping of overrides")
