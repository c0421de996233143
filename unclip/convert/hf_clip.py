"""transformers CLIP (CLIPModel, or the CLIPTextModelWithProjection / CLIPVisionModelWithProjection pair that
diffusers pipelines ship) -> an open_clip model config and state dict, for ``FrozenCLIP``.

The layouts are the same network (pre-LN ViT and causal text Transformer, [CLS] / EOT pooling, linear
projections); only names, the fused attention in-projection and the projection orientation differ. What
open_clip's TextTransformer cannot express is refused with the field's name: a non-causal text tower,
other activations than GELU / QuickGELU, a text tower without an EOT token to pool at.
"""
from __future__ import annotations

from typing import Any

import torch

from unclip.clip import FrozenCLIP, build_open_clip, default_preprocess_cfg

from .components import ConversionError, StateMap

ACTIVATIONS = {"quick_gelu": True, "gelu": False}
# transformers writes only the fields that differ from these (its CLIPTextConfig / CLIPVisionConfig defaults)
TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                 "layer_norm_eps": 1e-5, "projection_dim": 512}
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                   "projection_dim": 512, "num_channels": 3}


def with_defaults(cfg: dict[str, Any], kind: str) -> dict[str, Any]:
    return {**(TEXT_DEFAULTS if kind == "text" else VISION_DEFAULTS), **cfg}


def _activation(cfg: dict[str, Any], source: str) -> bool:
    act = cfg.get("hidden_act", "quick_gelu")
    if act not in ACTIVATIONS:
        raise ConversionError(f"{source}: hidden_act={act!r} is not supported (open_clip has GELU and QuickGELU)")
    return ACTIVATIONS[act]


