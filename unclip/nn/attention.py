"""Multi-head attention through ``F.scaled_dot_product_attention`` (flash / mem-efficient on GPU; the
kernel choice on the CPU is in ``kernels.py``).

Masks are boolean with True = may attend. Padding masks for tokens are [B, S] with True = real token.
"""
from __future__ import annotations

import torch
from torch import nn

from .checkpointing import checkpoint
from .kernels import attention
from .layers import group_norm, zero_module


def resolve_heads(channels: int, num_heads: int | None = None, head_channels: int | None = None) -> int:
    """Number of heads: ``channels // head_channels`` when given (unCLIP: 64 per head), else ``num_heads``."""
    if head_channels is not None:
        if head_channels < 1 or channels % head_channels:
            raise ValueError(f"attention: channels={channels} not divisible by head_channels={head_channels}")
        return channels // head_channels
    if num_heads is None or num_heads < 1 or channels % num_heads:
        raise ValueError(f"attention: channels={channels} not divisible by num_heads={num_heads}")
    return num_heads


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, heads*d] -> [B, heads, L, d]."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, d] -> [B, L, heads*d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def check_token_mask(mask: torch.Tensor, batch: int, length: int, name: str) -> torch.Tensor:
    """Validate a [B, S] padding mask (True = real token) and return it as bool."""
    if mask.shape != (batch, length):
        raise ValueError(f"{name}: expected shape {(batch, length)} (True = real token), got {tuple(mask.shape)}")
    return mask.bool()


class ImageAttentionBlock(nn.Module):
    """Residual self-attention over the H·W positions of a feature map (ADM / GLIDE).

    With ``context_dim`` set, conditioning tokens [B, S, context_dim] are projected to keys and
    values and appended to the image's keys and values (GLIDE's ``encoder_kv``); ``context_mask``
    [B, S] (True = real token) hides padding tokens, image positions are always attendable.
    The output projection is zero-initialised so a fresh block is the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int | None = 1,
        head_channels: int | None = None,
        context_dim: int | None = None,
        norm_groups: int = 32,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.heads = resolve_heads(channels, num_heads, head_channels)
        self.context_dim = context_dim
        self.use_checkpoint = use_checkpoint
        self.norm = group_norm(channels, norm_groups)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_context_kv = nn.Linear(context_dim, 2 * channels) if context_dim is not None else None
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return checkpoint(self._forward, x, context, context_mask, enabled=self.use_checkpoint)

    def _forward(
        self, x: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)  # [B, HW, C] each
        mask = None
        if context is not None:
            if self.to_context_kv is None:
                raise ValueError("ImageAttentionBlock: got context tokens but was built with context_dim=None")
            if context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
                raise ValueError(
                    f"ImageAttentionBlock: context must be [B={b}, S, {self.context_dim}], got {tuple(context.shape)}"
                )
            ck, cv = self.to_context_kv(context).chunk(2, dim=-1)  # [B, S, C] each
            k = torch.cat([k, ck.to(k.dtype)], dim=1)  # [B, HW+S, C]
            v = torch.cat([v, cv.to(v.dtype)], dim=1)  # [B, HW+S, C]
            if context_mask is not None:
                cm = check_token_mask(context_mask, b, context.shape[1], "context_mask")  # [B, S]
                image_ok = cm.new_ones(b, hgt * wid)  # [B, HW]
                mask = torch.cat([image_ok, cm], dim=1)[:, None, None, :]  # [B, 1, 1, HW+S]
        elif context_mask is not None:
            raise ValueError("ImageAttentionBlock: context_mask given without context")
        q, k, v = (split_heads(z, self.heads) for z in (q, k, v))  # [B, heads, L, C/heads]
        out = attention(q, k, v, mask)  # [B, heads, HW, C/heads]
        out = self.proj_out(merge_heads(out))  # [B, HW, C]
        return x + out.transpose(1, 2).reshape(b, c, hgt, wid)  # [B, C, H, W]


class SelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence, optionally causal and/or with padding."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.heads = resolve_heads(width, num_heads)
        self.to_qkv = nn.Linear(width, 3 * width)
        self.proj_out = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, causal: bool = False, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (split_heads(z, self.heads) for z in self.to_qkv(x).chunk(3, dim=-1))  # [B, heads, T, d]
        if key_padding_mask is None:
            out = attention(q, k, v, causal=causal)  # [B, heads, T, d]
        else:
            mask = token_attention_mask(key_padding_mask, n, causal)  # [B, 1, T, T]
            out = attention(q, k, v, mask)  # [B, heads, T, d]
        return self.proj_out(merge_heads(out))  # [B, T, width]


def token_attention_mask(key_padding_mask: torch.Tensor, length: int, causal: bool) -> torch.Tensor:
    """Bool [B, 1, T, T] mask from a [B, T] padding mask (True = real) and optional causality.

    Every query may also attend to itself, so a padding query never sees an empty row (which would
    give NaN); outputs at real positions are unaffected, as their own key is always real.
    """
    pad = check_token_mask(key_padding_mask, key_padding_mask.shape[0], length, "key_padding_mask")  # [B, T]
    mask = pad[:, None, None, :].expand(-1, 1, length, -1)  # [B, 1, T, T]
    if causal:
        tril = torch.ones(length, length, dtype=torch.bool, device=pad.device).tril()  # [T, T]
        mask = mask & tril  # [B, 1, T, T]
    eye = torch.eye(length, dtype=torch.bool, device=pad.device)  # [T, T]
    return mask | eye  # [B, 1, T, T]
