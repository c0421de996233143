"""Moving host tensors to an accelerator without stalling the host.

A plain ``tensor.to("cuda")`` from pageable memory waits for the copy to finish, which waits for every
kernel queued before it: one host sync per call. Training and sampling draw their randomness and gather
their schedule coefficients on the host, so they go through ``to_device``, which copies from pinned
memory with ``non_blocking=True`` (PyTorch's pinned-memory cache keeps the buffer alive until the copy
is done). PyTorch's data-less ``meta`` device takes the same non-blocking path, so tests can tell these
copies from blocking ones without a GPU. Elsewhere (the CPU, MPS, a tensor already on the device) it is
``tensor.to(device)``. Pass a pinned tensor only if nothing writes to it until the copy is done.
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_device(x: Tensor, device: torch.device | str | None) -> Tensor:
    """``x`` on ``device`` (None: where it is); a CPU tensor bound for CUDA goes there by a non-blocking copy
    from pinned memory."""
    if device is None:
        return x
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    if device.type == "meta" and x.device.type == "cpu":
        return x.to(device, non_blocking=True)
    return x.to(device)
