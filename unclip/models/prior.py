"""The unCLIP diffusion prior (Ramesh et al. 2022, §2.2): a decoder-only causal Transformer that
denoises a CLIP image embedding z_i conditioned on the caption.

The sequence is, in order: the caption's CLIP token features (projected), the CLIP text embedding
z_t, the diffusion timestep, the noised z_i, and a learned query whose output is the raw
prediction (the prior is trained to predict the unnoised z_i with an MSE loss: wrap it in
``Denoiser(prior, acp, mean_type="x0")``). For classifier-free guidance the text conditioning
(tokens and z_t, and the tokens' padding pattern) is replaced by learned null values where
``drop_text`` is True (10% in training), or with ``text_null="empty_caption"`` by the CLIP encoding of ""
(Karlo's unconditional branch); the noised z_i is never dropped.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unclip.diffusion import Denoiser, GaussianDiffusion, estimate_analytic_gamma
from unclip.nn import TimestepEmbedding, Transformer

from .conditioning import EmbeddingNormalizer, EmptyCaption, check_drop, replace_where
from .sampling import StageSettings, StepEnd, run_sampler, stage_denoiser, weight_casts_kept

EXTRA_TOKENS = 4  # z_t, timestep, noised z_i, query


class DiffusionPrior(nn.Module):
    """Causal Transformer prior over [text tokens, z_t, t, z_i(noised), query] (§2.2).

    Args:
        embed_dim: CLIP embedding width D (ViT-H/14: 1024).
        token_width / context_length: CLIP per-token feature width W and max caption length L.
        width / layers / num_heads: the Transformer (paper: 2048 wide, 24 blocks).
        embed_scale: fixed z_i scale of ``self.normalizer`` (paper: 17.2); ``normalizer.set_stats``
            switches to dataset mean/std.
    """

    def __init__(self, embed_dim: int, token_width: int, context_length: int, width: int, layers: int,
                 num_heads: int, *, mlp_ratio: int, dropout: float, embed_scale: float, text_null: str,
                 use_checkpoint: bool):
        """Every argument is required: the values of the named sizes live in ``presets.PriorPreset``."""
        super().__init__()
        if text_null not in ("learned", "empty_caption"):
            raise ValueError(f"DiffusionPrior: text_null={text_null!r}, expected 'learned' or 'empty_caption'")
        self.text_null = text_null
        self.embed_dim, self.token_width, self.context_length = embed_dim, token_width, context_length
        self.width = width
        self.text_proj = nn.Linear(token_width, width)
        self.text_emb_proj = nn.Linear(embed_dim, width)
        self.time_embed = TimestepEmbedding(width, width)
        self.x_proj = nn.Linear(embed_dim, width)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        if text_null == "learned":  # learned CFG nulls
            self.null_text_tokens = nn.Parameter(torch.randn(context_length, width) * 0.02)
            self.null_text_emb = nn.Parameter(torch.randn(width) * 0.02)
        else:  # the CLIP encoding of "" (Karlo)
            self.null_caption = EmptyCaption(context_length, token_width, embed_dim)
        self.pos_emb = nn.Parameter(torch.randn(context_length + EXTRA_TOKENS, width) * 0.01)
        self.transformer = Transformer(width, layers, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                       causal=True, use_checkpoint=use_checkpoint)
        self.out = nn.Linear(width, embed_dim)
        self.normalizer = EmbeddingNormalizer(embed_dim, embed_scale)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor, text_tokens: torch.Tensor,
                text_mask: torch.Tensor | None = None, drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """x_t [B, D] (normalised, noised z_i), t [B], text_emb [B, D], text_tokens [B, L, W],
        text_mask [B, L] bool (True = real token), drop_text [B] bool -> raw prediction [B, D]."""
        b, length = self._check(x_t, text_emb, text_tokens)
        drop = check_drop(drop_text, b, "drop_text", x_t.device)  # [B]
        if text_mask is None:
            text_mask = torch.ones(b, length, dtype=torch.bool, device=x_t.device)  # [B, L]
        elif text_mask.shape != (b, length):
            raise ValueError(f"DiffusionPrior: text_mask must be [B={b}, L={length}], got {tuple(text_mask.shape)}")
        if self.text_null == "empty_caption":
            text_tokens, mask, text_emb = self.null_caption.replace(b, drop, text_tokens, text_mask, text_emb)
            tokens, zt = self.text_proj(text_tokens), self.text_emb_proj(text_emb)  # [B, L, width], [B, width]
        else:
            tokens = self.text_proj(text_tokens)  # [B, L, width]
            tokens = replace_where(drop, tokens, self.null_text_tokens[:length])  # [B, L, width]
            mask = replace_where(drop, text_mask.bool(), text_mask.new_ones(length, dtype=torch.bool))  # [B, L]
            zt = replace_where(drop, self.text_emb_proj(text_emb), self.null_text_emb)  # [B, width]
        extra = torch.stack([
            zt,  # [B, width]
            self.time_embed(t).to(zt.dtype),  # [B, width]
            self.x_proj(x_t).to(zt.dtype),  # [B, width]
            self.query.to(zt.dtype).expand(b, -1),  # [B, width]
        ], dim=1)  # [B, 4, width]
        pos = torch.cat([self.pos_emb[:length], self.pos_emb[self.context_length:]])  # [L+4, width]
        h = torch.cat([tokens, extra], dim=1) + pos.to(tokens.dtype)  # [B, L+4, width]
        key_mask = torch.cat([mask, mask.new_ones(b, EXTRA_TOKENS)], dim=1)  # [B, L+4]
        h = self.transformer(h, key_mask)  # [B, L+4, width]
        return self.out(h[:, -1])  # [B, D]  (output at the query)

    def _check(self, x_t: torch.Tensor, text_emb: torch.Tensor, text_tokens: torch.Tensor) -> tuple[int, int]:
        b, d = x_t.shape[0], self.embed_dim
        if x_t.shape != (b, d) or text_emb.shape != (b, d):
            raise ValueError(f"DiffusionPrior: x_t and text_emb must be [B, {d}], got {tuple(x_t.shape)}, "
                             f"{tuple(text_emb.shape)}")
        if text_tokens.ndim != 3 or text_tokens.shape[0] != b or text_tokens.shape[2] != self.token_width \
                or text_tokens.shape[1] > self.context_length:
            raise ValueError(f"DiffusionPrior: text_tokens must be [B={b}, L<={self.context_length}, "
                             f"{self.token_width}], got {tuple(text_tokens.shape)}")
        return b, text_tokens.shape[1]


def _text_cond(text_emb, text_tokens, text_mask, repeat: int = 1) -> dict[str, torch.Tensor]:
    cond = {"text_emb": text_emb, "text_tokens": text_tokens}
    if text_mask is not None:
        cond["text_mask"] = text_mask
    return {k: v.repeat_interleave(repeat, dim=0) for k, v in cond.items()}


@torch.no_grad()
def prior_analytic_gamma(prior: DiffusionPrior, diffusion: GaussianDiffusion, image_emb: torch.Tensor,
                         text_emb: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None,
                         *, steps: int | str, mean_type: str, generator: torch.Generator | None = None) -> np.ndarray:
    """Γ_n for Analytic-DPM on the ``steps``-respaced chain, estimated on held-out (z_i, caption) pairs
    (unnormalised z_i [N, D]); pass the result to ``sample_prior(..., gamma=...)``."""
    denoiser = Denoiser(prior, diffusion.alphas_cumprod, mean_type=mean_type)
    x0 = prior.normalizer.normalize(image_emb)  # [N, D]
    cond = _text_cond(text_emb, text_tokens, text_mask)
    return estimate_analytic_gamma(denoiser, x0, diffusion.respace(steps), cond=cond, generator=generator)


@torch.no_grad()
def sample_prior(prior: DiffusionPrior, diffusion: GaussianDiffusion, text_emb: torch.Tensor,
                 text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None, *, settings: StageSettings,
                 mean_type: str, gamma: np.ndarray | None = None, generator=None, x_T: torch.Tensor | None = None,
                 step_end: StepEnd | None = None, dtype: torch.dtype = torch.float32, progress: bool = False
                 ) -> torch.Tensor:
    """Sample z_i [B, D] (un-normalised, CLIP space) for B captions (§2.2).

    Runs ``settings.sampler`` over ``diffusion`` (the training chain) respaced to ``settings.steps``, with
    classifier-free guidance at ``settings.guidance_scale`` (1 = none; drops the caption), draws
    ``settings.n_candidates`` per caption and keeps the one with the highest dot product z_i·z_t.
    ``gamma``: Analytic-DPM Γ for that step count (``prior_analytic_gamma``), used by variance "auto" or
    "analytic". ``generator``: None, one generator, or B·n_candidates generators (caption i's candidates
    are rows i·n … i·n+n−1); ``x_T`` [B·n, D] the start noise (else drawn with ``generator``).
    """
    b, n, dev = text_emb.shape[0], settings.n_candidates, text_emb.device
    cond = _text_cond(text_emb, text_tokens, text_mask, repeat=n)
    cond["drop_text"] = torch.zeros(b * n, dtype=torch.bool, device=dev)
    denoiser = stage_denoiser(prior, diffusion, mean_type=mean_type, learned_variance=False, dtype=dtype,
                              guidance_scale=settings.guidance_scale,
                              null={"drop_text": torch.ones(1, dtype=torch.bool, device=dev)})
    x = (b * n, prior.embed_dim) if x_T is None else x_T
    with weight_casts_kept(dev, dtype):
        z = run_sampler(settings, denoiser, x, diffusion, cond=cond, generator=generator, gamma=gamma,
                        step_end=step_end, device=dev, progress=progress)
    z = prior.normalizer.denormalize(z.to(torch.float32)).view(b, n, -1)  # [B, n, D]
    best = (z * text_emb[:, None].to(z.dtype)).sum(-1).argmax(dim=1)  # [B]
    return z[torch.arange(b, device=dev), best]  # [B, D]
