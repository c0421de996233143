"""Small layers shared by every network: float32 GroupNorm with validated groups, zero-init."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import group_norm_in_float32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (ADM: stable statistics under bf16/fp16).

    bf16 on the CPU goes to the native kernel, which already computes in float32 and rounds the output
    once: the same values without the two full-size conversion copies (bench/decoder_speed.py: 6.5 ms
    -> 0.6 ms on an [8, 64, 64, 64] map; tests/nn check the values agree). Its backward on channels-last
    maps, and its forward on small ones, are slower than float32's: there the float32 path runs
    (``kernels.group_norm_in_float32``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16 and x.device.type == "cpu" and not group_norm_in_float32(x):
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x.to(torch.promote_types(x.dtype, torch.float32))).type(x.dtype)  # float64 stays


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
