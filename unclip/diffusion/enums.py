"""Choices of the diffusion math, as enums (string-valued so configs can name them)."""

from __future__ import annotations

import enum


class MeanType(str, enum.Enum):
    """What the backbone's (first) output channels predict; also the MSE target of `MSELoss`."""

    EPS = "eps"  # the noise ε added to x0 (Ho et al. 2020)
    X0 = "x0"  # the clean sample x0 directly (the unCLIP prior predicts z_i unnoised)
    V = "v"  # v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 (Salimans & Ho 2022)


class VarType(str, enum.Enum):
    """Variance σ_t² of the reverse step p(x_{t−1} | x_t)."""

    FIXED_SMALL = "small"  # posterior variance β̃_t: the lower bound, exact for a point-mass x0
    FIXED_LARGE = "large"  # β_t: the upper bound, exact for x0 ~ N(0, I) (Ho et al. 2020)
    LEARNED_RANGE = "learned"  # exp(f·log β_t + (1−f)·log β̃_t), f from the net (Nichol & Dhariwal 2021)
