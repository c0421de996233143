"""The CLIP stage: contrastive training of a small open_clip model on image/caption shards with
open_clip's own ``ClipLoss`` (features gathered across ranks), reported as zero-shot val retrieval.
Exported with ``FrozenCLIP.save`` (the pipeline's clip/). With a pretrained CLIP, skip this stage."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from open_clip.loss import ClipLoss

from unclip.clip import FrozenCLIP
from unclip.data.wds import resolve_shards, shard_pipeline
from unclip.evals.retrieval import evaluate_retrieval

from .base import Evaluation, StageParts

ARCH_BY_PRESET = {"tiny": "unclip-tiny", "base": "unclip-small"}


def arch_of(cfg) -> str:
    arch = cfg.model.overrides.get("arch") or ARCH_BY_PRESET.get(cfg.model.preset)
    if arch is None:
        raise ValueError(f"clip stage: model.preset={cfg.model.preset!r} has no CLIP; expected one of "
                         f"{sorted(ARCH_BY_PRESET)} or model.overrides.arch=<open_clip config name>")
    return arch


def build(cfg, env) -> StageParts:
    dev, arch = env.device, arch_of(cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    wrapper = FrozenCLIP.create(arch, device=dev)
    model = wrapper.model.requires_grad_(True)
    clip_loss = ClipLoss(local_loss=False, gather_with_grad=True, rank=env.rank, world_size=env.world_size)

    def loss(net, batch, g):
        images, captions = batch
        image_f, text_f, scale = net(wrapper.preprocess_tensor(images, value_range=(-1.0, 1.0)),
                                     wrapper.tokenize(captions).to(dev))[:3]
        return clip_loss(image_f.float(), text_f.float(), scale.float())  # scalar (symmetric InfoNCE)

    def after_step(net):
        with torch.no_grad():  # CLIP clamps the learned temperature at 100
            net.logit_scale.clamp_(0, math.log(100))

    resolve_shards(cfg.data.val_shards or cfg.data.shards)  # a wrong path fails now, not after training

    def pipeline(rank, world, micro):
        return shard_pipeline(cfg.data.shards, batch_size=micro, partial_batches=False, fields=("image", "caption"),
                              size=wrapper.input_side, crop="random", min_size=cfg.data.min_image_size,
                              shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled, seed=cfg.seed,
                              rank=rank, world_size=world)

    def new_model():
        return FrozenCLIP.create(arch, device=dev).model

    def as_frozen(ema) -> FrozenCLIP:
        frozen = FrozenCLIP.create(arch, device=dev)
        frozen.model.load_state_dict(ema.state_dict())
        return frozen

    def evaluate(ema, g):
        r = evaluate_retrieval(as_frozen(ema), cfg.data.val_shards or cfg.data.shards, max_samples=512,
                               min_size=cfg.data.min_image_size)
        return Evaluation(metrics={f"clip/val_{k}": v for k, v in r.items()})

    def export(ema, out: Path) -> Path:
        return as_frozen(ema).save(out)

    return StageParts(model, loss, pipeline, new_model, evaluate, export, after_step=after_step,
                      describe=str(cfg.data.shards), info={"arch": arch})
