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

import numpy as np
import torch
from torch import nn

from unclip.diffusion import GaussianDiffusion, clip_x0, ddim_invert, randn, sample_repaint
from unclip.nn import UNet, attention_downsample_factors

from .conditioning import EmptyCaption, check_drop, replace_where
from .sampling import StageSettings, StepEnd, resolve_variance, run_sampler, stage_denoiser, weight_casts_kept
from .text_encoder import TextEncoder

IMAGE_CHANNELS = 3
TEXT_TIME = ("pooled", "clip_embedding")  # added to the time embedding: the encoder's EOT feature, or CLIP's z_t
TEXT_NULL = ("learned", "empty_caption")  # a dropped caption: learned values, or the CLIP encoding of ""


class Decoder(nn.Module):
    """ADM UNet + caption encoder + z_i conditioning; ``forward`` returns raw [B, 3 or 6, H, W]."""

    def __init__(self, *, embed_dim: int, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 attention_resolutions: Sequence[int], image_size: int, num_head_channels: int, text_source: str,
                 text_width: int, text_layers: int, text_heads: int, text_context_length: int,
                 clip_token_width: int | None, num_clip_tokens: int, learned_sigma: bool, inpaint: bool,
                 dropout: float, norm_groups: int, resblock_updown: bool, use_checkpoint: bool, patch_size: int,
                 coord_channels: bool, text_input_norm: bool, text_positions: bool, text_time: str, text_null: str):
        """Every argument is required: the values of the named sizes live in ``presets.DecoderPreset``."""
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
            attention_downsample_factors(image_size // patch_size, attention_resolutions),
            num_head_channels=num_head_channels,
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
        (None = no caption: the text null, as a dropped caption of the full context length); text_mask [B, L] bool;
        drop_* [B] bool;
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


def image_x0_transform(known: torch.Tensor | None = None, keep: torch.Tensor | None = None):
    """pred_x0 of an image stage: clamped to the data range [−1, 1] (as GLIDE and ADM sample with
    ``clip_denoised``: early steps of the cosine schedule otherwise amplify small ε errors without
    bound), then the known pixels written back when editing (``keep`` 1 = known)."""
    if known is None:
        return clip_x0
    return lambda x0: keep * known + (1 - keep) * clip_x0(x0)


def decoder_cond(decoder: Decoder, image_emb: torch.Tensor, text_tokens=None, text_mask=None, *, text_emb=None,
                 known=None, keep=None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(cond, null) of the decoder: guidance drops z_i and the caption together (§2.1). ``text_emb`` (z_t)
    goes in only for a decoder that reads it (``text_time="clip_embedding"``); an inpainting decoder gets
    ``known``/``keep`` as its extra channels (nothing known when they are None)."""
    dev, b = image_emb.device, image_emb.shape[0]
    cond = {"image_emb": image_emb, "drop_image": torch.zeros(b, dtype=torch.bool, device=dev)}
    if text_tokens is not None:
        cond.update(text_tokens=text_tokens, drop_text=cond["drop_image"].clone())
        if text_mask is not None:
            cond["text_mask"] = text_mask
        if decoder.text_time == "clip_embedding":
            cond["text_emb"] = text_emb
    if decoder.inpaint:
        if known is None:  # generation with an inpainting decoder: nothing is known
            known = torch.zeros(b, IMAGE_CHANNELS, decoder.image_size, decoder.image_size, device=dev)
            keep = torch.zeros(b, 1, *known.shape[2:], device=dev)
        cond.update(masked_image=known, mask=keep)
    ones = torch.ones(1, dtype=torch.bool, device=dev)
    return cond, {k: ones for k in cond if k.startswith("drop_")}


@torch.no_grad()
def sample_decoder(decoder: Decoder, diffusion: GaussianDiffusion, image_emb: torch.Tensor,
                   text_tokens: torch.Tensor | None = None, text_mask: torch.Tensor | None = None, *,
                   settings: StageSettings, mean_type: str, text_emb: torch.Tensor | None = None,
                   known: torch.Tensor | None = None, keep: torch.Tensor | None = None, repaint_resample: int = 1,
                   gamma: np.ndarray | None = None, generator=None, x_T: torch.Tensor | None = None,
                   eta: float | None = None, step_end: StepEnd | None = None, dtype: torch.dtype = torch.float32,
                   progress: bool = False) -> torch.Tensor:
    """Images [B, 3, S, S] in [−1, 1] from z_i (and a caption) (§2.1), sampled with ``settings``.

    Guidance drops z_i and the caption together in the unconditional half. ``known``/``keep`` [B, 3|1, S, S]
    (1 = known pixel): an inpainting decoder reads them as channels and the known pixels replace pred_x0
    at every step, so the sample agrees with them exactly; a decoder without inpainting channels runs
    RePaint (Lugmayr et al. 2022) with ``repaint_resample`` jumps per step. ``x_T``: the start noise
    (else drawn with ``generator``: None, one, or one per image); ``eta`` overrides ``settings.eta``;
    ``gamma``: Analytic-DPM Γ for ``settings.steps`` when the release stores one."""
    b, dev = image_emb.shape[0], image_emb.device
    size = (decoder.image_size,) * 2 if known is None else tuple(known.shape[-2:])
    cond, null = decoder_cond(decoder, image_emb, text_tokens, text_mask, text_emb=text_emb, known=known, keep=keep)
    den = stage_denoiser(decoder, diffusion, mean_type=mean_type, learned_variance=decoder.learned_sigma,
                         dtype=dtype, guidance_scale=settings.guidance_scale, null=null)
    x = (b, IMAGE_CHANNELS, *size) if x_T is None else x_T
    with weight_casts_kept(dev, dtype):
        if known is not None and not decoder.inpaint:
            repaint = StageSettings("ddpm", settings.steps, variance="auto")
            start = randn((b, IMAGE_CHANNELS, *size), generator, dev, torch.float32) if x_T is None else x_T
            return sample_repaint(den, start, diffusion.respace(settings.steps), known, keep, cond=cond,
                                  generator=generator, variance=resolve_variance(repaint, decoder.learned_sigma, None),
                                  resample=repaint_resample, step_end=step_end)
        return run_sampler(settings, den, x, diffusion, cond=cond, generator=generator, gamma=gamma,
                           learned_variance=decoder.learned_sigma, eta=eta,
                           x0_transform=image_x0_transform(known, keep), step_end=step_end, device=dev,
                           progress=progress)


@torch.no_grad()
def invert_decoder(decoder: Decoder, diffusion: GaussianDiffusion, images: torch.Tensor, image_emb: torch.Tensor,
                   text_tokens=None, text_mask=None, *, settings: StageSettings, mean_type: str, text_emb=None,
                   step_end: StepEnd | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DDIM-invert 64-px images [B, 3, S, S] to their x_T under the decoder (Song et al. 2021, §4.3), over the
    chain respaced to ``settings.steps`` with its guidance scale."""
    cond, null = decoder_cond(decoder, image_emb, text_tokens, text_mask, text_emb=text_emb)
    den = stage_denoiser(decoder, diffusion, mean_type=mean_type, learned_variance=decoder.learned_sigma,
                         dtype=dtype, guidance_scale=settings.guidance_scale, null=null)
    with weight_casts_kept(images.device, dtype):
        return ddim_invert(den, images, diffusion.respace(settings.steps), cond=cond, step_end=step_end)
