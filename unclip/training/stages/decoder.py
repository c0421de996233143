"""The 64-px decoder stage (§2.1): images + captions, z_i and caption features from the frozen CLIP
computed on the fly. z_i dropped 10% and the caption 50% (CFG); hybrid loss for learned σ; the
inpainting variant draws a random mask per sample (GLIDE §4.3)."""
from __future__ import annotations

from pathlib import Path

import torch

from unclip.data.wds import resolve_shards, shard_pipeline
from unclip.models import random_inpaint_mask, sample_decoder, sample_drop_mask, save_stage

from .base import Evaluation, StageParts
from .common import DiffusionObjective, cycle_first, load_clip, stage_spec


def build(cfg, env) -> StageParts:
    dev = env.device
    clip = load_clip(cfg, dev)
    spec = stage_spec(cfg, clip_embed_dim=clip.embed_dim, clip_token_width=clip.token_width,
                      clip_context_length=clip.context_length)
    f = spec.fields
    model = spec.build_model().to(dev)
    objective = DiffusionObjective(spec, cfg.stage.loss)
    size, ids = f["image_size"], f["text_source"] == "ids"

    @torch.no_grad()
    def condition(images, captions):
        z = clip.encode_image(images.to(dev), value_range=(-1.0, 1.0))  # [B, D]
        if ids:
            tokens = clip.tokenize(captions).to(dev)  # [B, L] ids; 0 pads
            return z, tokens, tokens != 0
        _, tokens, mask = clip.encode_text(captions)  # [B, L, W], [B, L]
        return z, tokens, mask

    def loss(net, batch, g):
        images, captions = batch
        x0 = images.to(dev)
        if x0.shape[-1] != size:
            raise ValueError(f"decoder: shards hold {x0.shape[-1]}-px images, the {cfg.model.preset} decoder "
                             f"expects {size}")
        z, tokens, mask = condition(images, captions)
        b = x0.shape[0]
        cond = {"image_emb": z, "text_tokens": tokens, "text_mask": mask,
                "drop_image": sample_drop_mask(b, f["p_drop_image"], g).to(dev),
                "drop_text": sample_drop_mask(b, f["p_drop_text"], g).to(dev)}
        if f["inpaint"]:
            m = random_inpaint_mask(b, size, generator=g, device=dev)
            cond.update(masked_image=x0 * m, mask=m)
        return objective(net, x0, cond, g)

    resolve_shards(cfg.data.val_shards or cfg.data.shards)  # a wrong path fails now, not after training

    def pipeline(rank, world, micro):
        return shard_pipeline(cfg.data.shards, batch_size=micro, partial_batches=False, fields=("image", "caption"),
                              shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled, seed=cfg.seed,
                              rank=rank, world_size=world)

    def evaluate(ema, g):
        val = shard_pipeline(cfg.data.val_shards or cfg.data.shards, batch_size=cfg.sample.n,
                             fields=("image", "caption"), shuffle_shards=False, rank=0, world_size=1)
        images, captions = cycle_first(val, cfg.sample.n)[0]
        images, captions = images[:cfg.sample.n], list(captions)[:cfg.sample.n]
        z, tokens, mask = condition(images, captions)
        kw = {}
        if f["inpaint"]:  # show inpainting of a fixed mask
            m = random_inpaint_mask(len(captions), size, generator=torch.Generator().manual_seed(cfg.seed), device=dev)
            kw = {"masked_image": images.to(dev) * m, "mask": m}
        out = sample_decoder(ema, objective.diffusion, z, tokens, mask, steps=cfg.sample.steps,
                             guidance_scale=cfg.sample.guidance_scale, generator=g, mean_type=spec.mean_type, **kw)
        return Evaluation(images=torch.cat([images.cpu(), out.cpu()]), nrow=len(captions))

    def export(ema, out: Path) -> Path:
        return save_stage(out, spec, ema)

    return StageParts(model, loss, pipeline, lambda: spec.build_model().to(dev), evaluate, export,
                      describe=str(cfg.data.shards), info={"clip": clip.arch})
