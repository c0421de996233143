"""Contrastive (CLIP) training of a small open_clip model on the embedded data.

unCLIP keeps CLIP frozen; no pretrained CLIP can be downloaded on our machines, so a tiny one is
trained here on `shapes` (Radford et al. 2021, symmetric InfoNCE via open_clip's ``ClipLoss``).
``train_clip_contrastive`` is the small standalone trainer (``tools/demo.py``); training jobs run the
``clip`` stage of the one loop (``unclip.training.stages.clip``), which reuses ``evaluate_retrieval``.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm


@dataclass
class ClipTrainConfig:
    steps: int = 600
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)  # CLIP paper's β2 for transformer stability
    eps: float = 1e-6
    warmup_steps: int = 50
    grad_clip: float = 1.0
    # bf16 autocast pays off for large matmuls (GPU, big presets); for the tiny CLIP on a CPU the casts
    # cost more than they save (measured ~3x slower), so fp32 is the default here.
    autocast_dtype: torch.dtype | None = None
    progress: bool = True


@dataclass
class ClipTrainResult:
    losses: list[float] = field(default_factory=list)
    skipped_nonfinite: int = 0


def cosine_lr(step: int, cfg: ClipTrainConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No decay on gains, biases, embeddings' scale (1-d tensors) and the logit scale.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_clip_contrastive(
    model: torch.nn.Module,
    tokenize: Callable[[list[str]], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, list[str]]],
    cfg: ClipTrainConfig,
) -> ClipTrainResult:
    """Train ``model`` (an open_clip CLIP) for ``cfg.steps`` steps on (images, captions) batches.

    ``images`` are already preprocessed for the model (resized and mean/std normalised);
    ``batches`` is cycled if it runs out. Returns per-step losses.
    """
    device = next(model.parameters()).device
    model.train()
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    loss_fn = ClipLoss()
    result = ClipTrainResult()
    stream = _cycle(batches)
    bar = tqdm(range(cfg.steps), desc="clip", disable=not cfg.progress, dynamic_ncols=True)
    for step in bar:
        images, captions = next(stream)
        images, tokens = images.to(device), tokenize(captions).to(device)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg)
        with _autocast(device, cfg.autocast_dtype):
            image_f, text_f, logit_scale = model(images, tokens)[:3]
            loss = loss_fn(image_f.float(), text_f.float(), logit_scale.float())
        if not torch.isfinite(loss):
            result.skipped_nonfinite += 1
            opt.zero_grad(set_to_none=True)
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():  # CLIP clamps the learned temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        result.losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return result


def _cycle(iterable: Iterable) -> Iterator:
    """Repeat a re-iterable batch source (a list, a DataLoader); a generator runs out once."""
    yielded = 0
    while True:
        before = yielded
        for item in iterable:
            yielded += 1
            yield item
        if yielded == before:
            raise ValueError(f"the batch source ran dry after {yielded} batches; give a re-iterable source "
                             "or one that yields at least cfg.steps batches")


def train_frozen_clip_on_shards(clip, shards, cfg: ClipTrainConfig, *, batch_size: int = 128, seed: int = 0,
                                num_workers: int = 1) -> ClipTrainResult:
    """Train the open_clip model inside a :class:`~unclip.clip.FrozenCLIP` on image/caption shards.

    The wrapper stays frozen for everyone else: its model is unfrozen for the duration of this call
    only. Shards are drawn with replacement (resampled), so ``cfg.steps`` bounds the run, not epochs.
    """
    from torch.utils.data import DataLoader

    from unclip.data.wds import shard_pipeline

    pipeline = shard_pipeline(shards, batch_size=batch_size, partial_batches=False, fields=("image", "caption"),
                              size=clip.input_side, crop="random", resampled=True, shuffle_buffer=1000, seed=seed)
    loader = DataLoader(pipeline, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0)

    def batches() -> Iterator[tuple[torch.Tensor, list[str]]]:
        for epoch in itertools.count():  # resampled shards give about one pass per epoch; reseed each
            pipeline.set_epoch(epoch)
            empty = True
            for images, captions in loader:
                empty = False
                yield clip.preprocess_tensor(images, value_range=(-1.0, 1.0)), list(captions)
            if empty:
                raise ValueError(f"no batch of {batch_size} could be read from {shards!r}")

    model = clip.model
    model.requires_grad_(True)
    try:
        return train_clip_contrastive(model, clip.tokenize, batches(), cfg)
    finally:
        model.requires_grad_(False)
        model.eval()


@torch.no_grad()
def evaluate_retrieval(clip, shards, *, max_samples: int = 512, batch_size: int = 128,
                       min_size: int | None = None) -> dict[str, float]:
    """Top-1 image↔caption retrieval of ``clip`` over the first ``max_samples`` samples of ``shards`` (images
    centre-cropped to the CLIP's input size; short sides under ``min_size``, default that size, skipped)."""
    from unclip.data.wds import shard_pipeline
    from unclip.metrics import retrieval_top1

    pipeline = shard_pipeline(shards, batch_size=batch_size, fields=("image", "caption"), shuffle_shards=False,
                              size=clip.input_side, min_size=min_size, rank=0, world_size=1)  # every shard, also when called on rank 0 of a DDP run
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
