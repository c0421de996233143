"""Activation checkpointing for one block (trade recompute for memory on the big presets)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint


def checkpoint(fn: Callable[..., Any], *args: Any, enabled: bool) -> Any:
    """``fn(*args)``, recomputed in backward when ``enabled`` and gradients are being recorded.

    Non-reentrant checkpointing: works with autocast, ``None`` arguments and inputs that do
    not require grad, and restores the RNG state so dropout matches between the two passes.
    """
    if enabled and torch.is_grad_enabled():
        return _torch_checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
