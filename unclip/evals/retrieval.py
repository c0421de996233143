"""Zero-shot image↔caption retrieval of a CLIP on held-out shards: the clip stage's evaluation.

The metric math (top-1 over a similarity matrix) is ``unclip.metrics.retrieval_top1``; this reads the shards.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def evaluate_retrieval(clip, shards, *, max_samples: int = 512, batch_size: int = 128,
                       min_size: int | None = None) -> dict[str, float]:
    """Top-1 image↔caption retrieval of ``clip`` over the first ``max_samples`` samples of ``shards`` (images
    centre-cropped to the CLIP's input size; short sides under ``min_size``, default that size, skipped)."""
    from unclip.data.wds import shard_pipeline
    from unclip.metrics import retrieval_top1

    # rank 0 of 1: every shard, also when called on rank 0 of a DDP run
    pipeline = shard_pipeline(shards, batch_size=batch_size, fields=("image", "caption"), shuffle_shards=False,
                              size=clip.input_side, min_size=min_size, rank=0, world_size=1)
    image_embs, text_embs, seen = [], [], 0
    for images, captions in pipeline:
        image_embs.append(clip.encode_image(images, value_range=(-1.0, 1.0)))
        text_embs.append(clip.encode_text(list(captions))[0])
        seen += len(captions)
        if seen >= max_samples:
            break
    if not image_embs:
        raise ValueError(f"no samples could be read from {shards!r}")
    return retrieval_top1(torch.cat(image_embs)[:max_samples], torch.cat(text_embs)[:max_samples])
