"""Pre-LN Transformer (GPT-2 style) for the prior and the decoder's text encoder."""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import SelfAttention
from .checkpointing import checkpoint


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)); x + MLP(LN(x)) with a GELU MLP of width ``mlp_ratio × width``."""

    def __init__(
        self,
        width: int,
        num_heads: int,
        *,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        causal: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.causal = causal
        self.use_checkpoint = use_checkpoint
        self.ln_attn = nn.LayerNorm(width)
        self.attn = SelfAttention(width, num_heads)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return checkpoint(self._forward, x, key_padding_mask, enabled=self.use_checkpoint)

    def _forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_attn(x), self.causal, key_padding_mask))  # [B, T, width]
        return x + self.dropout(self.mlp(self.ln_mlp(x)))  # [B, T, width]


class Transformer(nn.Module):
    """A stack of ``layers`` pre-LN blocks with a final LayerNorm (positions are the caller's job).

    Residual output projections are initialised N(0, 0.02/√(2·layers)) (GPT-2) so the residual
    stream's variance does not grow with depth; other Linear weights N(0, 0.02), biases 0.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        num_heads: int,
        *,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        causal: bool = False,
        final_norm: bool = True,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.width, self.causal = width, causal
        self.blocks = nn.ModuleList(
            TransformerBlock(
                width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout, causal=causal, use_checkpoint=use_checkpoint
            )
            for _ in range(layers)
        )
        self.ln_final = nn.LayerNorm(width) if final_norm else nn.Identity()
        self._init_weights(layers)

    def _init_weights(self, layers: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            for proj in (block.attn.proj_out, block.mlp[-1]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * max(layers, 1)))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)  # [B, T, width]
        return self.ln_final(x)  # [B, T, width]
