"""Small layers shared by every network: float32 GroupNorm with validated groups, zero-init."""
from __future__ import annotations

import torch
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (ADM: stable statistics under bf16/fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def group_norm(channels: int, groups: int = 32) -> GroupNorm32:
    """GroupNorm over ``channels`` in ``groups`` groups; ADM uses 32, tiny presets fewer."""
    if groups < 1 or channels % groups != 0:
        raise ValueError(
            f"GroupNorm: channels={channels} is not divisible by norm_groups={groups}; "
            f"pick norm_groups dividing every block width (model_channels * channel_mult)"
        )
    return GroupNorm32(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (ADM's output convs: each residual branch starts as 0)."""
    for p in module.parameters():
        nn.init.zeros_(p)  # in-place fill: works on the meta device too
    return module
