"""Respacing: run a T-step diffusion on a subset of its steps, never touching the network.

Keeping steps τ_0 < … < τ_{N−1} and setting β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}} (ᾱ_{τ_{−1}} = 1) gives a
new N-step chain whose marginals q(x_{τ_k} | x0) are exactly the original ones (Nichol & Dhariwal
2021, §4), so a network trained on the T-step chain can denoise it at its original timestep ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPEC_HELP = ('an int N, a string "N" or "ddimN" or comma-separated section counts "10,15,20", '
             "or a list of distinct timesteps in [0, num_timesteps)")


def _bad(spec, why: str) -> ValueError:
    return ValueError(f"invalid timestep spec {spec!r}: {why}; expected {SPEC_HELP}")


def _even_in_section(start: int, size: int, count: int) -> list[int]:
    """`count` steps spread evenly over [start, start+size), both ends included (when count > 1)."""
    if count == 1:
        return [start]
    stride = (size - 1) / (count - 1)
    return [start + round(i * stride) for i in range(count)]


def _sections(num_timesteps: int, counts: list[int], spec) -> list[int]:
    """improved-diffusion's sections: split [0, T) into len(counts) near-equal parts (the first
    T mod len parts one step longer), then place counts[i] evenly spaced steps in part i."""
    n = len(counts)
    base, extra = divmod(num_timesteps, n)
    if base == 0:
        raise _bad(spec, f"{n} sections do not fit in {num_timesteps} steps")
    kept, start = [], 0
    for i, count in enumerate(counts):
        size = base + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise _bad(spec, f"section {i} has {size} steps and cannot keep {count}")
        kept += _even_in_section(start, size, count)
        start += size
    return kept


def _ddim(num_timesteps: int, count: int, spec) -> list[int]:
    """DDIM-style (Song et al. 2021): 0, k, 2k, … with the smallest integer stride k giving exactly
    `count` steps. t = 0 is always kept; the last kept step is (count−1)·k ≤ T−1 (not T−1 itself)."""
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    raise _bad(spec, f"no integer stride gives exactly {count} of {num_timesteps} steps; "
                     f"use \"{count}\" instead")


def _parse_int(text: str, spec) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _bad(spec, f"{text!r} is not an integer") from None


def space_timesteps(num_timesteps: int, spec) -> list[int]:
    """The sorted original timesteps to keep from a `num_timesteps`-step diffusion.

    int N or "N": N steps evenly spread over [0, T−1], both ends included.
    "ddimN":      stride-k steps 0, k, 2k, … (see `_ddim`); raises if no stride gives exactly N.
    "a,b,c":      improved-diffusion's sections (see `_sections`).
    list of ints: those steps, validated.
    """
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps={num_timesteps!r}: expected a positive int")
    if isinstance(spec, bool):
        raise _bad(spec, "a bool is not a step count")
    if isinstance(spec, (int, np.integer)):
        return _sections(num_timesteps, [int(spec)], spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("ddim"):
            count = _parse_int(text[len("ddim"):], spec)
            if not 1 <= count <= num_timesteps:
                raise _bad(spec, f"the count must be in [1, {num_timesteps}]")
            return _ddim(num_timesteps, count, spec)
        if not text:
            raise _bad(spec, "it is empty")
        return _sections(num_timesteps, [_parse_int(part, spec) for part in text.split(",")], spec)
    if isinstance(spec, (Sequence, np.ndarray)):
        steps = [s for s in spec]
        if not steps:
            raise _bad(spec, "the list is empty")
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in steps):
            raise _bad(spec, "every entry must be an int")
        steps = sorted(int(s) for s in steps)
        if steps[0] < 0 or steps[-1] >= num_timesteps:
            raise _bad(spec, f"entries must lie in [0, {num_timesteps})")
        if len(set(steps)) != len(steps):
            raise _bad(spec, "entries must be distinct")
        return steps
    raise _bad(spec, f"type {type(spec).__name__} is not supported")


def respace_betas(alphas_cumprod: np.ndarray, timesteps: Sequence[int]) -> np.ndarray:
    """β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}} with ᾱ_{τ_{−1}} = 1, so that the new chain's ᾱ are the old at τ."""
    kept = np.asarray(alphas_cumprod, dtype=np.float64)[np.asarray(timesteps, dtype=np.int64)]
    prev = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / prev
