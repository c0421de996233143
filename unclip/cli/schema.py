"""Structured schemas of the sampling jobs (registered in Hydra's ConfigStore, so typos fail)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore


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
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16
    preset: str = "fast"  # paper | fast
    settings: SettingsOverrides = field(default_factory=SettingsOverrides)  # e.g. settings.decoder.steps=50
    size: Optional[int] = None  # output side; None: the largest the pipeline makes (as the server's default)
    seed: int = 0
    moderation: bool = True
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
    eta: float = 1.0


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
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0
    canvas: Optional[int] = None
    tile: Optional[int] = None
    overlap: float = 0.25
    n: int = 1


@dataclass
class InterpolateJob(CommonJob):
    image: str = "???"
    image_b: Optional[str] = None  # interpolation between two images
    caption: Optional[str] = None  # text diff: caption → new_caption
    new_caption: Optional[str] = None
    steps: int = 5
    thetas: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    noise: str = "inverted"  # inverted | fixed


def register() -> None:
    cs = ConfigStore.instance()
    for name, node in [("generate_schema", GenerateJob), ("vary_schema", VaryJob), ("edit_schema", EditJob),
                       ("outpaint_schema", OutpaintJob), ("interpolate_schema", InterpolateJob)]:
        cs.store(name=name, node=node)
