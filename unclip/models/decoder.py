"""The unCLIP 64×64 decoder (Ramesh et al. 2022, §2.1): GLIDE's text-conditional ADM UNet, modified
to condition on the CLIP image embedding z_i.

  * z_i is projected and added to the timestep embedding (``emb_cond`` of the UNet), together with
    GLIDE's projected final text token;
  * z_i is projected into 4 extra context tokens concatenated to the caption tokens, which every
    attention block attends to (GLIDE's encoder_kv);
  * learned σ: 2×3 output channels (hybrid loss, Nichol & Dhariwal 2021);
  * classifier-free guidance: ``drop_image`` (10% in training) swaps z_i for a learned null vector
    (initialised to zero, a value no unit-norm z_i takes); ``drop_text`` (50%) swaps the encoded
    caption tokens and pooled feature for learned null values, and its padding mask for all-real,
    so nothing of the caption (not even its length) survives;
  * Karlo's variant (unclip/convert/karlo.py): ``text_time="clip_embedding"`` adds the projected CLIP
    text embedding z_t (not the encoder's last token) to the time embedding, and ``text_null="empty_caption"``
    makes a dropped caption the CLIP encoding of "" (buffers, set by ``null_caption.set``);
  * ``inpaint=True`` is GLIDE's inpainting model: 4 extra input channels, the masked image (3) and
    the mask (1; 1 = known pixel, 0 = to fill).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unclip.diffusion import Denoiser, GaussianDiffusion, classifier_free_guidance, clip_x0
from unclip.nn import UNet, attention_downsample_factors

from .conditioning import EmptyCaption, check_drop, replace_where
from .sampling import run_sampler
from .text_encoder import TextEncoder

IMAGE_CHANNELS = 3
TEXT_TIME = ("pooled", "clip_embedding")  # added to the time embedding: the encoder's EOT feature, or CLIP's z_t
TEXT_NULL = ("learned", "empty_caption")  # a dropped caption: learned values, or the CLIP encoding of ""


class Decoder(nn.Module):
    """ADM UNet + caption encoder + z_i conditioning; ``forward`` returns raw [B, 3 or 6, H, W]."""

    def __init__(self, *, embed_dim: int, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 attention_resolutions: Sequence[int], image_size: int = 64, num_head_channels: int = 64,
                 text_source: str = "ids", text_width: int = 2048, text_layers: int = 24, text_heads: int = 32,
                 text_context_length: int = 256, clip_token_width: int | None = None, num_clip_tokens: int = 4,
                 learned_sigma: bool = True, inpaint: bool = False, dropout: float = 0.0, norm_groups: int = 32,
                 resblock_updown: bool = True, use_checkpoint: bool = False, patch_size: int = 1,
                 coord_channels: bool = False, text_input_norm: bool = True, text_positions: bool = True,
                 text_time: str = "pooled", text_null: str = "learned"):
        super().__init__()
        if text_time not in TEXT_TIME or text_null not in TEXT_NULL:
            raise ValueError(f"Decoder: text_time={text_time!r} (expected one of {TEXT_TIME}), "
                             f"text_null={text_null!r} (expected one of {TEXT_NULL})")
        if text_null == "empty_caption" and text_source != "clip":
            raise ValueError('Decoder: text_null="empty_caption" needs text_source="clip" (CLIP features of "")')
        self.embed_dim, self.image_size, self.inpaint = embed_dim, image_size, inpaint
        self.num_clip_tokens, self.text_width, self.learned_sigma = num_clip_tokens, text_width, learned_sigma
        self.text_time, self.text_null = text_time, text_null
        self.text = TextEncoder(text_source, text_width, text_layers, text_heads, text_context_length,
                                clip_token_width=clip_token_width, input_norm=text_input_norm,
                                positions=text_positions, use_checkpoint=use_checkpoint)
        in_channels = IMAGE_CHANNELS + (IMAGE_CHANNELS + 1 if inpaint else 0)
        self.unet = UNet(
            in_channels, IMAGE_CHANNELS * (2 if learned_sigma else 1), model_channels, channel_mult, num_res_blocks,
            attention_downsample_factors(image_size // patch_size, attention_resolutions), num_head_channels=num_head_channels,
            context_dim=text_width, dropout=dropout, resblock_updown=resblock_updown, norm_groups=norm_groups,
            use_checkpoint=use_checkpoint, patch_size=patch_size, coord_channels=coord_channels,
        )
        emb_dim = self.unet.emb_dim
        self.image_to_emb = nn.Linear(embed_dim, emb_dim)
        self.image_to_tokens = nn.Linear(embed_dim, num_clip_tokens * text_width)
        pooled_width = embed_dim if text_time == "clip_embedding" else text_width
        self.text_to_emb = nn.Linear(pooled_width, emb_dim)
        self.null_image_emb = nn.Parameter(torch.zeros(embed_dim))
        if text_null == "learned":
            self.null_text_tokens = nn.Parameter(torch.randn(text_context_length, text_width) * 0.02)
            self.null_text_pooled = nn.Parameter(torch.randn(pooled_width) * 0.02)
        else:
            self.null_caption = EmptyCaption(text_context_length, clip_token_width, embed_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image_emb: torch.Tensor,
                text_tokens: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                drop_image: torch.Tensor | None = None, drop_text: torch.Tensor | None = None,
                masked_image: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                text_emb: torch.Tensor | None = None) -> torch.Tensor:
        """x_t [B, 3, H, W], t [B], image_emb z_i [B, D]; text_tokens [B, L] ids or [B, L, W_clip] features
        (None = no caption: the text null, as a dropped caption of the full context length); text_mask [B, L] bool; drop_* [B] bool;
        inpainting: masked_image [B, 3, H, W], mask [B, 1, H, W] (1 = known) -> [B, 3·(1+learned σ), H, W];
        text_emb: the caption's CLIP z_t [B, D] (with ``text_time="clip_embedding"``, added to the time embedding)."""
        b = x_t.shape[0]
        if image_emb.shape != (b, self.embed_dim):
            raise ValueError(f"Decoder: image_emb must be [B={b}, {self.embed_dim}], got {tuple(image_emb.shape)}")
        drop = check_drop(drop_text, b, "drop_text", x_t.device)  # [B]
        if self.text_time == "clip_embedding" and text_tokens is not None and text_emb is None:
            raise ValueError('Decoder(text_time="clip_embedding"): text_tokens given without text_emb (z_t)')
        if self.text_null == "empty_caption":
            text_tokens, text_mask, text_emb = self.null_caption.replace(b, drop, text_tokens, text_mask, text_emb)
            drop = torch.zeros_like(drop)
        context, context_mask, pooled = self._text_context(b, x_t.device, text_tokens, text_mask, drop)
        if self.text_time == "clip_embedding":
            pooled = self._clip_embedding(b, text_tokens, text_emb, drop)
        z = replace_where(check_drop(drop_image, b, "drop_image", x_t.device), image_emb, self.null_image_emb)  # [B, D]
        emb_cond = self.image_to_emb(z) + self.text_to_emb(pooled)  # [B, 4·model_channels]
        clip_tokens = self.image_to_tokens(z).view(b, self.num_clip_tokens, self.text_width)  # [B, 4, text_width]
        context = torch.cat([context.to(clip_tokens.dtype), clip_tokens], dim=1)  # [B, L+4, text_width]
        if context_mask is not None:  # None: every token is real (no mask: the faster attention path)
            context_mask = torch.cat([context_mask, context_mask.new_ones(b, self.num_clip_tokens)], dim=1)  # [B, L+4]
        x = self._inpaint_input(x_t, masked_image, mask)  # [B, 3 (+4), H, W]
        return self.unet(x, t, emb_cond, context, context_mask)  # [B, 3 or 6, H, W]

    def _clip_embedding(self, b: int, text_tokens, text_emb, drop) -> torch.Tensor:
        """z_t [B, D] for the time embedding (its learned null where the caption is dropped or absent)."""
        if text_emb is None:  # no caption (checked in forward)
            return self.null_text_pooled.expand(b, -1)
        if text_emb.shape != (b, self.embed_dim):
            raise ValueError(f"Decoder: text_emb must be [B={b}, {self.embed_dim}], got {tuple(text_emb.shape)}")
        return replace_where(drop, text_emb, self.null_text_pooled) if self.text_null == "learned" else text_emb

    def _text_context(self, b: int, device: torch.device, text_tokens, text_mask, drop):
        """Encoded caption (or its null) -> tokens [B, L, text_width], mask [B, L], pooled [B, text_width]."""
        if text_tokens is None:
            if text_mask is not None:
                raise ValueError("Decoder: text_mask given without text_tokens")
            null = self.null_text_tokens.expand(b, -1, -1)  # [B, L, text_width]
            return null, None, self.null_text_pooled.expand(b, -1)  # mask None: all real
        if text_tokens.shape[0] != b:
            raise ValueError(f"Decoder: text_tokens has batch {text_tokens.shape[0]}, x_t has {b}")
        tokens, pooled, mask = self.text(text_tokens, text_mask)  # [B, L, w], [B, w], [B, L]
        if self.text_null == "empty_caption":  # dropped captions were replaced by "" before encoding
            return tokens, mask, pooled
        length = tokens.shape[1]
        tokens = replace_where(drop, tokens, self.null_text_tokens[:length])  # [B, L, text_width]
        if mask is not None:  # None: all real, dropped or not
            mask = replace_where(drop, mask, mask.new_ones(length))  # [B, L]
        pooled = replace_where(drop, pooled, self.null_text_pooled)  # [B, text_width]
        return tokens, mask, pooled

    def _inpaint_input(self, x_t: torch.Tensor, masked_image: torch.Tensor | None, mask: torch.Tensor | None):
        if not self.inpaint:
            if masked_image is not None or mask is not None:
                raise ValueError("Decoder: masked_image/mask given to a decoder built with inpaint=False")
            return x_t
        b, _, h, w = x_t.shape
        if masked_image is None or mask is None or masked_image.shape != (b, IMAGE_CHANNELS, h, w) \
                or mask.shape != (b, 1, h, w):
            raise ValueError(f"Decoder(inpaint=True): needs masked_image [B, 3, {h}, {w}] and mask [B, 1, {h}, {w}] "
                             f"(1 = known), got {_shape(masked_image)} and {_shape(mask)}")
        mask = mask.to(x_t.dtype)
        return torch.cat([x_t, masked_image.to(x_t.dtype) * mask, mask], dim=1)  # [B, 7, H, W]


