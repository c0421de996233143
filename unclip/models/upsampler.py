"""The unCLIP upsamplers (Ramesh et al. 2022, §2.1): 64→256 and 256→1024 ADM UNets with
convolutions only (no attention), not conditioned on the caption.

The low-resolution image is resized to the target size and concatenated to x_t as extra input
channels (``LowResConditioning``, one small module rather than a parallel UNet subclass). Optional
noise-level conditioning (cascaded-diffusion "conditioning augmentation", Ho et al. 2022): the caller
noises the low-res image with q_sample at level s and passes s as ``low_res_t``; its embedding is
added to the timestep embedding. Trained on crops a quarter of the target size and sampled at full
size (the net is fully convolutional) with DDIM: 27 steps for sr256, 15 for sr1024. ``last_step_unet``
adds Karlo's second network, used for the final step (t = 0) only (unclip/convert/karlo.py).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unclip.diffusion import Denoiser, GaussianDiffusion, clip_x0
from unclip.nn import TimestepEmbedding, UNet

from .sampling import run_sampler

IMAGE_CHANNELS = 3


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
    """Resize the low-res image to x_t's size and concatenate; optionally embed its noise level."""

    def __init__(self, emb_dim: int, noise_cond: bool = False, mode: str = "bilinear"):
        super().__init__()
        if mode not in RESIZE_MODES:
            raise ValueError(f"Upsampler: resize_mode={mode!r}, expected one of {RESIZE_MODES}")
        self.mode = mode
        self.noise_embed = TimestepEmbedding(emb_dim // 4, emb_dim) if noise_cond else None

    def forward(self, x_t: torch.Tensor, low_res: torch.Tensor, low_res_t: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, _, h, w = x_t.shape
        if low_res.ndim != 4 or low_res.shape[:2] != (b, IMAGE_CHANNELS):
            raise ValueError(f"Upsampler: low_res must be [B={b}, 3, h, w], got {tuple(low_res.shape)}")
        up = resize(low_res.to(x_t.dtype), (h, w), self.mode)  # [B, 3, H, W]
        x = torch.cat([x_t, up], dim=1)  # [B, 6, H, W]
        if self.noise_embed is None:
            if low_res_t is not None:
                raise ValueError("Upsampler: low_res_t given to an upsampler built with noise_cond=False")
            return x, None
        if low_res_t is None or low_res_t.shape != (b,):
            raise ValueError(f"Upsampler(noise_cond=True): low_res_t must be [B={b}] noise levels, got "
                             f"{None if low_res_t is None else tuple(low_res_t.shape)}")
        return x, self.noise_embed(low_res_t)  # [B, 6, H, W], [B, emb_dim]


class Upsampler(nn.Module):
    """Convolutional ADM UNet super-resolution model; ``forward`` returns raw [B, 3 or 6, H, W]."""

    def __init__(self, *, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 image_size: int, low_res_size: int, learned_sigma: bool = False, noise_cond: bool = False,
                 resize_mode: str = "bilinear", dropout: float = 0.0, norm_groups: int = 32,
                 resblock_updown: bool = True, use_checkpoint: bool = False, last_step_unet: bool = False):
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
        self.low_res = LowResConditioning(self.unet.emb_dim, noise_cond, resize_mode)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor,
                low_res_t: torch.Tensor | None = None) -> torch.Tensor:
        """x_t [B, 3, H, W], t [B], low_res [B, 3, H/scale, W/scale] (any size is resized), low_res_t [B]."""
        x, emb_cond = self.low_res(x_t, low_res, low_res_t)  # [B, 6, H, W], [B, emb] or None
        if self.unet_last is None:
            return self.unet(x, t, emb_cond)  # [B, 3 or 6, H, W]
        last = t == 0  # [B]
        if bool(last.all()):
            return self.unet_last(x, t, emb_cond)
        out = self.unet(x, t, emb_cond)  # [B, 3 or 6, H, W]
        if bool(last.any()):
            out = torch.where(last[:, None, None, None], self.unet_last(x, t, emb_cond), out)
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
        raise ValueError(f"random_aligned_crop: low {tuple(low.shape)} is not high {tuple(high.shape)} / an integer scale")
    if crop_size % s or not 0 < crop_size <= min(h, w):
        raise ValueError(f"random_aligned_crop: crop_size={crop_size} must be a multiple of the scale {s} and <= {min(h, w)}")
    c = crop_size // s
    ys = torch.randint(0, low.shape[2] - c + 1, (b,), generator=generator).tolist()
    xs = torch.randint(0, low.shape[3] - c + 1, (b,), generator=generator).tolist()
    hi = torch.stack([high[i, :, y * s:(y + c) * s, x * s:(x + c) * s] for i, (y, x) in enumerate(zip(ys, xs))])
    lo = torch.stack([low[i, :, y:y + c, x:x + c] for i, (y, x) in enumerate(zip(ys, xs))])
    return hi, lo  # [B, C, crop, crop], [B, C, crop/s, crop/s]


@torch.no_grad()
def sample_upsampler(upsampler: Upsampler, diffusion: GaussianDiffusion, low_res: torch.Tensor, *,
                     steps: int | str = 27, sampler: str = "ddim", low_res_t: torch.Tensor | None = None,
                     generator=None, progress: bool = False, mean_type: str = "eps") -> torch.Tensor:
    """Upsample low_res [B, 3, h, w] to [B, 3, h·scale, w·scale] at full size (paper: DDIM, 27 steps
    for sr256, 15 for sr1024; unguided). ``low_res_t``: the noise level of an augmented low_res;
    ``mean_type``: what the network predicts ("eps", "x0" or "v"; the StageSpec's)."""
    b, _, h, w = low_res.shape
    denoiser = Denoiser(upsampler, diffusion.alphas_cumprod, mean_type=mean_type, learned_variance=upsampler.learned_sigma)
    cond = {"low_res": low_res} | ({"low_res_t": low_res_t} if low_res_t is not None else {})
    shape = (b, IMAGE_CHANNELS, h * upsampler.scale, w * upsampler.scale)
    variance = "learned" if upsampler.learned_sigma else "small"
    return run_sampler(sampler, denoiser, shape, diffusion.respace(steps), cond=cond, generator=generator,
                       variance=variance, device=low_res.device, progress=progress, x0_transform=clip_x0)
