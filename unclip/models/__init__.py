"""The unCLIP networks (Ramesh et al. 2022): diffusion prior, 64-px decoder, upsamplers, presets."""
from .conditioning import EmbeddingNormalizer, sample_drop_mask
from .decoder import Decoder, invert_decoder, sample_decoder
from .masks import MASK_KINDS, random_inpaint_mask
from .presets import (
    PIPELINE_STAGES,
    REGISTRY,
    SIZES,
    STAGES,
    UPSAMPLER_SIZES,
    DecoderPreset,
    PriorPreset,
    UpsamplerPreset,
    build,
    get_preset,
)
from .prior import DiffusionPrior, prior_analytic_gamma, sample_prior
from .release import PAPER_DIFFUSION, StageSpec, load_stage, save_stage
from .text_encoder import TextEncoder, TextSource
from .upsampler import LowResConditioning, Upsampler, random_aligned_crop, sample_upsampler

__all__ = [
    "MASK_KINDS", "PAPER_DIFFUSION", "PIPELINE_STAGES", "SIZES", "UPSAMPLER_SIZES", "StageSpec", "load_stage",
    "save_stage", "REGISTRY", "STAGES", "Decoder", "DecoderPreset", "DiffusionPrior", "EmbeddingNormalizer",
    "LowResConditioning", "PriorPreset", "TextEncoder", "TextSource", "Upsampler", "UpsamplerPreset", "build",
    "get_preset",
    "prior_analytic_gamma", "random_aligned_crop", "random_inpaint_mask", "sample_decoder", "sample_drop_mask",
    "sample_prior", "sample_upsampler", "invert_decoder",
]
