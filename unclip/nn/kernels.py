"""Which kernel computes attention and GroupNorm on the CPU in bfloat16: a fixed rule, not a timing.

PyTorch's CPU bfloat16 kernels are slower than its float32 kernels on the same values in three places
(bench/cpu_kernels.py, results/cpu_kernels.json, 2-core Xeon):
  - the backward of ``scaled_dot_product_attention`` for short sequences (queries x keys < 2^19: 1.4-3x;
    at 1024 x 1029 the bfloat16 kernel is as fast or faster);
  - the backward of ``group_norm`` on channels-last maps (1.5-2.9x at every size measured);
  - the forward of ``group_norm`` on channels-last maps of at most 16 x 16 positions (2-4x; at 32 x 32 and
    above bfloat16 is 2-10x faster).
There ``attention`` and ``GroupNorm32`` compute in float32 and round the output to bfloat16 once; elsewhere
they call the bfloat16 kernel. GroupNorm's bfloat16 kernel also computes in float32 and rounds once (its
values differ by at most a bfloat16 step from the float32 path's); attention's rounding inside the op
differs in the last bits.

The rule reads only (device, dtype, shape, layout, grad mode), never a timing, so two runs with the same
seed compute the same numbers. ``kernel_policy("native")`` turns it off (every op in its input dtype), for
A/B measurements and for checking that both paths agree. It is a process-wide switch read when an op
runs: keep ``backward()`` inside the block too, as activation checkpointing recomputes forwards there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

POLICIES = ("auto", "native")
_policy = "auto"


@contextlib.contextmanager
def kernel_policy(policy: str) -> Iterator[None]:
    """Within the block: ``auto`` (the rule above) or ``native`` (every op in its input dtype)."""
    global _policy
    if policy not in POLICIES:
        raise ValueError(f"kernel_policy({policy!r}): expected one of {POLICIES}")
    before, _policy = _policy, policy
    try:
        yield
    finally:
        _policy = before


def _recording(x: torch.Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


def _cpu_bf16(x: torch.Tensor) -> bool:
    return _policy == "auto" and x.dtype == torch.bfloat16 and x.device.type == "cpu"


def attention_in_float32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None) -> bool:
    """CPU bfloat16 attention whose backward will run (through q, k or v), over fewer than 2^19 query-key
    pairs per head."""
    recording = any(_recording(z) for z in (q, k, v) if z is not None)
    return _cpu_bf16(q) and recording and q.shape[-2] * k.shape[-2] < 2**19


def group_norm_in_float32(x: torch.Tensor) -> bool:
    """CPU bfloat16 GroupNorm on a channels-last map: while autograd records, or at most 16 x 16 positions."""
    if not (_cpu_bf16(x) and x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return False
    return _recording(x) or x.shape[2] * x.shape[3] <= 256


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` [B, heads, L, d] (bool ``mask``: True = may attend), in float32
    when ``attention_in_float32`` says so (autocast is paused there, as it would cast the inputs back)."""
    if not attention_in_float32(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)
    return out.to(q.dtype)
