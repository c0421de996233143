"""Named sizes of every unCLIP network: ``tiny`` (trains in minutes on 2 CPU cores), ``base`` (a
single-GPU research size) and ``paper`` (Ramesh et al. 2022, Table 3 / Appendix C).

A preset is a frozen dataclass of plain fields; ``build(stage, preset, **overrides)`` replaces fields
(unknown names raise) and constructs the module. The CLIP dims (``clip_embed_dim``,
``clip_token_width``, ``clip_context_length``) are fields so the caller can match the CLIP in use
(paper: ViT-H/14, 1024 / 1024 / 77).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from .decoder import Decoder
from .prior import DiffusionPrior
from .upsampler import Upsampler

STAGES = ("prior", "decoder", "sr256", "sr1024")  # the diffusion stages, in cascade order
UPSAMPLER_SIZES = {"sr256": 256, "sr1024": 1024}  # each upsampler's output side, in cascade order
PIPELINE_STAGES = ("clip", *STAGES)  # the parts of a pipeline directory, and the stages the training loop trains
SIZES = ("tiny", "base", "paper")  # the named network sizes (``model.preset`` in the training configs)


@dataclass(frozen=True)
class ClipDims:
    clip_embed_dim: int = 1024  # z_i / z_t width D
    clip_token_width: int = 1024  # per-token text feature width W
    clip_context_length: int = 77  # CLIP caption length L


@dataclass(frozen=True)
class PriorPreset(ClipDims):
    width: int = 2048
    layers: int = 24
    num_heads: int = 32
    mlp_ratio: int = 4
    dropout: float = 0.0
    embed_scale: float = 17.2  # §2.2: z_i × 17.2 for ViT-H/14
    p_drop_text: float = 0.1  # CFG: text (tokens + z_t) dropped 10% (§2.2); read by the training loop
    text_null: str = "learned"  # CFG null: "learned" values, or "empty_caption" (CLIP's encoding of ""; Karlo)
    use_checkpoint: bool = False

    def build(self) -> DiffusionPrior:
        return DiffusionPrior(self.clip_embed_dim, self.clip_token_width, self.clip_context_length, self.width,
                              self.layers, self.num_heads, mlp_ratio=self.mlp_ratio, dropout=self.dropout,
                              embed_scale=self.embed_scale, text_null=self.text_null,
                              use_checkpoint=self.use_checkpoint)


@dataclass(frozen=True)
class DecoderPreset(ClipDims):
    image_size: int = 64
    model_channels: int = 512
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # pixel sizes at image_size
    num_head_channels: int = 64
    text_source: str = "ids"  # TextSource: "ids" own Transformer over token ids (paper); "clip" CLIP features
    text_width: int = 2048
    text_layers: int = 24
    text_heads: int = 32
    text_context_length: int = 256  # "ids" only; "clip" uses clip_context_length
    num_clip_tokens: int = 4
    p_drop_image: float = 0.1  # CFG: z_i dropped 10% (§2.1); read by the training loop
    p_drop_text: float = 0.5  # CFG: caption dropped 50%, independently (§2.1)
    learned_sigma: bool = True
    inpaint: bool = False
    dropout: float = 0.1
    norm_groups: int = 32
    resblock_updown: bool = True
    use_checkpoint: bool = False
    patch_size: int = 1  # space-to-depth stem: the UNet's first level at image_size / patch_size (paper: 1)
    coord_channels: bool = False  # x, y coordinate input channels (CoordConv; paper: none)
    # Karlo's text path (unclip/convert/karlo.py): no LayerNorm on the CLIP features and no learned positions,
    # z_t (not the encoder's last token) into the time embedding, "" as the caption's null
    text_input_norm: bool = True
    text_positions: bool = True
    text_time: str = "pooled"  # or "clip_embedding"
    text_null: str = "learned"  # or "empty_caption"

    def build(self) -> Decoder:
        clip = self.text_source == "clip"
        return Decoder(
            embed_dim=self.clip_embed_dim, model_channels=self.model_channels, channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks, attention_resolutions=self.attention_resolutions,
            image_size=self.image_size, num_head_channels=self.num_head_channels, text_source=self.text_source,
            text_width=self.text_width, text_layers=self.text_layers, text_heads=self.text_heads,
            text_context_length=self.clip_context_length if clip else self.text_context_length,
            clip_token_width=self.clip_token_width if clip else None, num_clip_tokens=self.num_clip_tokens,
            learned_sigma=self.learned_sigma, inpaint=self.inpaint, dropout=self.dropout,
            norm_groups=self.norm_groups, resblock_updown=self.resblock_updown, use_checkpoint=self.use_checkpoint,
            patch_size=self.patch_size, coord_channels=self.coord_channels, text_input_norm=self.text_input_norm,
            text_positions=self.text_positions, text_time=self.text_time, text_null=self.text_null,
        )


@dataclass(frozen=True)
class UpsamplerPreset:
    image_size: int = 256
    low_res_size: int = 64
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    train_crop_size: int = 64  # a quarter of image_size (§2.1); used by the training data path
    learned_sigma: bool = False  # DDIM (η = 0) never uses σ
    dropout: float = 0.0
    norm_groups: int = 32
    resblock_updown: bool = True
    use_checkpoint: bool = False
    resize_mode: str = "bilinear"  # how the low-res image is resized up (Karlo: "bicubic_antialias")
    last_step_unet: bool = False  # Karlo's second network for the final step

    def build(self) -> Upsampler:
        return Upsampler(
            model_channels=self.model_channels, channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks,
            image_size=self.image_size, low_res_size=self.low_res_size, learned_sigma=self.learned_sigma,
            dropout=self.dropout, norm_groups=self.norm_groups,
            resblock_updown=self.resblock_updown, use_checkpoint=self.use_checkpoint, resize_mode=self.resize_mode,
            last_step_unet=self.last_step_unet,
        )


_TINY_CLIP = dict(clip_embed_dim=128, clip_token_width=128, clip_context_length=32)  # configs/clip_model/unclip-tiny
_SR1024 = dict(image_size=1024, low_res_size=256, train_crop_size=256)

REGISTRY: dict[str, dict[str, object]] = {
    "prior": {
        "tiny": PriorPreset(**_TINY_CLIP, width=128, layers=2, num_heads=4),
        "base": PriorPreset(width=768, layers=12, num_heads=12),
        "paper": PriorPreset(),
    },
    "decoder": {
        "tiny": DecoderPreset(**_TINY_CLIP, model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                              attention_resolutions=(16, 8), num_head_channels=32, text_source="clip",
                              text_width=64, text_layers=1, text_heads=2, dropout=0.0, norm_groups=8),
        "base": DecoderPreset(model_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                              text_width=512, text_layers=8, text_heads=8, text_context_length=77),
        "paper": DecoderPreset(),
    },
    "sr256": {
        "tiny": UpsamplerPreset(model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, norm_groups=8),
        "base": UpsamplerPreset(model_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=2),
        "paper": UpsamplerPreset(),
    },
    "sr1024": {
        "tiny": UpsamplerPreset(**_SR1024, model_channels=16, channel_mult=(1, 1, 2, 2), num_res_blocks=1,
                                norm_groups=8),
        "base": UpsamplerPreset(**_SR1024, model_channels=64, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2),
        "paper": UpsamplerPreset(**_SR1024, model_channels=192, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2),
    },
}


def get_preset(stage: str, preset: str = "tiny", **overrides):
    """The preset dataclass of ``stage``/``preset`` with ``overrides`` applied (unknown fields raise)."""
    if stage not in REGISTRY:
        raise ValueError(f"unknown stage {stage!r}: expected one of {STAGES}")
    if preset not in REGISTRY[stage]:
        raise ValueError(f"unknown {stage} preset {preset!r}: expected one of {sorted(REGISTRY[stage])}")
    base = REGISTRY[stage][preset]
    fields = {f.name for f in dataclasses.fields(base)}
    if unknown := sorted(set(overrides) - fields):
        raise ValueError(f"unknown {stage} preset field(s) {unknown}: expected some of {sorted(fields)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}  # YAML lists
    return dataclasses.replace(base, **overrides)


def build(stage: str, preset: str = "tiny", **overrides) -> nn.Module:
    """Construct the ``stage`` network at size ``preset`` (build under ``torch.device("meta")`` to count
    parameters of the large presets without allocating them)."""
    return get_preset(stage, preset, **overrides).build()
