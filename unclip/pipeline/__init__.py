"""unCLIP sampling: the text→image cascade, variations, interpolations, text diffs, edits, outpainting.

    from unclip.pipeline import UnCLIPPipeline
    pipe = UnCLIPPipeline.load("pipeline_dir", device="cuda", dtype=torch.bfloat16, settings="paper")
    result = pipe.generate(["a red star"], n=4, size=256, seed=0)
    result.images[0].save("star.png"); result.records[0]  # everything needed to make it again

See docs/sampling.md.
"""
from unclip.diffusion import derive_seed
from unclip.errors import InputError

from .build import build_random_pipeline
from .core import UnCLIPPipeline
from .latents import slerp
from .result import GenerationResult
from .settings import PRESETS, PipelineSettings, StageSettings, resolve_settings

__all__ = ["GenerationResult", "InputError", "PRESETS", "PipelineSettings", "StageSettings", "UnCLIPPipeline",
           "build_random_pipeline", "derive_seed", "resolve_settings", "slerp"]
