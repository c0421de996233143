"""The 64-px decoder stage (§2.1): images + captions, z_i and caption features from the frozen CLIP
computed on the fly. z_i dropped 10% and the caption 50% (CFG); hybrid loss for learned σ; the
inpainting variant draws a random mask per sample (GLIDE §4.3)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from unclip.data import shapes as S
from unclip.data.wds import resolve_shards, shard_pipeline
from unclip.devices import to_device
from unclip.evals.conditioning import caption_match_rates, conditioning_gain, decoder_probes, derangement, flatten_gain
from unclip.models import random_inpaint_mask, sample_decoder, sample_drop_mask, save_stage
from unclip.models.conditioning import empty_caption
from unclip.models.sampling import StageSettings
from unclip.pipeline.images import to_pil

from .base import Evaluation, StageParts
from .common import DiffusionObjective, load_clip, stage_spec

log = logging.getLogger(__name__)


def build(cfg, env) -> StageParts:
    dev = env.device
    clip = load_clip(cfg, dev)
    spec = stage_spec(cfg, clip_embed_dim=clip.embed_dim, clip_token_width=clip.token_width,
                      clip_context_length=clip.context_length)
    f = spec.fields
    model = spec.build_model().to(dev)
    objective = DiffusionObjective(spec, cfg.stage.loss, cfg.stage.min_snr_gamma)
    size, ids = f["image_size"], f["text_source"] == "ids"

    reads_zt = f.get("text_time") == "clip_embedding"
    if f.get("text_null") == "empty_caption" and not model.null_caption.is_set:
        model.null_caption.set(*empty_caption(clip))  # a fresh Karlo-style decoder: "" is its caption null

    @torch.no_grad()
    def condition(images, captions):
        z = clip.encode_image(to_device(images, dev), value_range=(-1.0, 1.0))  # [B, D]
        if ids:
            tokens = to_device(clip.tokenize(captions), dev)  # [B, L] ids; 0 pads
            return z, tokens, tokens != 0, None
        zt, tokens, mask = clip.encode_text(captions)  # [B, D], [B, L, W], [B, L]
        return z, tokens, mask, (zt if reads_zt else None)

    def loss(net, batch, g):
        images, captions = batch
        x0 = to_device(images, dev)
        if x0.shape[-1] != size:
            raise ValueError(f"decoder: shards hold {x0.shape[-1]}-px images, the {cfg.model.preset} decoder "
                             f"expects {size}")
        z, tokens, mask, zt = condition(x0, captions)
        b = x0.shape[0]
        cond = {"image_emb": z, "text_tokens": tokens, "text_mask": mask,
                "drop_image": to_device(sample_drop_mask(b, f["p_drop_image"], g), dev),
                "drop_text": to_device(sample_drop_mask(b, f["p_drop_text"], g), dev)}
        if zt is not None:
            cond["text_emb"] = zt
        if f["inpaint"]:
            m = random_inpaint_mask(b, size, generator=g, device=dev)
            cond.update(masked_image=x0 * m, mask=m)
        return objective(net, x0, cond, g)

    resolve_shards(cfg.data.val_shards or cfg.data.shards)  # a wrong path fails now, not after training

    def pipeline(rank, world, micro):
        return shard_pipeline(cfg.data.shards, batch_size=micro, partial_batches=False, fields=("image", "caption"),
                              size=size, crop="random", min_size=cfg.data.min_image_size,
                              shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled, seed=cfg.seed,
                              rank=rank, world_size=world)

    bad_t = [t for t in cfg.sample.gain_timesteps if not 0 <= int(t) < cfg.stage.num_timesteps]
    if bad_t:  # fail now, not at the first evaluation after minutes of training
        raise ValueError(f"sample.gain_timesteps {bad_t}: expected steps in [0, stage.num_timesteps="
                         f"{cfg.stage.num_timesteps})")
    probe_batches = _ProbeBatches(cfg, size, instrument=not f["inpaint"])

    def evaluate(ema, g):
        images, captions, _ = probe_batches.grid()
        z, tokens, mask, zt = condition(images, captions)
        kw = {}
        if f["inpaint"]:  # show inpainting of a fixed mask
            m = random_inpaint_mask(len(captions), size, generator=torch.Generator().manual_seed(cfg.seed), device=dev)
            kw = {"known": images.to(dev) * m, "keep": m}
        grid = StageSettings("ddpm", cfg.sample.steps, guidance_scale=cfg.sample.guidance_scale)  # §2.1's sampler
        out = sample_decoder(ema, objective.diffusion, z, tokens, mask, settings=grid, generator=g,
                             mean_type=spec.mean_type, text_emb=zt, **kw)
        metrics = {} if f["inpaint"] else _learning_metrics(cfg, ema, spec, objective.diffusion, condition,
                                                            probe_batches, g)
        return Evaluation(images=torch.cat([images.cpu(), out.cpu()]), nrow=len(captions), metrics=metrics)

    def export(ema, out: Path) -> Path:
        return save_stage(out, spec, ema)

    return StageParts(model, loss, pipeline, lambda: spec.build_model().to(dev), evaluate, export,
                      describe=str(cfg.data.shards), info={"clip": clip.arch})


class _ProbeBatches:
    """Fixed validation samples (read once, on first use): the grid's first ``sample.n``, the conditioning-gain
    batch (``sample.gain_n``, with each scene's object coverage) and the one-object prompts of the oracle match
    (``sample.match_n``). Reads at most a few times what it needs (never a whole training set)."""

    def __init__(self, cfg, size: int, instrument: bool = True):
        self.cfg, self.size, self.instrument, self._rows = cfg, size, instrument, None

    def _load(self) -> list[tuple]:
        if self._rows is None:
            c = self.cfg.sample
            want = max(c.n, c.gain_n, c.match_n) if self.instrument else c.n
            limit = 4 * max(want, 1)  # enough for match_n one-object scenes at shapes' 50%, bounded otherwise
            val = shard_pipeline(self.cfg.data.val_shards or self.cfg.data.shards, batch_size=max(want, 1),
                                 fields=("image", "caption", "scene"), size=self.size,
                                 min_size=self.cfg.data.min_image_size,
                                 shuffle_shards=False, rank=0, world_size=1)
            rows, ones = [], 0
            for images, captions, scenes in val:
                for x, cap, sc in zip(images, captions, scenes):
                    scene = _shapes_scene(sc)
                    ones += scene is not None and len(scene.objects) == 1
                    rows.append((x, cap, scene))
                if len(rows) >= limit or (len(rows) >= want and (ones >= c.match_n or not self.instrument)):
                    break
            if not rows:
                raise ValueError("the validation shards hold no samples")
            self._rows = rows
        return self._rows

    def grid(self):
        rows = self._load()[:self.cfg.sample.n]
        return torch.stack([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows]

    def gain(self):
        rows = self._load()[:self.cfg.sample.gain_n]
        if len(rows) < 2:
            log.warning("conditioning gain skipped: fewer than 2 validation samples")
            return None
        size, region = rows[0][0].shape[-1], None
        if all(r[2] is not None for r in rows):  # shapes scenes: also measure over the object's region
            region = torch.stack([torch.from_numpy(S.object_mask(r[2], size)) for r in rows])[:, None]  # [B,1,H,W]
        return torch.stack([r[0] for r in rows]), [r[1] for r in rows], region

    def match(self):
        rows = [r for r in self._load() if r[2] is not None and len(r[2].objects) == 1][:self.cfg.sample.match_n]
        if not rows:
            log.warning("oracle match skipped: the caption-match oracle reads shapes scenes only, and the validation "
                        "shards hold no one-object shapes scene")
            return None
        return torch.stack([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows]


def _shapes_scene(meta) -> S.Scene | None:
    """The shapes scene of a sample's json member, or None (real data: img2dataset's metadata, or no json)."""
    if not isinstance(meta, dict) or "objects" not in meta:
        return None
    try:
        return S.Scene.from_dict(meta)
    except (KeyError, TypeError, ValueError):
        return None


def _learning_metrics(cfg, ema, spec, diffusion, condition, batches: _ProbeBatches, g) -> dict[str, float]:
    """The learning instrument on the EMA weights: conditioning gain of z_i and of the caption (whole image and
    object region), and the oracle caption match of samples from the true z_i + caption of one-object val scenes."""
    metrics: dict[str, float] = {}
    dev = next(ema.parameters()).device
    gain = batches.gain() if cfg.sample.gain_n > 1 else None
    if gain is not None:
        images, captions, region = gain
        z, tokens, mask, zt = condition(images, captions)
        perm = derangement(len(captions), torch.Generator().manual_seed(cfg.seed))
        probes = decoder_probes(z, tokens, mask, perm, text_emb=zt)
        result = conditioning_gain(spec.denoiser(ema), diffusion, images.to(dev), probes,
                                   timesteps=list(cfg.sample.gain_timesteps),
                                   region=None if region is None else region.to(dev),
                                   generator=torch.Generator().manual_seed(cfg.seed + 1))
        metrics.update(flatten_gain(result))
    match = batches.match() if cfg.sample.match_n > 0 else None
    if match is not None:
        images, captions, scenes = match
        z, tokens, mask, zt = condition(images, captions)
        out = sample_decoder(ema, diffusion, z, tokens, mask, text_emb=zt, mean_type=spec.mean_type,
                             settings=StageSettings("ddpm", cfg.sample.steps, guidance_scale=cfg.sample.match_guidance),
                             generator=torch.Generator().manual_seed(cfg.seed + 2))
        metrics.update(caption_match_rates(to_pil(out), scenes, captions))
    return metrics
