"""Classifier-free guidance (Ho & Salimans 2021) as a wrapper around a denoiser."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .denoiser import Prediction

DenoiserFn = Callable[..., Prediction]


def _double(key: str, value, null, batch: int):
    """[value; null] along dim 0; a cond tensor with no null entry is shared by both halves."""
    if not isinstance(value, Tensor):
        if null is not None:
            raise ValueError(f"cond[{key!r}] is {type(value).__name__}: only tensors can have an uncond value")
        return value
    if null is None:
        null = value
    if not isinstance(null, Tensor) or null.shape[1:] != value.shape[1:] or null.shape[0] not in (1, batch):
        shape = getattr(null, "shape", type(null).__name__)
        raise ValueError(f"uncond[{key!r}] has shape {tuple(shape) if isinstance(shape, torch.Size) else shape}: "
                         f"expected a tensor of shape {(batch, *value.shape[1:])} or {(1, *value.shape[1:])}")
    return torch.cat([value, null.expand_as(value).to(value.device, value.dtype)])


def classifier_free_guidance(denoiser: DenoiserFn, scale: float | Tensor, uncond: Mapping[str, Tensor]) -> DenoiserFn:
    """A denoiser whose x0 and ε are  cond + (scale − 1)·(cond − uncond).

    Each call runs `denoiser` ONCE on the doubled batch [conditional; unconditional]: x_t, t and every
    cond tensor are concatenated with their `uncond` counterpart (a [1, …] null is broadcast over the
    batch; a cond tensor absent from `uncond` is repeated). x0 and ε are affine in each other at fixed
    x_t, so guiding both keeps them consistent; var_frac comes from the conditional half. Scale 1 gives
    exactly the conditional prediction; `scale` may be a float or a per-sample tensor [B].
    """
    unknown = set(uncond)

    def guided(x_t: Tensor, t: Tensor, **cond) -> Prediction:
        missing = unknown - set(cond)
        if missing:
            raise ValueError(f"uncond keys {sorted(missing)} are not in the call's cond keys {sorted(cond)}")
        batch = x_t.shape[0]
        both = {k: _double(k, v, uncond.get(k), batch) for k, v in cond.items()}
        pred = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), **both)
        # a float scale stays a host scalar (a 0-d CPU tensor): no host-to-device copy per call
        w = torch.as_tensor(scale, dtype=pred.x0.dtype, device=x_t.device if isinstance(scale, Tensor) else "cpu")
        if w.dim() > 0:
            if w.shape != (batch,):
                raise ValueError(f"scale has shape {tuple(w.shape)}: expected a float or a tensor of shape [{batch}]")
            w = w.reshape(-1, *([1] * (x_t.dim() - 1)))
        (x0_c, x0_u), (eps_c, eps_u) = pred.x0.chunk(2), pred.eps.chunk(2)
        var_frac = None if pred.var_frac is None else pred.var_frac.chunk(2)[0]
        return Prediction(x0=x0_c + (w - 1) * (x0_c - x0_u), eps=eps_c + (w - 1) * (eps_c - eps_u), var_frac=var_frac)

    return guided
