"""The prior stage (§2.2): z_i denoised from (text tokens, z_t), trained on precomputed embedding shards.

Loss: MSE on the unnoised (normalised) z_i; text dropped 10% for CFG. z_i is standardised with the
training shards' statistics (``stage.normalizer=stats``) or the preset's fixed scale. The release
stores analytic-DPM Γ for ``stage.gamma_steps`` (paper: 64) in ``StageSpec.extra["analytic_gamma"]``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from unclip.data.embedding_reader import collate_embeddings, embedding_pipeline
from unclip.data.embeddings import image_embedding_stats
from unclip.data.wds import resolve_shards
from unclip.models import prior_analytic_gamma, sample_drop_mask, sample_prior, save_stage

from .base import Evaluation, StageParts
from .common import DiffusionObjective, stage_spec


def _dims(shards) -> dict[str, int]:
    first = next(iter(embedding_pipeline(shards, shuffle_shards=False, rank=0, world_size=1)))
    return {"clip_embed_dim": int(first["image_emb"].shape[0]), "clip_token_width": int(first["text_tokens"].shape[1]),
            "clip_context_length": int(first["text_tokens"].shape[0])}


def _held_out(shards, n: int) -> dict:
    samples = []
    for s in embedding_pipeline(shards, shuffle_shards=False, rank=0, world_size=1):
        samples.append(s)
        if len(samples) >= n:
            break
    return collate_embeddings(samples)


def build(cfg, env) -> StageParts:
    dev = env.device
    spec = stage_spec(cfg, **_dims(cfg.data.shards))
    if spec.mean_type != "x0":  # sample_prior and the analytic-DPM Γ read the network as x0 (§2.2)
        raise ValueError(f"stage.mean_type={spec.mean_type!r}: the prior predicts x0 (Ramesh et al. 2022, §2.2); "
                         "set stage.mean_type=x0 or leave it unset")
    model = spec.build_model().to(dev)
    info = {"dims": {k: v for k, v in spec.fields.items() if k.startswith("clip_")}}
    if cfg.stage.normalizer == "stats":
        mean, std = image_embedding_stats(resolve_shards(cfg.data.shards))
        model.normalizer.set_stats(torch.from_numpy(mean), torch.from_numpy(std).clamp_min(1e-6))
        info["normalizer"] = "stats"
    elif cfg.stage.normalizer != "fixed":
        raise ValueError(f"stage.normalizer={cfg.stage.normalizer!r}: expected 'stats' or 'fixed'")
    normalizer = model.normalizer
    objective = DiffusionObjective(spec, cfg.stage.loss, cfg.stage.min_snr_gamma)
    p_drop = spec.fields["p_drop_text"]
    val = cfg.data.val_shards or cfg.data.shards
    resolve_shards(val)  # a wrong path fails now, not at export after training

    def loss(net, batch, g):
        z = normalizer.normalize(batch["image_emb"].to(dev))  # [B, D]
        cond = {"text_emb": batch["text_emb"].to(dev), "text_tokens": batch["text_tokens"].to(dev),
                "text_mask": batch["text_mask"].to(dev), "drop_text": sample_drop_mask(z.shape[0], p_drop, g).to(dev)}
        return objective(net, z, cond, g)

    def pipeline(rank, world, micro):
        return embedding_pipeline(cfg.data.shards, batch_size=micro, partial_batches=False,
                                  shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled,
                                  seed=cfg.seed, rank=rank, world_size=world)

    def new_model():
        m = spec.build_model().to(dev)
        m.normalizer.set_stats(normalizer.mean.cpu(), normalizer.std.cpu())
        return m

    def evaluate(ema, g):
        b = _held_out(val, cfg.sample.n)
        z = sample_prior(ema, objective.diffusion, b["text_emb"].to(dev), b["text_tokens"].to(dev),
                         b["text_mask"].to(dev), steps=cfg.sample.steps, sampler="ddim",
                         guidance_scale=cfg.sample.guidance_scale, generator=g).cpu()
        true = b["image_emb"]
        zn = torch.nn.functional.normalize(z, dim=-1)
        sim = zn @ true.T  # [n, n]: does the sample land nearest its own caption's z_i?
        return Evaluation(metrics={
            "prior/cos_to_true_zi": float(torch.nn.functional.cosine_similarity(z, true).mean()),
            "prior/top1_true_zi": float((sim.argmax(1) == torch.arange(len(z))).float().mean()),
            "prior/zi_dot_zt": float((zn * b["text_emb"]).sum(-1).mean()),
            "prior/data_zi_dot_zt": float((true * b["text_emb"]).sum(-1).mean())})

    def export(ema, out: Path) -> Path:
        b = _held_out(val, cfg.stage.gamma_samples)
        gamma = prior_analytic_gamma(ema, objective.diffusion, b["image_emb"].to(dev), b["text_emb"].to(dev),
                                     b["text_tokens"].to(dev), b["text_mask"].to(dev), steps=cfg.stage.gamma_steps,
                                     generator=torch.Generator().manual_seed(cfg.seed))
        spec.extra = {"analytic_gamma": {str(cfg.stage.gamma_steps): [float(x) for x in gamma]},
                      "normalizer": cfg.stage.normalizer}
        return save_stage(out, spec, ema)

    return StageParts(model, loss, pipeline, new_model, evaluate, export, describe=str(cfg.data.shards), info=info)
