"""What a stage hands the one training loop: (model, loss, batch source, sample-grid/eval fn, export)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unclip.data.wds import ShardPipeline


@dataclass
class Evaluation:
    images: torch.Tensor | None = None  # [N, 3, H, W] in [−1, 1], saved as a PNG grid
    nrow: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class StageParts:
    """``loss(model, batch, generator)`` returns per-sample losses [B] (or a scalar) for the live,
    possibly wrapped, model; ``generator`` is the step's CPU generator (timesteps, noise, CFG drops,
    crops, corruptions). ``new_model()`` builds a plain copy for EMA weights, used by ``evaluate``
    (rank 0, returns images and/or metrics) and ``export`` (writes ``<dir>`` and returns it)."""

    model: nn.Module
    loss: Callable[[nn.Module, Any, torch.Generator], torch.Tensor]
    pipeline: Callable[[int, int, int], ShardPipeline]  # (rank, world, micro_batch) -> pipeline
    new_model: Callable[[], nn.Module]
    evaluate: Callable[[nn.Module, torch.Generator], Evaluation] | None
    export: Callable[[nn.Module, Path], Path]
    after_step: Callable[[nn.Module], None] | None = None
    describe: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # resolved facts logged with the config (dims, stats)
