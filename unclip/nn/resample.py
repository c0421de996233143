"""Plain 2× resampling layers of the ADM UNet (between levels when resblock_updown is off)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Upsample(nn.Module):
    """Nearest-neighbour 2× upsampling, optionally followed by a 3×3 conv."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError(f"Upsample: out_channels={out_channels} != channels={channels} needs use_conv=True")
        self.channels, self.out_channels = channels, out_channels
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, C, 2H, 2W]
        return self.conv(x)  # [B, C_out, 2H, 2W]


class Downsample(nn.Module):
    """2× downsampling: a stride-2 3×3 conv, or 2×2 average pooling without conv."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError(f"Downsample: out_channels={out_channels} != channels={channels} needs use_conv=True")
        self.channels, self.out_channels = channels, out_channels
        self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # [B, C_out, H/2, W/2]
