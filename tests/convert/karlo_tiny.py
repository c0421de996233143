"""Small random-initialised Karlo components in the diffusers layout (diffusers and transformers are test-only
extras): Karlo's block types and config fields at widths a CPU runs in seconds. Nothing is downloaded."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TinyKarlo:
    """Widths and depths of one test configuration (Karlo v1.0 alpha: 768-d CLIP, a 20-layer 2048-wide prior,
    a decoder of widths 320·(1, 2, 3, 4) with 3 blocks per level and attention at 32/16/8, sr 64→256)."""

    clip_dim: int = 32  # ViT-L/14: 768 (text width = embedding width in Karlo)
    clip_layers: int = 2
    clip_heads: int = 2
    prior_heads: int = 2
    prior_head_dim: int = 16
    prior_layers: int = 2
    decoder_widths: tuple[int, ...] = (32, 64)
    decoder_blocks: int = 1
    decoder_head_dim: int = 16
    decoder_attention: tuple[bool, ...] = (False, True)
    cross_dim: int = 48
    decoder_size: int = 64
    sr_widths: tuple[int, ...] = (16, 32)
    sr_blocks: int = 1
    sr_size: int = 256
    groups: int = 8
    learned_sigma: bool = True


def _down_up(attention):
    down = ["SimpleCrossAttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention]
    up = ["SimpleCrossAttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attention)]
    return down, up


def build(cfg: TinyKarlo, seed: int = 0) -> dict:
    """The diffusers / transformers modules of a tiny Karlo (random weights; biases and norms perturbed so
    that a wrong mapping cannot hide behind zeros and ones)."""
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(seed)
    d = cfg.clip_dim
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=d, intermediate_size=4 * d, num_hidden_layers=cfg.clip_layers,
        num_attention_heads=cfg.clip_heads, max_position_embeddings=77, projection_dim=d))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=d, intermediate_size=4 * d, num_hidden_layers=cfg.clip_layers, num_attention_heads=cfg.clip_heads,
        image_size=32, patch_size=8, projection_dim=d))
    prior = PriorTransformer(num_attention_heads=cfg.prior_heads, attention_head_dim=cfg.prior_head_dim,
                             num_layers=cfg.prior_layers, embedding_dim=d, num_embeddings=77, additional_embeddings=4)
    time_dim = 4 * cfg.decoder_widths[0]
    text_proj = UnCLIPTextProjModel(clip_extra_context_tokens=4, clip_embeddings_dim=d, time_embed_dim=time_dim,
                                    cross_attention_dim=cfg.cross_dim)
    down, up = _down_up(cfg.decoder_attention)
    decoder = UNet2DConditionModel(
        sample_size=cfg.decoder_size, in_channels=3, out_channels=6 if cfg.learned_sigma else 3,
        down_block_types=down, up_block_types=up, mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=cfg.decoder_widths, layers_per_block=cfg.decoder_blocks, cross_attention_dim=cfg.cross_dim,
        attention_head_dim=cfg.decoder_head_dim, norm_num_groups=cfg.groups, resnet_time_scale_shift="scale_shift",
        class_embed_type="identity")
    sr = [UNet2DModel(sample_size=cfg.sr_size, in_channels=6, out_channels=3,
                      down_block_types=["ResnetDownsampleBlock2D"] * len(cfg.sr_widths),
                      up_block_types=["ResnetUpsampleBlock2D"] * len(cfg.sr_widths), block_out_channels=cfg.sr_widths,
                      layers_per_block=cfg.sr_blocks, norm_num_groups=cfg.groups, resnet_time_scale_shift="scale_shift",
                      add_attention=False) for _ in range(2)]
    modules = {"text_encoder": text, "image_encoder": vision, "prior": prior, "text_proj": text_proj,
               "decoder": decoder, "super_res_first": sr[0], "super_res_last": sr[1]}
    with torch.no_grad():
        for module in modules.values():
            for _name, p in module.named_parameters():
                p.add_(torch.randn_like(p) * (0.05 if p.ndim > 1 else 0.2))  # zero-init outputs, norms, biases
        prior.clip_std.copy_(torch.rand_like(prior.clip_std) + 0.5)
        prior.clip_mean.copy_(torch.randn_like(prior.clip_mean) * 0.1)
    return {k: m.eval() for k, m in modules.items()}


SCHEDULERS = {
    "prior_scheduler": {"variance_type": "fixed_small_log", "prediction_type": "sample", "clip_sample_range": 5.0},
    "decoder_scheduler": {"variance_type": "learned_range", "prediction_type": "epsilon", "clip_sample_range": 1.0},
    "super_res_scheduler": {"variance_type": "fixed_small_log", "prediction_type": "epsilon", "clip_sample_range": 1.0},
}


def save(modules: dict, root: Path, image_encoder: bool = True) -> Path:
    """Write the diffusers layout: one folder per component (save_pretrained) and the scheduler configs."""
    for name, module in modules.items():
        if name == "image_encoder" and not image_encoder:
            continue
        module.save_pretrained(root / name)
    for name, extra in SCHEDULERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": "UnCLIPScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000,
               "clip_sample": True, **extra}
        (root / name / "scheduler_config.json").write_text(json.dumps(cfg))
    (root / "tokenizer").mkdir(exist_ok=True)  # Karlo's CLIPTokenizer files: unclip tokenizes with open_clip's
    return root
