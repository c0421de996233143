"""The prior stage (§2.2): z_i denoised from (text tokens, z_t), trained on precomputed CLIP embeddings.

Loss: MSE on the unnoised (normalised) z_i; text dropped 10% for CFG. z_i is standardised with the
training data's statistics (``stage.normalizer=stats``) or the preset's fixed scale. The release
stores analytic-DPM Γ for ``stage.gamma_steps`` (paper: 64) in ``StageSpec.extra["analytic_gamma"]``.

Data (``data.format``): our embedding shards (``unclip.data.embeddings``: z_t, text tokens, z_i per
sample), or the output folder of ``clip-retrieval inference`` (``unclip.data.clip_retrieval``: z_i,
z_t and captions only). For the latter the stage loads the pipeline's CLIP (``clip.path``), refuses
data that CLIP did not make (dim, and stored z_t vs its encoding of the first captions), and computes
the per-token text features from the captions in the loss.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unclip.clip import FrozenCLIP
from unclip.data.clip_retrieval import (
    ClipRetrievalData,
    ClipRetrievalPipeline,
    first_rows,
    image_emb_stats,
    is_clip_retrieval_root,
    open_clip_retrieval,
)
from unclip.data.embedding_reader import collate_embeddings, embedding_pipeline
from unclip.data.embeddings import image_embedding_stats
from unclip.data.wds import resolve_shards
from unclip.devices import to_device
from unclip.models import prior_analytic_gamma, sample_drop_mask, sample_prior, save_stage
from unclip.models.conditioning import empty_caption
from unclip.models.sampling import StageSettings

from .base import Evaluation, StageParts
from .common import DiffusionObjective, load_clip, stage_spec

FORMATS = ("auto", "shards", "clip_retrieval")
CHECK_ROWS = 8  # clip-retrieval rows whose stored z_t is compared with the CLIP's encoding
MIN_COSINE = 0.99


# ---------------------------------------------------------------------------------------------- data


@dataclass
class _PriorData:
    """What the stage needs from its training data, whatever the format."""

    dims: dict[str, int]  # clip_embed_dim, clip_token_width, clip_context_length
    stats: Callable[[], tuple[np.ndarray, np.ndarray]]  # z_i mean, std
    pipeline: Callable[[int, int, int], Any]  # (rank, world, micro) -> batches
    text_features: Callable[[dict], tuple[torch.Tensor, torch.Tensor]]  # batch -> tokens [B, L, W], mask [B, L]


def _format(cfg, source) -> str:
    """'shards' or 'clip_retrieval' for ``source`` under ``data.format`` ('auto' looks at the folder)."""
    fmt = cfg.data.get("format", "auto")
    if fmt not in FORMATS:
        raise ValueError(f"data.format={fmt!r}: expected one of {FORMATS}")
    if fmt == "auto":
        return "clip_retrieval" if is_clip_retrieval_root(source) else "shards"
    return fmt


def _dims(shards) -> dict[str, int]:
    pipe = embedding_pipeline(shards, shuffle_shards=False, rank=0, world_size=1)
    first = next(iter(pipe), None)
    if first is None:
        raise ValueError(f"data.shards={shards}: no readable embedding sample ({pipe.failures} bad samples skipped); "
                         "expected shards written by `python -m unclip.data.precompute` (or clip-retrieval output)")
    return {"clip_embed_dim": int(first["image_emb"].shape[0]), "clip_token_width": int(first["text_tokens"].shape[1]),
            "clip_context_length": int(first["text_tokens"].shape[0])}


def _shard_data(cfg) -> _PriorData:
    """Embedding shards: the text tokens are stored with each sample."""
    shards = cfg.data.shards

    def pipeline(rank, world, micro):
        return embedding_pipeline(shards, batch_size=micro, partial_batches=False,
                                  shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled,
                                  seed=cfg.seed, rank=rank, world_size=world)

    return _PriorData(_dims(shards), lambda: image_embedding_stats(resolve_shards(shards)), pipeline,
                      lambda batch: (batch["text_tokens"], batch["text_mask"]))


def _open_checked(cfg, root, clip: FrozenCLIP) -> ClipRetrievalData:
    """Open clip-retrieval output at ``root`` and check ``clip`` made it: the same embedding dim, and
    stored z_t that agree with ``clip.encode_text`` of the captions on the first rows."""
    data = open_clip_retrieval(root, cfg.data.get("caption_column", "caption"))
    which = f"the CLIP of clip.path={cfg.clip.path} (arch {clip.arch!r})"
    if data.dim != clip.embed_dim:
        raise ValueError(f"embeddings at {root} have dim {data.dim} but {which} has embed_dim {clip.embed_dim}: "
                         "pass clip.path= the CLIP that clip-retrieval used")
    rows = first_rows(data, CHECK_ROWS)
    emb = clip.encode_text(rows["caption"])[0].cpu()
    cos = float((emb * rows["text_emb"]).sum(-1).mean())
    if not cos > MIN_COSINE:
        raise ValueError(f"embeddings at {root} were not made by this CLIP (arch {clip.arch!r}, clip.path="
                         f"{cfg.clip.path}): mean cosine {cos:.2f} between stored text_emb and clip.encode_text of "
                         f"their captions over the first {len(emb)} rows (expected > {MIN_COSINE}); pass clip.path= "
                         "the CLIP that clip-retrieval used, or data.caption_column= the column it encoded")
    return data


def _clip_retrieval_data(cfg, clip: FrozenCLIP) -> _PriorData:
    """clip-retrieval output: z_i and z_t stored, the text tokens computed from the captions by ``clip``."""
    if cfg.data.resampled:
        raise ValueError("data.resampled=true does not apply to clip-retrieval data: its rows are split exactly "
                         "across ranks × workers, whatever their number; set data.resampled=false")
    data = _open_checked(cfg, cfg.data.shards, clip)

    def pipeline(rank, world, micro):
        return ClipRetrievalPipeline(data, batch_size=micro, partial_batches=False,
                                     shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.seed, rank=rank,
                                     world_size=world)

    def text_features(batch):
        _, tokens, mask = clip.encode_text(batch["caption"])  # no grad: FrozenCLIP
        return tokens, mask

    dims = {"clip_embed_dim": clip.embed_dim, "clip_token_width": clip.token_width,
            "clip_context_length": clip.context_length}
    return _PriorData(dims, lambda: image_emb_stats(data), pipeline, text_features)


def _check_val(cfg, val, clip: Callable[[], FrozenCLIP]) -> None:
    """Fail now, not at export after training, on a wrong val path or val data another CLIP made."""
    if _format(cfg, val) == "clip_retrieval":
        _open_checked(cfg, val, clip())
    else:
        resolve_shards(val)


def _held_out(cfg, source, n: int, clip: Callable[[], FrozenCLIP]) -> dict:
    """The first ``n`` samples of ``source`` as one batch with text tokens (computed for clip-retrieval)."""
    if _format(cfg, source) == "clip_retrieval":
        batch = first_rows(open_clip_retrieval(source, cfg.data.get("caption_column", "caption")), n)
        _, tokens, mask = clip().encode_text(batch["caption"])
        return batch | {"text_tokens": tokens.cpu(), "text_mask": mask.cpu()}
    samples = []
    for s in embedding_pipeline(source, shuffle_shards=False, rank=0, world_size=1):
        samples.append(s)
        if len(samples) >= n:
            break
    return collate_embeddings(samples)


# ---------------------------------------------------------------------------------------------- stage


def build(cfg, env) -> StageParts:
    dev = env.device
    clip = functools.cache(lambda: load_clip(cfg, dev))  # loaded only when clip-retrieval data needs it
    fmt = _format(cfg, cfg.data.shards)
    data = _clip_retrieval_data(cfg, clip()) if fmt == "clip_retrieval" else _shard_data(cfg)
    spec = stage_spec(cfg, **data.dims)
    if spec.mean_type != "x0":  # sample_prior and the analytic-DPM Γ read the network as x0 (§2.2)
        raise ValueError(f"stage.mean_type={spec.mean_type!r}: the prior predicts x0 (Ramesh et al. 2022, §2.2); "
                         "set stage.mean_type=x0 or leave it unset")
    model = spec.build_model().to(dev)
    if spec.fields["text_null"] == "empty_caption" and not model.null_caption.is_set:
        model.null_caption.set(*empty_caption(clip()))  # a fresh Karlo-style prior: "" is its caption null
    info = {"dims": {k: v for k, v in spec.fields.items() if k.startswith("clip_")}, "data_format": fmt}
    if fmt == "clip_retrieval":
        info["clip"] = clip().arch
    if cfg.stage.normalizer == "stats":
        mean, std = data.stats()
        model.normalizer.set_stats(torch.from_numpy(mean), torch.from_numpy(std).clamp_min(1e-6))
        info["normalizer"] = "stats"
    elif cfg.stage.normalizer != "fixed":
        raise ValueError(f"stage.normalizer={cfg.stage.normalizer!r}: expected 'stats' or 'fixed'")
    normalizer = model.normalizer
    objective = DiffusionObjective(spec, cfg.stage.loss, cfg.stage.min_snr_gamma)
    p_drop = spec.fields["p_drop_text"]
    val = cfg.data.val_shards or cfg.data.shards
    _check_val(cfg, val, clip)

    def loss(net, batch, g):
        z = normalizer.normalize(to_device(batch["image_emb"], dev))  # [B, D]
        tokens, mask = data.text_features(batch)  # [B, L, W], [B, L]
        cond = {"text_emb": to_device(batch["text_emb"], dev), "text_tokens": to_device(tokens, dev),
                "text_mask": to_device(mask, dev),
                "drop_text": to_device(sample_drop_mask(z.shape[0], p_drop, g), dev)}
        return objective(net, z, cond, g)

    def new_model():
        m = spec.build_model().to(dev)
        m.normalizer.set_stats(normalizer.mean.cpu(), normalizer.std.cpu())
        return m

    def evaluate(ema, g):
        b = _held_out(cfg, val, cfg.sample.n, clip)
        grid = StageSettings("ddim", cfg.sample.steps, guidance_scale=cfg.sample.guidance_scale, n_candidates=2)
        z = sample_prior(ema, objective.diffusion, b["text_emb"].to(dev), b["text_tokens"].to(dev),
                         b["text_mask"].to(dev), settings=grid, mean_type=spec.mean_type, generator=g).cpu()
        true = b["image_emb"]
        zn = torch.nn.functional.normalize(z, dim=-1)
        sim = zn @ true.T  # [n, n]: does the sample land nearest its own caption's z_i?
        return Evaluation(metrics={
            "prior/cos_to_true_zi": float(torch.nn.functional.cosine_similarity(z, true).mean()),
            "prior/top1_true_zi": float((sim.argmax(1) == torch.arange(len(z))).float().mean()),
            "prior/zi_dot_zt": float((zn * b["text_emb"]).sum(-1).mean()),
            "prior/data_zi_dot_zt": float((true * b["text_emb"]).sum(-1).mean())})

    def export(ema, out: Path) -> Path:
        b = _held_out(cfg, val, cfg.stage.gamma_samples, clip)
        gamma = prior_analytic_gamma(ema, objective.diffusion, b["image_emb"].to(dev), b["text_emb"].to(dev),
                                     b["text_tokens"].to(dev), b["text_mask"].to(dev), steps=cfg.stage.gamma_steps,
                                     mean_type=spec.mean_type, generator=torch.Generator().manual_seed(cfg.seed))
        spec.extra = {"analytic_gamma": {str(cfg.stage.gamma_steps): [float(x) for x in gamma]},
                      "normalizer": cfg.stage.normalizer}
        return save_stage(out, spec, ema)

    return StageParts(model, loss, data.pipeline, new_model, evaluate, export, describe=str(cfg.data.shards),
                      info=info)
