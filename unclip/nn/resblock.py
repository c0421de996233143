"""ADM residual block (Dhariwal & Nichol 2021, §3): timestep-conditioned, optional BigGAN up/down."""
from __future__ import annotations

import torch
from torch import nn

from .checkpointing import checkpoint
from .layers import group_norm, zero_module
from .resample import Downsample, Upsample


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3 → +emb → GroupNorm → SiLU → dropout → zero conv3×3, plus skip.

    ``use_scale_shift_norm`` (AdaGN) injects the embedding as ``norm(h) * (1 + scale) + shift``;
    otherwise it is added to ``h`` before the second norm. ``up``/``down`` resample inside the
    block as in BigGAN (nearest / 2×2 average pool, applied to both branches). The skip is a 1×1
    conv when the width changes. The output conv is zero-initialised so a fresh block returns skip(x).
    """

    def __init__(
        self,
        in_channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        *,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
        norm_groups: int = 32,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if up and down:
            raise ValueError("ResBlock: up and down are mutually exclusive")
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint

        self.in_norm = group_norm(in_channels, norm_groups)
        self.in_act = nn.SiLU()
        self.in_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if up:
            self.h_resample = Upsample(in_channels, use_conv=False)
            self.x_resample = Upsample(in_channels, use_conv=False)
        elif down:
            self.h_resample = Downsample(in_channels, use_conv=False)
            self.x_resample = Downsample(in_channels, use_conv=False)
        else:
            self.h_resample, self.x_resample = nn.Identity(), nn.Identity()

        self.emb_proj = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_norm = group_norm(out_channels, norm_groups)
        self.out_rest = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        )
        self.skip = nn.Identity() if out_channels == in_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, x, emb, enabled=self.use_checkpoint)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_act(self.in_norm(x))  # [B, C_in, H, W]
        h = self.h_resample(h)  # [B, C_in, H', W']  (H' = 2H up, H/2 down, H otherwise)
        x = self.x_resample(x)  # [B, C_in, H', W']
        h = self.in_conv(h)  # [B, C_out, H', W']
        e = self.emb_proj(emb)[:, :, None, None].to(h.dtype)  # [B, 2*C_out or C_out, 1, 1]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)  # [B, C_out, 1, 1] each
            h = self.out_norm(h) * (1 + scale) + shift  # [B, C_out, H', W']  (AdaGN)
        else:
            h = self.out_norm(h + e)  # [B, C_out, H', W']
        h = self.out_rest(h)  # [B, C_out, H', W']
        return self.skip(x) + h  # [B, C_out, H', W']
