"""Network-free diffusion math: schedules, the Gaussian process, respacing, the parameterization
wrapper, guidance, losses and samplers."""

from .denoiser import Denoiser, Prediction
from .enums import MeanType, VarType
from .gaussian import GaussianDiffusion
from .guidance import classifier_free_guidance
from .losses import HybridLoss, MSELoss, VLBLoss, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .repaint import sample_repaint
from .respace import respace_betas, space_timesteps
from .rng import derive_seed, make_generators, randn, randn_like
from .samplers import (
    analytic_variance,
    clip_x0,
    ddim_invert,
    dynamic_threshold,
    estimate_analytic_gamma,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from .schedules import make_betas

__all__ = [
    "Denoiser", "GaussianDiffusion", "HybridLoss", "MSELoss", "MeanType", "Prediction", "VLBLoss", "VarType",
    "analytic_variance", "classifier_free_guidance", "clip_x0", "derive_seed", "ddim_invert",
    "discretized_gaussian_log_likelihood",
    "dynamic_threshold", "estimate_analytic_gamma", "make_betas", "make_generators", "mean_flat", "normal_kl",
    "randn", "randn_like", "respace_betas", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_repaint",
    "space_timesteps",
]
