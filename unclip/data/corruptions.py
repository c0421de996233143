"""Training corruptions of the upsamplers' conditioning image (Ramesh et al. 2022, §2.1).

  * sr256 (64→256): ``gaussian_blur`` with a 3×3 kernel, σ = 0.6.
  * sr1024 (256→1024): ``bsr_degradation``, after BSRGAN (Zhang et al. 2021): Gaussian blur, down-up
    resampling and Gaussian noise in a random order, then JPEG re-compression (Pillow). Parameter
    ranges are the fields of ``BSRConfig`` (defaults documented there).

Images are float tensors [B, 3, H, W] in [−1, 1]; outputs keep the shape and range. Randomness is
per call from ``generator`` (torch.Generator), drawn sample by sample in batch order.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unclip.devices import to_device


def _check(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float image batch [B, 3, H, W] in [-1, 1], "
                         f"got {x.dtype} {tuple(x.shape)}")


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D convolution of [B, C, H, W] with one [k, k] kernel, replicate-padded (same size)."""
    k = kernel.shape[-1]
    w = to_device(kernel, x.device).to(x.dtype).expand(x.shape[1], 1, k, k)  # [C, 1, k, k]
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), w, groups=x.shape[1])  # [B, C, H, W]


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """Normalised [size, size] Gaussian; anisotropic when sigma_y ≠ sigma_x, rotated by theta (radians)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel: size={size} must be odd and positive")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy  # rotated coordinates
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, kernel_size: int = 3, sigma: float = 0.6) -> torch.Tensor:
    """The sr256 corruption (§2.1): blur with a ``kernel_size``² Gaussian of std ``sigma`` pixels."""
    _check(x, "gaussian_blur")
    return _filter(x, gaussian_kernel(kernel_size, sigma))


@dataclass(frozen=True)
class BSRConfig:
    """Ranges of the BSR degradation (uniform unless stated; pixel units of the low-res image)."""

    kernel_sizes: tuple[int, int] = (7, 21)  # odd kernel size k, uniform over odd values in range
    p_isotropic: float = 0.5  # else anisotropic with random rotation θ ∈ [0, π)
    iso_sigma: tuple[float, float] = (0.1, 2.8)
    aniso_sigma: tuple[float, float] = (0.5, 4.0)  # each axis independently
    resize_scale: tuple[float, float] = (0.5, 1.0)  # down to this fraction of the size, then back up
    resize_modes: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "area")  # each direction drawn apart
    noise_sigma: tuple[float, float] = (1 / 255, 25 / 255)  # std in [0, 1] intensity units
    p_gray_noise: float = 0.3  # noise shared by the 3 channels
    jpeg_quality: tuple[int, int] = (30, 95)  # Pillow quality, inclusive


class _Draw:
    """Uniform draws from a torch.Generator (None: the global RNG)."""

    def __init__(self, generator: torch.Generator | None):
        self.g = generator

    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.g).item()

    def i(self, lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=self.g))


def _blur(x: torch.Tensor, cfg: BSRConfig, d: _Draw) -> torch.Tensor:
    k = 2 * d.i(cfg.kernel_sizes[0] // 2, cfg.kernel_sizes[1] // 2) + 1
    if d.u(0, 1) < cfg.p_isotropic:
        return _filter(x, gaussian_kernel(k, d.u(*cfg.iso_sigma)))
    return _filter(x, gaussian_kernel(k, d.u(*cfg.aniso_sigma), d.u(*cfg.aniso_sigma), d.u(0, math.pi)))


def _resample(x: torch.Tensor, cfg: BSRConfig, d: _Draw) -> torch.Tensor:
    h, w = x.shape[-2:]
    f = d.u(*cfg.resize_scale)
    small = (max(1, round(h * f)), max(1, round(w * f)))
    down, up = (cfg.resize_modes[d.i(0, len(cfg.resize_modes) - 1)] for _ in range(2))
    x = F.interpolate(x, size=small, mode=down, **_align(down))
    return F.interpolate(x, size=(h, w), mode=up if up != "area" else "bilinear", **_align(up))


def _align(mode: str) -> dict:
    return {"align_corners": False} if mode in ("bilinear", "bicubic") else {}


def _noise(x: torch.Tensor, cfg: BSRConfig, d: _Draw) -> torch.Tensor:
    sigma = 2 * d.u(*cfg.noise_sigma)  # [0, 1] units -> [-1, 1] units
    shape = (1, 1, *x.shape[-2:]) if d.u(0, 1) < cfg.p_gray_noise else x.shape
    return x + sigma * torch.randn(shape, generator=d.g, dtype=torch.float32).to(x)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip one image [1, 3, H, W] in [−1, 1] through Pillow JPEG at ``quality``."""
    arr = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(out).permute(2, 0, 1)[None].to(x) / 127.5 - 1  # [1, 3, H, W]


def bsr_degradation(x: torch.Tensor, generator: torch.Generator | None = None,
                    config: BSRConfig = BSRConfig()) -> torch.Tensor:
    """The sr1024 corruption (§2.1, after BSRGAN): per sample, blur / down-up resample / noise in a
    random order, then JPEG re-compression; returns [B, 3, H, W] in [−1, 1]."""
    _check(x, "bsr_degradation")
    d, steps, out = _Draw(generator), (_blur, _resample, _noise), []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].float()  # [1, 3, H, W]
        for j in torch.randperm(3, generator=generator).tolist():
            xi = steps[j](xi, config, d)
        out.append(_jpeg(xi, d.i(*config.jpeg_quality)))
    return torch.cat(out).to(x.dtype)  # [B, 3, H, W]
