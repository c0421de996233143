"""Pairwise preference statistics: win rates with Wilson intervals and Bradley–Terry rankings."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

Z95 = 1.959963984540054  # standard normal 97.5 % quantile


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); `successes` may be fractional
    (ties counted as half). n = 0 gives (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes={successes} outside [0, n={n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(outcomes: Iterable[str], z: float = Z95) -> dict[str, float]:
    """Win rate of A from per-prompt verdicts "A", "B" or "tie"; ties count as half a win.
    Returns wins, losses, ties, n, rate and the Wilson interval (lo, hi)."""
    outcomes = list(outcomes)
    bad = sorted({o for o in outcomes if o not in ("A", "B", "tie")})
    if bad:
        raise ValueError(f"win_rate: verdicts must be 'A', 'B' or 'tie', got {bad}")
    wins, losses = outcomes.count("A"), outcomes.count("B")
    ties, n = outcomes.count("tie"), len(outcomes)
    score = wins + 0.5 * ties
    lo, hi = wilson_interval(score, n, z)
    return {"wins": wins, "losses": losses, "ties": ties, "n": n,
            "rate": score / n if n else float("nan"), "lo": lo, "hi": hi}


def bradley_terry(wins: np.ndarray, prior: float = 0.1, iters: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Bradley–Terry log-strengths (mean 0) from a wins matrix W[i, j] = times i beat j (ties as ½ each).

    MM algorithm (Hunter 2004, eq. 3): p_i ← W_i / Σ_j n_ij / (p_i + p_j), renormalised to geometric
    mean 1. `prior` virtual wins are added to every off-diagonal pair (one virtual tie per 2·prior
    games) so a system that never wins keeps a finite strength. P(i beats j) = σ(s_i − s_j)."""
    w = np.asarray(wins, dtype=np.float64)
    m = w.shape[0]
    if w.shape != (m, m) or m < 2:
        raise ValueError(f"bradley_terry expects a square wins matrix of ≥ 2 systems, got {w.shape}")
    w = w + prior * (1 - np.eye(m))
    games = w + w.T
    total_wins = w.sum(1)
    p = np.ones(m)
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(1)
        new = np.where(denom > 0, total_wins / np.maximum(denom, 1e-300), p)
        new = np.maximum(new, 1e-300)
        new = new / np.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    s = np.log(p)
    return s - s.mean()


def bradley_terry_bootstrap(per_prompt_wins: np.ndarray, n_boot: int = 1000, seed: int = 0,
                            prior: float = 0.1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Bradley–Terry log-strengths with percentile bootstrap intervals over prompts.

    `per_prompt_wins` [P, S, S]: per prompt, W[i, j] = 1 if system i beat j, ½ for a tie. Prompts are
    resampled with replacement `n_boot` times. Returns ``score`` [S], ``lo`` [S], ``hi`` [S] and
    ``rank_first`` [S] (share of resamples in which each system ranks first)."""
    per = np.asarray(per_prompt_wins, dtype=np.float64)
    if per.ndim != 3 or per.shape[1] != per.shape[2]:
        raise ValueError(f"bradley_terry_bootstrap expects [P, S, S], got {per.shape}")
    score = bradley_terry(per.sum(0), prior)
    rng = np.random.default_rng(seed)
    boots = np.stack([bradley_terry(per[rng.integers(0, len(per), len(per))].sum(0), prior, iters=2000)
                      for _ in range(n_boot)]) if len(per) else np.zeros((1, per.shape[1]))
    a = (1 - level) / 2
    first = np.bincount(boots.argmax(1), minlength=per.shape[1]) / len(boots)
    return {"score": score, "lo": np.quantile(boots, a, axis=0), "hi": np.quantile(boots, 1 - a, axis=0),
            "rank_first": first}


def verdict_matrix(verdicts: Sequence[str]) -> np.ndarray:
    """Per-prompt verdicts A/B/tie of one pair -> [P, 2, 2] wins matrices for `bradley_terry_bootstrap`."""
    out = np.zeros((len(verdicts), 2, 2))
    for k, v in enumerate(verdicts):
        out[k, 0, 1], out[k, 1, 0] = {"A": (1, 0), "B": (0, 1), "tie": (0.5, 0.5)}[v]
    return out
