"""Moving host tensors to an accelerator without stalling the host.

A plain ``tensor.to("cuda")`` from pageable memory waits for the copy to finish, which waits for every
kernel queued before it: one host sync per call. Training and sampling draw their randomness and gather
their schedule coefficients on the host, so they go through ``to_device``, which copies from pinned
memory with ``non_blocking=True`` (PyTorch's pinned-memory cache keeps the buffer alive until the copy
is done). On the CPU, or for a tensor already on the device, it is ``tensor.to(device)``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_device(x: Tensor, device: torch.device | str) -> Tensor:
    """``x`` on ``device``; a CPU tensor bound for CUDA goes there by a non-blocking copy from pinned memory."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    return x.to(device)
