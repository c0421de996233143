"""Noise schedules β_0..β_{T−1}, in float64."""

from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("cosine", "linear")


def _cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """f(u) = cos²(((u + s)/(1 + s))·π/2), u = t/T (Nichol & Dhariwal 2021, eq. 17)."""
    return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def make_betas(name: str, num_timesteps: int = 1000) -> np.ndarray:
    """β_t for t = 0..T−1 as a float64 array.

    "cosine": ᾱ(t) = f(t/T)/f(0), β_t = 1 − ᾱ(t+1)/ᾱ(t) clipped at 0.999 so the last steps do not
      become singular (Nichol & Dhariwal 2021, §3.2, s = 0.008).
    "linear": Ho et al. 2020's 1e-4 → 0.02 at T = 1000, both ends scaled by 1000/T so that any T
      spans the same total noise (improved-diffusion's convention).
    """
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps={num_timesteps!r}: expected a positive int")
    if name == "cosine":
        u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
        f = _cosine_alpha_bar(u)
        return np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    if name == "linear":
        scale = 1000.0 / num_timesteps
        if scale * 0.02 >= 1.0:
            raise ValueError(f"linear schedule with num_timesteps={num_timesteps}: expected more than 20 "
                             "steps (β_end = 0.02·1000/T must stay below 1)")
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    raise ValueError(f"unknown noise schedule {name!r}: expected one of {SCHEDULES}")
