"""CLIP score: 100 · cos(z_i, z_t), clipped at 0 (Hessel et al. 2021 use w = 2.5; we report w = 1
on the 0–100 scale, as the text-to-image literature usually does)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def clip_score(clip, images, captions: Sequence[str]) -> torch.Tensor:
    """Per-sample CLIP score [N] of images (PIL list or float tensor [N, 3, H, W] in [0, 1]) against
    their captions with any FrozenCLIP-like object (``encode_image``, ``encode_text``)."""
    captions = list(captions)
    n = len(images)
    if n != len(captions):
        raise ValueError(f"clip_score: {n} images but {len(captions)} captions")
    if n == 0:
        return torch.zeros(0)
    z_i = F.normalize(clip.encode_image(images).float(), dim=-1)
    z_t = clip.encode_text(captions)
    z_t = F.normalize((z_t[0] if isinstance(z_t, tuple) else z_t).float(), dim=-1)
    return (100.0 * (z_i * z_t).sum(-1)).clamp_min(0).cpu()
