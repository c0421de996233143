"""The upsampler stages sr256 / sr1024 (§2.1): image shards at the target resolution; the low-res
input is the image downsampled by the stage's factor, then corrupted (sr256: Gaussian blur k=3
σ=0.6; sr1024: BSR degradation); training uses aligned random crops a quarter of the target size."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from unclip.data.corruptions import bsr_degradation, gaussian_blur
from unclip.data.wds import resolve_shards, shard_pipeline
from unclip.devices import to_device
from unclip.models import random_aligned_crop, sample_upsampler, save_stage
from unclip.models.sampling import StageSettings

from .base import Evaluation, StageParts
from .common import DiffusionObjective, cycle_first, stage_spec


def corrupt(low: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "blur":
        return gaussian_blur(low, 3, 0.6)
    if kind == "bsr":
        return bsr_degradation(low.cpu(), generator).to(low.device)
    if kind == "none":
        return low
    raise ValueError(f"stage.corruption={kind!r}: expected 'blur', 'bsr' or 'none'")


def downsample(high: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = high.shape[-2:]
    return F.interpolate(high, size=(h // scale, w // scale), mode="bicubic", antialias=True).clamp(-1, 1)


def build(cfg, env) -> StageParts:
    dev = env.device
    spec = stage_spec(cfg)
    f = spec.fields
    model = spec.build_model().to(dev)
    objective = DiffusionObjective(spec, cfg.stage.loss, cfg.stage.min_snr_gamma)
    res = cfg.data.resolution or f["image_size"]
    key = "image" if res == 64 else f"image_{res}"
    scale = f["image_size"] // f["low_res_size"]
    if res != f["image_size"]:
        raise ValueError(f"{cfg.stage.name}: data.resolution={res} but the preset's image_size is {f['image_size']}")

    def loss(net, batch, g):
        high = to_device(batch[0], dev)  # [B, 3, R, R]
        low = corrupt(downsample(high, scale), cfg.stage.corruption, g)  # [B, 3, R/s, R/s]
        high, low = random_aligned_crop(high, low, f["train_crop_size"], generator=g)
        return objective(net, high, {"low_res": low}, g)

    resolve_shards(cfg.data.val_shards or cfg.data.shards)  # a wrong path fails now, not after training

    def pipeline(rank, world, micro):
        return shard_pipeline(cfg.data.shards, batch_size=micro, partial_batches=False, fields=(key,),
                              resolutions=() if res == 64 else (res,), size=64 if res == 64 else None,
                              crop="random", min_size=cfg.data.min_image_size, shuffle_buffer=cfg.data.shuffle_buffer,
                              resampled=cfg.data.resampled, seed=cfg.seed, rank=rank, world_size=world)

    def evaluate(ema, g):
        val = shard_pipeline(cfg.data.val_shards or cfg.data.shards, batch_size=cfg.sample.n, fields=(key,),
                             resolutions=() if res == 64 else (res,), size=64 if res == 64 else None,
                             min_size=cfg.data.min_image_size, shuffle_shards=False, rank=0, world_size=1)
        high = cycle_first(val, cfg.sample.n)[0][0][:cfg.sample.n].to(dev)
        low = corrupt(downsample(high, scale), cfg.stage.corruption, torch.Generator().manual_seed(cfg.seed))
        out = sample_upsampler(ema, objective.diffusion, low, settings=StageSettings("ddim", cfg.sample.steps),
                               generator=g, mean_type=spec.mean_type)
        near = F.interpolate(low, scale_factor=scale, mode="nearest")
        return Evaluation(images=torch.cat([near.cpu(), out.cpu(), high.cpu()]), nrow=len(high))

    def export(ema, out: Path) -> Path:
        return save_stage(out, spec, ema)

    return StageParts(model, loss, pipeline, lambda: spec.build_model().to(dev), evaluate, export,
                      describe=str(cfg.data.shards))
