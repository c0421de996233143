"""Karlo v1.0 alpha (Kakao Brain's public unCLIP, in the diffusers layout) -> an unclip pipeline directory.

Karlo's folder holds ``text_encoder`` (transformers CLIPTextModelWithProjection, ViT-L/14's text tower),
``tokenizer``, ``prior`` (PriorTransformer), ``text_proj`` (UnCLIPTextProjModel), ``decoder``
(UNet2DConditionModel), ``super_res_first`` / ``super_res_last`` (UNet2DModel; the second runs the final
step only) and three ``*_scheduler`` configs. Each maps onto one of our networks with options, not copies:

  prior      DiffusionPrior: the same causal Transformer over [text tokens, z_t, t, z_i, query];
             ``text_null="empty_caption"`` (Karlo's unconditional branch is the model run on "")
  decoder    Decoder with ``text_source="clip"``, ``text_layers=0``, ``text_input_norm=False``,
             ``text_positions=False`` (text_proj's Linear → LayerNorm), ``text_time="clip_embedding"`` (z_t
             into the time embedding), ``text_null="empty_caption"``; the 4 extra z_i tokens reordered
  sr256      Upsampler with ``last_step_unet`` and ``resize_mode="bicubic_antialias"``
  clip       FrozenCLIP (open_clip, ``unit_embeddings=False``: Karlo reads embeddings unnormalised)
             built from the text encoder plus a vision tower, which Karlo's folder
             lacks: from ``image_encoder/`` (the image-variations release has one) or ``clip=`` (a
             transformers CLIP folder, or OpenAI's ``ViT-L-14.pt`` through open_clip's loader)

Nothing is downloaded: the source is a local folder. See docs/pretrained.md.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from unclip.clip import FrozenCLIP
from unclip.models import UPSAMPLER_SIZES, StageSpec, save_stage
from unclip.models.conditioning import empty_caption

from . import hf_clip
from .components import ConversionError, StateMap, read_component, require
from .unet import map_unet, unet_fields

log = logging.getLogger(__name__)

COMPONENTS = ("text_encoder", "prior", "text_proj", "decoder", "super_res_first", "super_res_last")
SCHEDULES = {"squaredcos_cap_v2": "cosine", "linear": "linear"}
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


# ---------------------------------------------------------------------------------------------- diffusion


def diffusion_settings(root: Path, name: str) -> dict[str, Any]:
    """schedule / num_timesteps / mean_type of a stage from ``{name}_scheduler/scheduler_config.json``."""
    path = root / f"{name}_scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise ConversionError(f"{root}: no {name}_scheduler/scheduler_config.json")
    cfg = json.loads(path.read_text())
    schedule = cfg.get("beta_schedule", "squaredcos_cap_v2")
    prediction = cfg.get("prediction_type", "epsilon")
    if schedule not in SCHEDULES or prediction not in PREDICTIONS:
        raise ConversionError(f"{path}: beta_schedule={schedule!r} / prediction_type={prediction!r} not supported "
                              f"(expected {sorted(SCHEDULES)} / {sorted(PREDICTIONS)})")
    return {"schedule": SCHEDULES[schedule], "num_timesteps": int(cfg.get("num_train_timesteps", 1000)),
            "mean_type": PREDICTIONS[prediction]}


# ---------------------------------------------------------------------------------------------- CLIP


def convert_clip(text_dir: Path, vision: str | os.PathLike) -> FrozenCLIP:
    """FrozenCLIP from a transformers text tower (``text_dir``) and a vision tower: a transformers
    CLIPVisionModelWithProjection / CLIPModel folder, or an OpenAI / open_clip checkpoint file."""
    text_cfg, text_state = read_component(text_dir)
    vision = Path(vision)
    if vision.is_file():  # OpenAI's ViT-L-14.pt or an open_clip checkpoint: open_clip's own loader
        arch = "ViT-L-14-quickgelu" if text_cfg.get("hidden_act", "quick_gelu") == "quick_gelu" else "ViT-L-14"
        clip = FrozenCLIP.create(arch, weights=vision)
        state = StateMap(text_state, str(text_dir))
        hf_clip.map_text(state, text_cfg["num_hidden_layers"])
        mine = clip.model.state_dict()
        for key, value in state.out.items():
            if key not in mine or mine[key].shape != value.shape:
                raise ConversionError(f"{text_dir}: its text tower does not fit {arch} from {vision} ({key})")
        clip.model.load_state_dict(state.out, strict=False)  # the text tower of the source wins
        clip.unit_embeddings = False  # Karlo's networks read z_t and z_i as CLIP projects them
        return clip
    vision_cfg, vision_state = read_component(vision)
    if "vision_config" in vision_cfg:  # a whole CLIPModel folder: its vision half
        vision_cfg = vision_cfg["vision_config"] | {"projection_dim": vision_cfg.get("projection_dim", 512)}
    embed_dim = hf_clip.with_defaults(text_cfg, "text")["projection_dim"]
    return hf_clip.frozen_clip((text_cfg, text_state), (vision_cfg, vision_state), embed_dim, "karlo-clip",
                               unit_embeddings=False)  # Karlo's networks read z_t and z_i as CLIP projects them


# ---------------------------------------------------------------------------------------------- prior


def convert_prior(directory: Path, clip: FrozenCLIP, diffusion: dict[str, Any]) -> tuple[StageSpec, torch.nn.Module]:
    config, source = read_component(directory)
    name = str(directory)
    require(config, name, additional_embeddings=4, time_embed_act_fn="silu", norm_in_type=None,
            embedding_proj_norm_type=None, encoder_hid_proj_type="linear", added_emb_type="prd", dropout=(0.0, 0))
    width = config["num_attention_heads"] * config["attention_head_dim"]
    dim = config["embedding_dim"]
    for key in ("time_embed_dim", "embedding_proj_dim", "clip_embed_dim"):
        if config.get(key) not in (None, width if key == "time_embed_dim" else dim):
            raise ConversionError(f"{name}: {key}={config[key]!r} is not supported")
    if clip.embed_dim != dim or clip.token_width != dim:
        raise ConversionError(f"{name}: embedding_dim={dim} but the CLIP has embed_dim {clip.embed_dim}, token width "
                              f"{clip.token_width}")
    mlp = source["transformer_blocks.0.ff.net.0.proj.weight"].shape[0] // width
    fields = {"clip_embed_dim": dim, "clip_token_width": dim, "clip_context_length": config["num_embeddings"],
              "width": width, "layers": config["num_layers"], "num_heads": config["num_attention_heads"],
              "mlp_ratio": mlp, "dropout": 0.0, "text_null": "empty_caption"}
    spec = StageSpec("prior", "paper", overrides=fields, **diffusion)
    model = spec.build_model()
    m = StateMap(source, name)
    m.copy("text_proj", "encoder_hidden_states_proj")
    m.copy("text_emb_proj", "embedding_proj")
    m.copy("time_embed.mlp.0", "time_embedding.linear_1")
    m.copy("time_embed.mlp.2", "time_embedding.linear_2")
    m.copy("x_proj", "proj_in")
    m.out["query"] = m.take("prd_embedding").reshape(width)
    m.out["pos_emb"] = m.take("positional_embedding").reshape(-1, width)
    for i in range(config["num_layers"]):
        d, s = f"transformer.blocks.{i}", f"transformer_blocks.{i}"
        m.copy(f"{d}.ln_attn", f"{s}.norm1")
        m.concat(f"{d}.attn.to_qkv", [f"{s}.attn1.to_q", f"{s}.attn1.to_k", f"{s}.attn1.to_v"])
        m.copy(f"{d}.attn.proj_out", f"{s}.attn1.to_out.0")
        m.copy(f"{d}.ln_mlp", f"{s}.norm3")
        m.copy(f"{d}.mlp.0", f"{s}.ff.net.0.proj")
        m.copy(f"{d}.mlp.2", f"{s}.ff.net.2")
    m.copy("transformer.ln_final", "norm_out")
    m.copy("out", "proj_to_clip_embeddings")
    m.out["normalizer.mean"] = m.take("clip_mean").reshape(dim)
    m.out["normalizer.std"] = m.take("clip_std").reshape(dim)
    _empty_caption(m, model, clip)
    model.load_state_dict(m.finish(model), strict=True)
    return spec, model


def _empty_caption(m: StateMap, model: torch.nn.Module, clip: FrozenCLIP) -> None:
    """The CLIP's encoding of "" into the model's ``null_caption`` buffers (Karlo's unconditional input)."""
    model.null_caption.set(*empty_caption(clip))
    for key in ("tokens", "mask", "emb"):
        m.out[f"null_caption.{key}"] = getattr(model.null_caption, key)


# ---------------------------------------------------------------------------------------------- decoder


def convert_decoder(directory: Path, text_proj_dir: Path, clip: FrozenCLIP, diffusion: dict[str, Any]
                    ) -> tuple[StageSpec, torch.nn.Module]:
    config, source = read_component(directory)
    proj_cfg, proj = read_component(text_proj_dir)
    name = f"{directory} + {text_proj_dir}"
    unet = unet_fields(config, str(directory), cross_attention=True)
    size, width = config["sample_size"], config["cross_attention_dim"]
    if config["in_channels"] != 3 or config["out_channels"] not in (3, 6):
        raise ConversionError(f"{directory}: in/out channels {config['in_channels']}/{config['out_channels']}, "
                              "expected 3 in and 3 or 6 (learned σ) out")
    tokens, dim = proj_cfg.get("clip_extra_context_tokens", 4), proj_cfg["clip_embeddings_dim"]
    if (proj_cfg.get("cross_attention_dim", width) != width
            or proj_cfg.get("time_embed_dim") != 4 * unet["model_channels"]):
        raise ConversionError(f"{name}: text_proj widths do not match the decoder's")
    fields = {"clip_embed_dim": dim, "clip_token_width": dim, "clip_context_length": clip.context_length,
              "image_size": size, "model_channels": unet["model_channels"], "channel_mult": unet["channel_mult"],
              "num_res_blocks": unet["num_res_blocks"],
              "attention_resolutions": tuple(size // 2**lv for lv in unet["attention_levels"]),
              "num_head_channels": unet["num_head_channels"], "norm_groups": unet["norm_groups"],
              "text_source": "clip", "text_width": width, "text_layers": 0, "text_heads": 1,
              "num_clip_tokens": tokens, "learned_sigma": config["out_channels"] == 6, "dropout": 0.0,
              "resblock_updown": True, "text_input_norm": False, "text_positions": False,
              "text_time": "clip_embedding", "text_null": "empty_caption"}
    spec = StageSpec("decoder", "paper", overrides=fields, **diffusion)
    model = spec.build_model()
    m = StateMap(source, str(directory))
    map_unet(m, unet, "unet.")
    p = StateMap(proj, str(text_proj_dir))
    p.copy("text_to_emb", "embedding_proj")
    p.copy("image_to_emb", "clip_image_embeddings_project_to_time_embeddings")
    p.copy("text.embed.1", "encoder_hidden_states_proj")
    p.copy("text.ln_final", "text_encoder_hidden_states_norm")
    p.out["null_image_emb"] = p.take("learned_classifier_free_guidance_embeddings")
    # diffusers reshapes the 4·W outputs to [W, 4] and transposes: token k, channel c is output c·4 + k;
    # ours views them as [4, W]: output k·W + c
    order = torch.arange(tokens * width).view(width, tokens).t().reshape(-1)
    p.out["image_to_tokens.weight"] = p.take("clip_extra_context_tokens_proj.weight")[order]
    p.out["image_to_tokens.bias"] = p.take("clip_extra_context_tokens_proj.bias")[order]
    _empty_caption(p, model, clip)
    model.load_state_dict(StateMap.merged([m, p], name).finish(model), strict=True)
    return spec, model


# ---------------------------------------------------------------------------------------------- super-res


def convert_super_res(first: Path, last: Path | None, low_res_size: int, diffusion: dict[str, Any]
                      ) -> tuple[StageSpec, torch.nn.Module]:
    config, source = read_component(first)
    unet = unet_fields(config, str(first), cross_attention=False)
    if config["in_channels"] != 6 or config["out_channels"] not in (3, 6):
        raise ConversionError(f"{first}: in/out channels {config['in_channels']}/{config['out_channels']}, "
                              "expected 6 (x_t and the upsampled image) in, 3 or 6 out")
    size = config["sample_size"]
    fields = {"image_size": size, "low_res_size": low_res_size, "model_channels": unet["model_channels"],
              "channel_mult": unet["channel_mult"], "num_res_blocks": unet["num_res_blocks"],
              "norm_groups": unet["norm_groups"], "learned_sigma": config["out_channels"] == 6, "dropout": 0.0,
              "resblock_updown": True, "train_crop_size": size // 4, "resize_mode": "bicubic_antialias",
              "last_step_unet": last is not None}
    stage = {s: name for name, s in UPSAMPLER_SIZES.items()}.get(size)
    if stage is None:
        raise ConversionError(f"{first}: sample_size={size}; unclip's upsamplers make 256 or 1024 px")
    spec = StageSpec(stage, "paper", overrides=fields, **diffusion)
    model = spec.build_model()
    parts = [StateMap(source, str(first))]
    map_unet(parts[0], unet, "unet.")
    if last is not None:
        last_cfg, last_source = read_component(last)
        if {k: v for k, v in last_cfg.items() if not k.startswith("_")} != \
                {k: v for k, v in config.items() if not k.startswith("_")}:
            raise ConversionError(f"{last}: its config differs from {first}'s; the last-step network must have "
                                  "the same shape")
        parts.append(StateMap(last_source, str(last)))
        map_unet(parts[1], unet, "unet_last.")
    model.load_state_dict(StateMap.merged(parts, f"{first} + {last}").finish(model), strict=True)
    return spec, model


# ---------------------------------------------------------------------------------------------- all


def convert_karlo(src: str | os.PathLike, dest: str | os.PathLike, *, clip: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``dest`` = clip/ prior/ decoder/ sr256/ converted from the Karlo folder ``src``; returns ``dest``."""
    root, out = Path(src), Path(dest)
    missing = [c for c in COMPONENTS if not (root / c).is_dir()]
    if missing:
        raise ConversionError(f"{root} is not a Karlo (diffusers UnCLIPPipeline) folder: it lacks {missing}")
    vision = root / "image_encoder" if (root / "image_encoder").is_dir() else clip
    if vision is None:
        raise ConversionError(
            f"{root} has no image_encoder/: Karlo ships only CLIP's text tower, and unclip needs the image tower "
            "too (variations, moderation, evals). Pass clip=PATH: OpenAI's ViT-L-14.pt, or a transformers "
            "openai/clip-vit-large-patch14 folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting CLIP (%s + %s)", root / "text_encoder", vision)
    frozen = convert_clip(root / "text_encoder", vision)
    frozen.save(tmp / "clip")
    log.info("converting the prior")
    spec, model = convert_prior(root / "prior", frozen, diffusion_settings(root, "prior"))
    save_stage(tmp / "prior", spec, model)
    log.info("converting the decoder")
    spec, model = convert_decoder(root / "decoder", root / "text_proj", frozen, diffusion_settings(root, "decoder"))
    save_stage(tmp / "decoder", spec, model)
    log.info("converting the super-resolution networks")
    spec, sr = convert_super_res(root / "super_res_first", root / "super_res_last", model.image_size,
                                 diffusion_settings(root, "super_res"))
    save_stage(tmp / spec.stage, spec, sr)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out