def _shape(x: torch.Tensor | None):
    return None if x is None else tuple(x.shape)


@torch.no_grad()
def sample_decoder(decoder: Decoder, diffusion: GaussianDiffusion, image_emb: torch.Tensor,
                   text_tokens: torch.Tensor | None = None, text_mask: torch.Tensor | None = None, *,
                   steps: int | str = 250, sampler: str = "ddpm", guidance_scale: float = 1.0,
                   image_size: int | None = None, masked_image: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None, generator=None, progress: bool = False,
                   mean_type: str = "eps", text_emb: torch.Tensor | None = None) -> torch.Tensor:
    """Images [B, 3, S, S] in [−1, 1] from z_i (and a caption) (§2.1: 250 steps, learned σ with "ddpm").
    ``mean_type``: what the network predicts ("eps", "x0" or "v"; the StageSpec's).

    Guidance drops z_i and the caption together in the unconditional half. For inpainting, the known
    pixels also replace pred_x0 at every step, so the sample agrees with them exactly."""
    b, size = image_emb.shape[0], image_size or decoder.image_size
    denoiser = Denoiser(decoder, diffusion.alphas_cumprod, mean_type=mean_type, learned_variance=decoder.learned_sigma)
    cond = {"image_emb": image_emb, "drop_image": torch.zeros(b, dtype=torch.bool, device=image_emb.device)}
    if text_tokens is not None:
        cond.update(text_tokens=text_tokens, drop_text=cond["drop_image"].clone())
        if text_mask is not None:
            cond["text_mask"] = text_mask
        if text_emb is not None and decoder.text_time == "clip_embedding":
            cond["text_emb"] = text_emb  # z_t, for a decoder that reads it
    x0_transform = clip_x0  # images live in [−1, 1]: clamp pred_x0 at every step (GLIDE's clip_denoised)
    if decoder.inpaint:
        cond.update(masked_image=masked_image, mask=mask)
        x0_transform = lambda x0: mask * masked_image + (1 - mask) * clip_x0(x0)  # noqa: E731
    if guidance_scale != 1.0:
        ones = torch.ones(1, dtype=torch.bool, device=image_emb.device)
        denoiser = classifier_free_guidance(denoiser, guidance_scale, {k: ones for k in cond if k.startswith("drop_")})
    variance = "learned" if decoder.learned_sigma else "small"
    return run_sampler(sampler, denoiser, (b, IMAGE_CHANNELS, size, size), diffusion.respace(steps), cond=cond,
                       generator=generator, variance=variance, device=image_emb.device, progress=progress,
                       x0_transform=x0_transform)
