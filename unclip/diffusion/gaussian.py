"""The Gaussian diffusion q(x_t | x0) = N(sqrt(ᾱ_t)·x0, (1−ᾱ_t)·I): forward process, true posterior,
parameterization conversions and reverse-step variances. Network-free; float64 numpy inside,
tensors out in the input's dtype and device.

`t` is always an index into THIS diffusion's arrays (0..num_timesteps−1): a python int (coefficients
become python floats, batch-independent) or a LongTensor [B]. `timesteps[t]` is the original step id
that a network was trained on; for an unrespaced diffusion the two coincide.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import Tensor

from unclip.devices import to_device

from .enums import VarType
from .respace import space_timesteps

Coef = float | Tensor


def extract(arr: np.ndarray, t: int | Tensor, like: Tensor) -> Coef:
    """arr[t] as a python float (int t), or as a [B, 1, …] tensor broadcastable to `like` (tensor t)."""
    if isinstance(t, (int, np.integer)):
        if not 0 <= t < len(arr):
            raise ValueError(f"t={t}: expected a step index in [0, {len(arr)})")
        return float(arr[int(t)])
    if t.dim() != 1 or t.shape[0] != like.shape[0] or t.is_floating_point() or t.is_complex():
        raise ValueError(f"t has shape {tuple(t.shape)} and dtype {t.dtype}: expected an integer tensor [B], "
                         f"B = {like.shape[0]}")
    # the range check reads t: free on the CPU, a host sync elsewhere (there the device's index check fires)
    if t.device.type == "cpu":
        idx = t.detach().numpy()
        if idx.size and (idx.min() < 0 or idx.max() >= len(arr)):
            raise ValueError(f"t ranges over [{idx.min()}, {idx.max()}]: expected step indices in [0, {len(arr)})")
    vals = _table(arr, like.device)[to_device(t, like.device)]  # gathered in float64 on like's device
    return vals.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


_TABLES: dict[tuple[int, str], Tensor] = {}  # (id of a live schedule array, device) -> its device copy


def _table(arr: np.ndarray, device: torch.device) -> Tensor:
    """A schedule array as a float64 tensor on ``device`` (float32 on MPS, which has no float64), copied
    without a host sync and once per array and device (the entry goes when the array does): the gather
    then runs on the device and nothing is read back."""
    key = (id(arr), str(device))
    table = _TABLES.get(key)
    if table is None:
        table = torch.from_numpy(np.array(arr, dtype=np.float64))  # a copy: the cache must not keep arr alive
        table = to_device(table.float() if device.type == "mps" else table, device)
        _TABLES[key] = table
        weakref.finalize(arr, _TABLES.pop, key, None)
    return table


# Conversions among x0, ε and v at one noise level, with a = sqrt(ᾱ), s = sqrt(1−ᾱ), x_t = a·x0 + s·ε.
def x0_from_eps(x_t: Tensor, eps: Tensor, a: Coef, s: Coef) -> Tensor:
    return (x_t - s * eps) / a


def eps_from_x0(x_t: Tensor, x0: Tensor, a: Coef, s: Coef) -> Tensor:
    return (x_t - a * x0) / s


def v_from_x0_eps(x0: Tensor, eps: Tensor, a: Coef, s: Coef) -> Tensor:
    """v = a·ε − s·x0 (Salimans & Ho 2022, §4)."""
    return a * eps - s * x0


def x0_from_v(x_t: Tensor, v: Tensor, a: Coef, s: Coef) -> Tensor:
    return a * x_t - s * v  # uses a² + s² = 1


def eps_from_v(x_t: Tensor, v: Tensor, a: Coef, s: Coef) -> Tensor:
    return s * x_t + a * v


class GaussianDiffusion:
    """A (possibly respaced) discrete Gaussian diffusion defined by its β (or ᾱ) schedule."""

    def __init__(self, betas: np.ndarray, timesteps: np.ndarray | None = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or not np.all((betas > 0) & (betas <= 1)):
            raise ValueError(f"betas of shape {betas.shape}: expected a non-empty 1-D array in (0, 1]")
        self._build(np.cumprod(1.0 - betas), betas, timesteps)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: np.ndarray,
                            timesteps: np.ndarray | None = None) -> GaussianDiffusion:
        """Build from ᾱ directly so they are kept bit-for-bit (used by `respace`)."""
        acp = np.asarray(alphas_cumprod, dtype=np.float64)
        if acp.ndim != 1 or acp.size == 0 or not np.all((acp >= 0) & (acp < 1)) or np.any(np.diff(acp) >= 0):
            raise ValueError("alphas_cumprod: expected a non-empty strictly decreasing 1-D array in [0, 1)")
        self = cls.__new__(cls)
        self._build(acp, 1.0 - acp / np.concatenate([[1.0], acp[:-1]]), timesteps)
        return self

    def _build(self, acp: np.ndarray, betas: np.ndarray, timesteps) -> None:
        n = len(betas)
        self.timesteps = np.arange(n, dtype=np.int64) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
        if self.timesteps.shape != (n,) or np.any(np.diff(self.timesteps) <= 0):
            raise ValueError(f"timesteps: expected {n} strictly increasing original step ids")
        self.betas, self.alphas_cumprod = betas, acp
        self.alphas_cumprod_prev = np.concatenate([[1.0], acp[:-1]])
        self.sqrt_alphas_cumprod = np.sqrt(acp)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - acp)
        self.one_minus_alphas_cumprod, self.log_one_minus_alphas_cumprod = 1.0 - acp, np.log(1.0 - acp)
        self.log_betas = np.log(betas)
        # True posterior q(x_{t−1} | x_t, x0) (Ho et al. 2020, eqs. 6–7).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - acp)
        # β̃_0 = 0; like improved-diffusion, clip its log to β̃_1 (β_0 for a 1-step chain).
        first = self.posterior_variance[1] if n > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.concatenate([[first], self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - acp)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - acp)
        # FIXED_LARGE uses β_t but β̃_1 at t = 0, which gives a better decoder likelihood (improved-diffusion).
        self.log_betas_large = np.log(np.concatenate([[first], betas[1:]]))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def respace(self, spec) -> GaussianDiffusion:
        """The chain on the steps `space_timesteps(num_timesteps, spec)` of this one; ᾱ kept exactly and
        `.timesteps` still naming the ORIGINAL step ids."""
        kept = np.asarray(space_timesteps(self.num_timesteps, spec), dtype=np.int64)
        return GaussianDiffusion.from_alphas_cumprod(self.alphas_cumprod[kept], self.timesteps[kept])

    def coefs(self, t: int | Tensor, like: Tensor) -> tuple[Coef, Coef]:
        """(a, s) = (sqrt(ᾱ_t), sqrt(1−ᾱ_t))."""
        return extract(self.sqrt_alphas_cumprod, t, like), extract(self.sqrt_one_minus_alphas_cumprod, t, like)

    # Forward process.
    def q_mean_variance(self, x0: Tensor, t: int | Tensor) -> tuple[Tensor, Coef, Coef]:
        """Mean, variance and log-variance of q(x_t | x0)."""
        mean = extract(self.sqrt_alphas_cumprod, t, x0) * x0
        return mean, extract(self.one_minus_alphas_cumprod, t, x0), extract(self.log_one_minus_alphas_cumprod, t, x0)

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε."""
        noise = torch.randn_like(x0) if noise is None else noise
        a, s = self.coefs(t, x0)
        return a * x0 + s * noise

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: int | Tensor) -> tuple[Tensor, Coef, Coef]:
        """Mean, variance β̃_t and clipped log-variance of q(x_{t−1} | x_t, x0)."""
        mean = extract(self.posterior_mean_coef1, t, x_t) * x0 + extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, extract(self.posterior_variance, t, x_t), extract(self.posterior_log_variance_clipped, t, x_t)

    # Parameterization conversions at step t.
    def x0_from_eps(self, x_t: Tensor, t: int | Tensor, eps: Tensor) -> Tensor:
        return x0_from_eps(x_t, eps, *self.coefs(t, x_t))

    def eps_from_x0(self, x_t: Tensor, t: int | Tensor, x0: Tensor) -> Tensor:
        return eps_from_x0(x_t, x0, *self.coefs(t, x_t))

    def v_from_x0_eps(self, x0: Tensor, eps: Tensor, t: int | Tensor) -> Tensor:
        return v_from_x0_eps(x0, eps, *self.coefs(t, x0))

    def x0_from_v(self, x_t: Tensor, t: int | Tensor, v: Tensor) -> Tensor:
        return x0_from_v(x_t, v, *self.coefs(t, x_t))

    def eps_from_v(self, x_t: Tensor, t: int | Tensor, v: Tensor) -> Tensor:
        return eps_from_v(x_t, v, *self.coefs(t, x_t))

    # Reverse step p(x_{t−1} | x_t).
    def p_log_variance(self, var_type: VarType | str, t: int | Tensor, like: Tensor,
                       var_frac: Tensor | None = None) -> Coef:
        """log σ_t² of the reverse step for `var_type`; LEARNED_RANGE interpolates log β_t and log β̃_t
        with the fraction `var_frac` ∈ [0, 1] (Nichol & Dhariwal 2021, eq. 15) on THIS chain's β."""
        var_type = VarType(var_type)
        if var_type is VarType.FIXED_SMALL:
            return extract(self.posterior_log_variance_clipped, t, like)
        if var_type is VarType.FIXED_LARGE:
            return extract(self.log_betas_large, t, like)
        if var_frac is None:
            raise ValueError("VarType.LEARNED_RANGE needs the prediction's var_frac, got None")
        min_log = extract(self.posterior_log_variance_clipped, t, like)
        max_log = extract(self.log_betas, t, like)
        return var_frac * max_log + (1 - var_frac) * min_log
