"""Structured schemas of the sampling jobs (registered in Hydra's ConfigStore, so typos fail)."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from unclip.cli.common import DTYPES
from unclip.pipeline import UnCLIPPipeline


def _defaults(method: Callable) -> dict[str, Any]:
    """The keyword defaults of a pipeline method: the jobs take theirs from there, so each is written once."""
    return {k: p.default for k, p in inspect.signature(method).parameters.items() if p.default is not p.empty}


_LOAD, _VARIATIONS = _defaults(UnCLIPPipeline.load), _defaults(UnCLIPPipeline.variations)
_OUTPAINT, _INTERPOLATE = _defaults(UnCLIPPipeline.outpaint), _defaults(UnCLIPPipeline.interpolate)
_TEXT_DIFF = _defaults(UnCLIPPipeline.text_diff)


@dataclass
class StageOverrides:
    """unclip.pipeline.StageSettings fields; None keeps the preset's value."""
    sampler: Optional[str] = None  # ddpm | ddim | dpmpp_2m
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    eta: Optional[float] = None
    variance: Optional[str] = None  # auto | small | large | learned | analytic
    n_candidates: Optional[int] = None


@dataclass
class SettingsOverrides:
    """unclip.pipeline.PipelineSettings fields; None keeps the preset's value."""
    prior: StageOverrides = field(default_factory=StageOverrides)
    decoder: StageOverrides = field(default_factory=StageOverrides)
    sr256: StageOverrides = field(default_factory=StageOverrides)
    sr1024: StageOverrides = field(default_factory=StageOverrides)
    batch_size: Optional[int] = None
    repaint_resample: Optional[int] = None
    seam_feather: Optional[int] = None


@dataclass
class CommonJob:
    pipeline_dir: str = "???"
    out: str = "samples"
    device: str = _LOAD["device"]
    dtype: str = {t: name for name, t in DTYPES.items()}[_LOAD["dtype"]]  # float32 | bfloat16
    preset: str = _LOAD["settings"]  # paper | fast
    settings: SettingsOverrides = field(default_factory=SettingsOverrides)  # e.g. settings.decoder.steps=50
    size: Optional[int] = None  # output side; None: the largest the pipeline makes (as the server's default)
    seed: int = 0
    moderation: bool = _LOAD["moderation"]
    progress: bool = True
    contact_sheet: bool = True


@dataclass
class GenerateJob(CommonJob):
    prompts: list[str] = field(default_factory=list)
    prompts_file: Optional[str] = None  # one prompt a line; blank lines and '#' comments skipped
    n: int = 4  # images per prompt
    prompts_per_call: int = 8  # prompts per pipeline call (each writes its PNGs before the next starts)
    reproduce: Optional[str] = None  # a JSON sidecar: make that image again


@dataclass
class VaryJob(CommonJob):
    image: str = "???"
    n: int = 4
    eta: float = _VARIATIONS["eta"]


@dataclass
class EditJob(CommonJob):
    image: str = "???"
    mask: Optional[str] = None
    prompt: str = "???"
    n: int = 4


@dataclass
class OutpaintJob(CommonJob):
    image: str = "???"
    prompt: str = "???"
    left: int = _OUTPAINT["left"]
    right: int = _OUTPAINT["right"]
    top: int = _OUTPAINT["top"]
    bottom: int = _OUTPAINT["bottom"]
    canvas: Optional[int] = _OUTPAINT["canvas"]
    tile: Optional[int] = _OUTPAINT["tile"]
    overlap: float = _OUTPAINT["overlap"]
    n: int = _OUTPAINT["n"]


@dataclass
class InterpolateJob(CommonJob):
    image: str = "???"
    image_b: Optional[str] = None  # interpolation between two images
    caption: Optional[str] = None  # text diff: caption → new_caption
    new_caption: Optional[str] = None
    steps: int = _INTERPOLATE["steps"]
    thetas: list[float] = field(default_factory=lambda: list(_TEXT_DIFF["thetas"]))
    noise: str = _INTERPOLATE["noise"]  # inverted | fixed


def register() -> None:
    cs = ConfigStore.instance()
    for name, node in [("generate_schema", GenerateJob), ("vary_schema", VaryJob), ("edit_schema", EditJob),
                       ("outpaint_schema", OutpaintJob), ("interpolate_schema", InterpolateJob)]:
        cs.store(name=name, node=node)
