"""Diffusion timestep embeddings (ADM, Dhariwal & Nichol 2021; Transformer positional code)."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps ``t`` [B] -> [B, dim].

    Frequencies run geometrically from 1 down to 1/max_period, as in ADM; odd ``dim`` is zero-padded.
    Computed in float32 whatever the autocast state.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must be 1-D [B], got shape {tuple(t.shape)}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) / half  # [half]
    freqs = torch.exp(-math.log(max_period) * exponent)  # [half]
    args = t.float()[:, None] * freqs[None, :]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2*half]
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)  # [B, dim]
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal code of width ``freq_dim`` then Linear → SiLU → Linear to ``embed_dim``."""

    def __init__(self, freq_dim: int, embed_dim: int, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim, self.max_period)  # [B, freq_dim] float32
        emb = emb.to(torch.promote_types(emb.dtype, self.mlp[0].weight.dtype))  # float64 nets get float64
        return self.mlp(emb)  # [B, embed_dim]
