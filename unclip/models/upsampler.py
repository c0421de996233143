"""The unCLIP upsamplers (Ramesh et al. 2022, §2.1): 64→256 and 256→1024 ADM UNets with
convolutions only (no attention), not conditioned on the caption.

The low-resolution image is resized to the target size and concatenated to x_t as extra input
channels (``LowResConditioning``, one small module rather than a parallel UNet subclass); the
training corrupts it as the paper does (Gaussian blur for sr256, BSR degradation for sr1024). Trained on
crops a quarter of the target size and sampled at full size (the net is fully convolutional) with DDIM:
27 steps for sr256, 15 for sr1024 (the pipeline's "paper" settings). ``last_step_unet`` adds Karlo's
second network, used for the final step (t = 0) only (unclip/convert/karlo.py).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unclip.diffusion import GaussianDiffusion
from unclip.nn import UNet

from .decoder import IMAGE_CHANNELS, image_x0_transform
from .sampling import StageSettings, StepEnd, run_sampler, stage_denoiser, weight_casts_kept

RESIZE_MODES = ("nearest", "bilinear", "bicubic", "bicubic_antialias")


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``F.interpolate`` by name; "bicubic_antialias" is torch's antialiased bicubic (Keys a = −0.5, as PIL;
    plain "bicubic" uses a = −0.75), which Karlo's super-resolution was trained with."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}: expected one of {RESIZE_MODES}")
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    aa = mode == "bicubic_antialias"
    return F.interpolate(x, size=size, mode="bicubic" if aa else mode, align_corners=False, antialias=aa)


class LowResConditioning(nn.Module):
    """Resize the low-res image to x_t's size and concatenate."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in RESIZE_MODES:
            raise ValueError(f"Upsampler: resize_mode={mode!r}, expected one of {RESIZE_MODES}")
        self.mode = mode

    def forward(self, x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x_t.shape
        if low_res.ndim != 4 or low_res.shape[:2] != (b, IMAGE_CHANNELS):
            raise ValueError(f"Upsampler: low_res must be [B={b}, 3, h, w], got {tuple(low_res.shape)}")
        up = resize(low_res.to(x_t.dtype), (h, w), self.mode)  # [B, 3, H, W]
        return torch.cat([x_t, up], dim=1)  # [B, 6, H, W]


class Upsampler(nn.Module):
    """Convolutional ADM UNet super-resolution model; ``forward`` returns raw [B, 3 or 6, H, W]."""

    def __init__(self, *, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 image_size: int, low_res_size: int, learned_sigma: bool, resize_mode: str, dropout: float,
                 norm_groups: int, resblock_updown: bool, use_checkpoint: bool, last_step_unet: bool):
        """Every argument is required: the values of the named sizes live in ``presets.UpsamplerPreset``."""
        super().__init__()
        if image_size % low_res_size:
            raise ValueError(f"Upsampler: image_size={image_size} is not a multiple of low_res_size={low_res_size}")
        self.image_size, self.low_res_size, self.learned_sigma = image_size, low_res_size, learned_sigma
        self.scale = image_size // low_res_size
        self.unet = UNet(2 * IMAGE_CHANNELS, IMAGE_CHANNELS * (2 if learned_sigma else 1), model_channels,
                         channel_mult, num_res_blocks, attention=False, dropout=dropout, norm_groups=norm_groups,
                         resblock_updown=resblock_updown, use_checkpoint=use_checkpoint)
        # Karlo's split: a second network of the same shape for the final step (t = 0) only
        self.unet_last = copy.deepcopy(self.unet) if last_step_unet else None
        self.low_res = LowResConditioning(resize_mode)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        """x_t [B, 3, H, W], t [B], low_res [B, 3, H/scale, W/scale] (any size is resized)."""
        x = self.low_res(x_t, low_res)  # [B, 6, H, W]
        if self.unet_last is None:
            return self.unet(x, t)  # [B, 3 or 6, H, W]
        last = t == 0  # [B]
        if bool(last.all()):
            return self.unet_last(x, t)
        out = self.unet(x, t)  # [B, 3 or 6, H, W]
        if bool(last.any()):
            out = torch.where(last[:, None, None, None], self.unet_last(x, t), out)
        return out


def random_aligned_crop(high: torch.Tensor, low: torch.Tensor, crop_size: int,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned random crops of a high-res batch [B, C, H, W] and its low-res version [B, C, H/s, W/s].

    ``crop_size`` is the high-res side (paper: a quarter of the target: 64 of 256, 256 of 1024) and
    must be a multiple of s; offsets are multiples of s, so the low-res crop (crop_size/s) covers
    exactly the same pixels. One offset per sample. Returns (high crop, low crop)."""
    b, _, h, w = high.shape
    s = h // low.shape[2]
    if low.shape[0] != b or s < 1 or low.shape[2] * s != h or low.shape[3] * s != w:
        raise ValueError(f"random_aligned_crop: low {tuple(low.shape)} is not high {tuple(high.shape)} / "
                         "an integer scale")
    if crop_size % s or not 0 < crop_size <= min(h, w):
        raise ValueError(f"random_aligned_crop: crop_size={crop_size} must be a multiple of the scale {s} "
                         f"and <= {min(h, w)}")
    c = crop_size // s
    ys = torch.randint(0, low.shape[2] - c + 1, (b,), generator=generator).tolist()
    xs = torch.randint(0, low.shape[3] - c + 1, (b,), generator=generator).tolist()
    hi = torch.stack([high[i, :, y * s:(y + c) * s, x * s:(x + c) * s] for i, (y, x) in enumerate(zip(ys, xs))])
    lo = torch.stack([low[i, :, y:y + c, x:x + c] for i, (y, x) in enumerate(zip(ys, xs))])
    return hi, lo  # [B, C, crop, crop], [B, C, crop/s, crop/s]


@torch.no_grad()
def sample_upsampler(upsampler: Upsampler, diffusion: GaussianDiffusion, low_res: torch.Tensor, *,
                     settings: StageSettings, mean_type: str, known: torch.Tensor | None = None,
                     keep: torch.Tensor | None = None, gamma: np.ndarray | None = None, generator=None,
                     x_T: torch.Tensor | None = None,
                     step_end: StepEnd | None = None, dtype: torch.dtype = torch.float32, progress: bool = False
                     ) -> torch.Tensor:
    """Upsample low_res [B, 3, h, w] to [B, 3, h·scale, w·scale] at full size, unguided (§2.1), sampled with
    ``settings``. ``known``/``keep`` (1 = known pixel, at the output size) are written back into pred_x0 at
    every step, so an upsampled edit agrees with its surroundings. ``x_T``: the start noise (else drawn
    with ``generator``: None, one, or one per image)."""
    b, _, h, w = low_res.shape
    den = stage_denoiser(upsampler, diffusion, mean_type=mean_type, learned_variance=upsampler.learned_sigma,
                         dtype=dtype)
    x = (b, IMAGE_CHANNELS, h * upsampler.scale, w * upsampler.scale) if x_T is None else x_T
    with weight_casts_kept(low_res.device, dtype):
        return run_sampler(settings, den, x, diffusion, cond={"low_res": low_res}, generator=generator,
                           gamma=gamma, learned_variance=upsampler.learned_sigma,
                           x0_transform=image_x0_transform(known, keep), step_end=step_end, device=low_res.device,
                           progress=progress)
