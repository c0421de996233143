"""The decoder's caption encoder (GLIDE, Nichol et al. 2022, §2.3; kept in unCLIP's decoder, §2.1).

Two sources behind one module, a config switch:
  * ``"ids"`` (paper): its own Transformer over CLIP-tokenizer token ids [B, L] (vocab 49408);
  * ``"clip"`` (cheaper): frozen CLIP per-token features [B, L, W_clip], projected to ``width``
    and optionally refined by ``layers`` Transformer blocks (0 = projection only).
Outputs the token sequence [B, L, width] (attention context) and the feature at the last real
token [B, width] (GLIDE adds it, projected, to the timestep embedding). ``input_norm=False`` and
``positions=False`` drop the LayerNorm on the CLIP features and the learned positions: with
``layers=0`` the module is then Karlo's text projection (Linear → LayerNorm, unclip/convert/karlo.py).
"""
from __future__ import annotations

import enum

import torch
from torch import nn

from unclip.nn import Transformer

from .conditioning import last_true_index


class TextSource(str, enum.Enum):
    """Where the decoder's caption tokens come from (string-valued so configs can name them)."""

    IDS = "ids"  # token ids from open_clip's tokenizer (at context_length) -> own Transformer (paper)
    CLIP = "clip"  # frozen CLIP per-token features from FrozenCLIP.encode_text -> projection (+ blocks)


TEXT_SOURCES = tuple(s.value for s in TextSource)
CLIP_VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer
PAD_ID = 0  # open_clip pads token ids with 0


class TextEncoder(nn.Module):
    """Token ids or CLIP token features -> (tokens [B, L, width], pooled [B, width], mask [B, L])."""

    def __init__(self, source: TextSource | str, width: int, layers: int, num_heads: int, context_length: int, *,
                 vocab_size: int = CLIP_VOCAB_SIZE, clip_token_width: int | None = None,
                 input_norm: bool = True, positions: bool = True, use_checkpoint: bool = False):
        super().__init__()
        if source not in TEXT_SOURCES:
            raise ValueError(f"TextEncoder: source={source!r}, expected one of {TEXT_SOURCES}")
        source = TextSource(source)
        if source is TextSource.CLIP and clip_token_width is None:
            raise ValueError('TextEncoder: source="clip" needs clip_token_width (the CLIP token feature width)')
        self.source, self.width, self.context_length = source, width, context_length
        self.clip_token_width = clip_token_width
        if source is TextSource.IDS:
            self.embed = nn.Embedding(vocab_size, width)
            # N(0, 1) (PyTorch's default), not CLIP/GPT-2's 0.02: trained from scratch under the diffusion loss,
            # token identity must dominate the residual stream from the first step. Measured on the fixed-set
            # test (tests/training/test_conditioning_learns.py), caption-only training, 160 steps: caption gain
            # at t=500 1.7x with std 0.02, 5.1x with std 1.
            nn.init.normal_(self.embed.weight, std=1.0)
        else:
            norm = nn.LayerNorm(clip_token_width) if input_norm else nn.Identity()
            self.embed = nn.Sequential(norm, nn.Linear(clip_token_width, width))
        self.pos_emb = nn.Parameter(torch.randn(context_length, width) * 0.01) if positions else None
        self.transformer = Transformer(width, layers, num_heads, use_checkpoint=use_checkpoint) if layers else None
        self.ln_final = nn.LayerNorm(width) if not layers else nn.Identity()  # Transformer has its own

    def forward(self, text: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """text [B, L] long ids or [B, L, W_clip] features; mask [B, L] bool (True = real token). The returned
        mask is None when CLIP features came without one (every token real: attention needs no mask)."""
        b, length = self._check(text)
        all_real = mask is None and self.source is TextSource.CLIP  # features without a mask: every token real
        if mask is None:
            mask = text != PAD_ID if self.source is TextSource.IDS else text.new_ones(b, length, dtype=torch.bool)
        elif mask.shape != (b, length):
            raise ValueError(f"TextEncoder: text_mask must be [B={b}, L={length}], got {tuple(mask.shape)}")
        mask = mask.bool()
        h = self.embed(text)  # [B, L, width]
        if self.pos_emb is not None:
            h = h + self.pos_emb[:length]  # [B, L, width]
        h = self.transformer(h, mask) if self.transformer is not None else self.ln_final(h)  # [B, L, width]
        pooled = h[torch.arange(b, device=h.device), last_true_index(mask)]  # [B, width]
        return h, pooled, (None if all_real else mask)  # None: no attention mask needed downstream

    def _check(self, text: torch.Tensor) -> tuple[int, int]:
        if self.source is TextSource.IDS:
            ok = text.ndim == 2 and not text.is_floating_point()
            want = f"[B, L<={self.context_length}] integer token ids"
        else:
            ok = text.ndim == 3 and text.shape[2] == self.clip_token_width
            want = f"[B, L<={self.context_length}, {self.clip_token_width}] CLIP token features"
        if not ok or text.shape[1] > self.context_length:
            raise ValueError(f"TextEncoder(source={self.source.value!r}): text_tokens must be {want}, "
                             f"got {tuple(text.shape)} {text.dtype}")
        return text.shape[0], text.shape[1]
