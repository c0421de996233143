"""Webdataset reader for precomputed CLIP embedding shards (``unclip.data.embeddings`` layout), for
training the prior. The same visible stages as ``wds.shard_pipeline``, reusing its pieces::

    shards -> epoch-seeded shard shuffle -> split by node -> split by worker
    -> tar -> samples (log-and-count handler) -> seeded sample shuffle
    -> decode .npy fields to tensors -> batch (stacked tensors + list of captions)

A batch is ``{"text_emb": [B, D] f32, "text_tokens": [B, L, W] f32, "text_mask": [B, L] bool,
"image_emb": [B, D] f32, "caption": list[str]}``.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .embeddings import ARRAY_FIELDS
from .position import Batched
from .wds import BadSample, LogAndCount, ShardPipeline, build_pipeline, resolve_shards


def decode_embedding_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Raw tar sample -> tensors; raises BadSample naming the key and shard on a missing/bad field."""
    key, url = sample.get("__key__"), sample.get("__url__")
    out: dict[str, Any] = {}
    try:
        for f in ARRAY_FIELDS:
            arr = np.load(io.BytesIO(sample[f"{f}.npy"]), allow_pickle=False)
            out[f] = torch.from_numpy(arr.astype(np.bool_ if f == "text_mask" else np.float32))
        out["caption"] = sample["txt"].decode("utf-8") if "txt" in sample else ""
    except Exception as exn:
        raise BadSample(f"embedding sample {key!r} in {url}: {type(exn).__name__}: {exn}") from exn
    return out


def collate_embeddings(samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {f: torch.stack([s[f] for s in samples]) for f in ARRAY_FIELDS}
    batch["caption"] = [s["caption"] for s in samples]
    return batch


def embedding_pipeline(
    shards: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    batch_size: int | None = None,
    partial_batches: bool = True,
    shuffle_shards: bool = True,
    shuffle_buffer: int = 0,
    resampled: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    handler: LogAndCount | None = None,
) -> ShardPipeline:
    """Embedding shards (a directory of ``*.tar``, pattern, glob or list) -> samples or batches."""
    tail = [Batched(batch_size, partial_batches, collate_embeddings) if batch_size else None]
    return build_pipeline(resolve_shards(shards), decode_embedding_sample, tail, shuffle_shards=shuffle_shards,
                          shuffle_buffer=shuffle_buffer, resampled=resampled, seed=seed, epoch=epoch, rank=rank,
                          world_size=world_size, handler=handler)