def _tower_cfg(cfg: dict[str, Any], kind: str) -> dict[str, Any]:
    heads, width = cfg["num_attention_heads"], cfg["hidden_size"]
    out = {"width": width, "layers": cfg["num_hidden_layers"], "mlp_ratio": cfg["intermediate_size"] / width}
    if kind == "vision":
        return out | {"image_size": cfg["image_size"], "patch_size": cfg["patch_size"], "head_width": width // heads}
    return out | {"heads": heads, "context_length": cfg["max_position_embeddings"], "vocab_size": cfg["vocab_size"]}


def open_clip_config(text_cfg: dict[str, Any], vision_cfg: dict[str, Any], embed_dim: int, source: str) -> dict:
    """open_clip model config for a transformers text + vision config pair."""
    text_cfg, vision_cfg = with_defaults(text_cfg, "text"), with_defaults(vision_cfg, "vision")
    if vision_cfg["num_channels"] != 3:
        raise ConversionError(f"{source}: vision num_channels={vision_cfg['num_channels']}, expected RGB (3)")
    quick = {_activation(text_cfg, f"{source} text"), _activation(vision_cfg, f"{source} vision")}
    if len(quick) != 1:
        raise ConversionError(f"{source}: the text and vision towers use different activations")
    if text_cfg.get("layer_norm_eps", 1e-5) != 1e-5 or vision_cfg.get("layer_norm_eps", 1e-5) != 1e-5:
        raise ConversionError(f"{source}: layer_norm_eps other than 1e-5 is not supported")
    text = _tower_cfg(text_cfg, "text")
    if text["width"] % text["heads"]:
        raise ConversionError(f"{source}: text hidden_size is not a multiple of num_attention_heads")
    return {"embed_dim": embed_dim, "quick_gelu": quick.pop(), "vision_cfg": _tower_cfg(vision_cfg, "vision"),
            "text_cfg": text}


def _blocks(m: StateMap, dst: str, src: str, layers: int) -> None:
    for i in range(layers):
        d, s = f"{dst}.resblocks.{i}", f"{src}.layers.{i}"
        for p in ("weight", "bias"):
            m.out[f"{d}.attn.in_proj_{p}"] = torch.cat(
                [m.take(f"{s}.self_attn.{q}_proj.{p}") for q in ("q", "k", "v")], dim=0)
        m.copy(f"{d}.attn.out_proj", f"{s}.self_attn.out_proj")
        m.copy(f"{d}.ln_1", f"{s}.layer_norm1")
        m.copy(f"{d}.ln_2", f"{s}.layer_norm2")
        m.copy(f"{d}.mlp.c_fc", f"{s}.mlp.fc1")
        m.copy(f"{d}.mlp.c_proj", f"{s}.mlp.fc2")


def map_text(m: StateMap, layers: int) -> None:
    """transformers ``text_model.*`` + ``text_projection`` -> open_clip's text tower keys."""
    m.out["token_embedding.weight"] = m.take("text_model.embeddings.token_embedding.weight")
    m.out["positional_embedding"] = m.take("text_model.embeddings.position_embedding.weight")
    _blocks(m, "transformer", "text_model.encoder", layers)
    m.copy("ln_final", "text_model.final_layer_norm")
    m.out["text_projection"] = m.take("text_projection.weight").t().contiguous()  # [D, W] -> [W, D]


def map_vision(m: StateMap, layers: int) -> None:
    """transformers ``vision_model.*`` + ``visual_projection`` -> open_clip's ``visual.*`` keys."""
    m.out["visual.class_embedding"] = m.take("vision_model.embeddings.class_embedding")
    m.out["visual.conv1.weight"] = m.take("vision_model.embeddings.patch_embedding.weight")
    m.out["visual.positional_embedding"] = m.take("vision_model.embeddings.position_embedding.weight")
    m.copy("visual.ln_pre", "vision_model.pre_layrnorm")
    _blocks(m, "visual.transformer", "vision_model.encoder", layers)
    m.copy("visual.ln_post", "vision_model.post_layernorm")
    m.out["visual.proj"] = m.take("visual_projection.weight").t().contiguous()  # [D, Wv] -> [Wv, D]


def split_clip_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(text config, vision config, projection dim) of a transformers CLIPConfig."""
    if "text_config" not in config or "vision_config" not in config:
        raise ConversionError("not a transformers CLIPConfig (no text_config / vision_config)")
    return (with_defaults(config["text_config"], "text"), with_defaults(config["vision_config"], "vision"),
            config.get("projection_dim", 512))


IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
VISION_KEYS = ("vision_model.", "visual_projection.", "logit_scale")


def frozen_clip(text: tuple[dict, dict], vision: tuple[dict, dict], embed_dim: int, name: str, *,
                unit_embeddings: bool = True) -> FrozenCLIP:
    """A FrozenCLIP from transformers towers: ``text`` / ``vision`` are (config, state dict) pairs. Only the
    vision keys of ``vision`` are read, so a whole CLIPModel's text half never replaces ``text``'s."""
    (text_cfg, text_state), (vision_cfg, vision_state) = text, vision
    model_cfg = open_clip_config(text_cfg, vision_cfg, embed_dim, name)
    vision_state = {k: v for k, v in vision_state.items() if k.startswith(VISION_KEYS)}
    m = StateMap({**text_state, **vision_state}, name)
    map_text(m, model_cfg["text_cfg"]["layers"])
    map_vision(m, model_cfg["vision_cfg"]["layers"])
    preprocess = default_preprocess_cfg(model_cfg)  # OpenAI's eval preprocessing at the tower's size
    model = build_open_clip(name, model_cfg, preprocess)
    # a CLIPModel has the logit scale; the text / vision "WithProjection" halves do not: keep open_clip's
    m.out["logit_scale"] = m.take("logit_scale") if m.has("logit_scale") else model.state_dict()["logit_scale"]
    model.load_state_dict(m.finish(model, ignore=IGNORED), strict=True)
    return FrozenCLIP(model, name, model_cfg, preprocess, unit_embeddings=unit_embeddings)
