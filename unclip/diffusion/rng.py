"""Per-sample randomness: with one generator per sample, sample i's noise comes from generator i
alone, so the same seed gives the same sample whatever the batch size or batch position."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from unclip.devices import to_device

Generators = torch.Generator | Sequence[torch.Generator] | None


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence): (call seed, image index) in the pipeline,
    (seed, rank, step, tag, ...) in the training loop — the same on resume. Distinct parts give distinct
    seeds, except that trailing zeros are dropped ((a, b, 0) is (a, b)): give a stream a non-zero tag."""
    state = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded torch.Generator per sample. CPU generators give the same numbers on every machine."""
    if isinstance(seeds, int) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds={seeds!r}: expected a sequence of ints, one per sample")
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def randn(shape: Sequence[int], generator: Generators = None, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> Tensor:
    """Standard normal noise of `shape`. `generator` is None (global RNG), one torch.Generator (drawn on
    its own device, then moved), or a sequence of shape[0] generators (row i from generator i only)."""
    shape = tuple(shape)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        return to_device(torch.randn(shape, generator=generator, device=generator.device, dtype=dtype), device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}: expected one per sample")
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator]
    return to_device(torch.stack(rows), device)


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    return randn(x.shape, generator, x.device, x.dtype)
