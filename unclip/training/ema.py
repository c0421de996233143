"""Exponential moving average of a model's parameters (buffers are copied), with warm-up.

Works on the live (possibly DDP- or FSDP2-wrapped) module: under FSDP2 the averages are DTensor
shards like the parameters themselves; ``full_state_dict`` gathers them (a collective: every rank
calls it) into plain tensors keyed like the unwrapped module's ``state_dict``.
"""
from __future__ import annotations

import torch
from torch import nn

from .dist import full_tensor, unwrap


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema.decay={decay}: expected a value in [0, 1)")
        self.decay, self.warmup = decay, warmup
        module = unwrap(model)
        self._params = dict(module.named_parameters())
        saved = set(module.state_dict())  # persistent buffers only (open_clip's attn_mask is not saved)
        self._buffers = {k: b for k, b in module.named_buffers() if k in saved}
        self.shadow = {k: p.detach().clone() for k, p in self._params.items()}

    def decay_at(self, step: int) -> float:
        """Decay used after optimizer step ``step`` (0-based); warm-up (1+t)/(10+t) as in EDM/ADM codebases."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = self.decay_at(step)
        shadow, params = list(self.shadow.values()), [p.detach() for p in self._params.values()]
        if all(type(t) is torch.Tensor for t in shadow):  # one fused call (FSDP2's DTensors: one by one)
            torch._foreach_lerp_(shadow, params, 1.0 - d)
        else:
            for s, p in zip(shadow, params):
                s.lerp_(p, 1.0 - d)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """EMA parameters + current buffers, full (gathered) tensors on the CPU."""
        out = {k: full_tensor(v).detach().cpu().clone() for k, v in self.shadow.items()}
        out.update({k: full_tensor(b).detach().cpu().clone() for k, b in self._buffers.items()})
        return out

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks parameters {missing[:5]}")
        for k, v in self.shadow.items():
            full = state[k]
            if hasattr(v, "device_mesh"):  # FSDP2 shard: re-distribute the full tensor like the parameter
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full.to(v.device_mesh.device_type), v.device_mesh, v.placements)
            v.copy_(full)
