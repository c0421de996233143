"""Pairwise judges between two systems on the same (prompt, seed) items.

Each judge compares two per-item records (`unclip.evals.scoring.score_items` rows) and says "A",
"B" or "tie"; `per_prompt` folds several seeds of one prompt into one verdict (mean of 1/½/0).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]


def _compare(a: Sequence[float], b: Sequence[float], tol: float = 1e-6) -> str:
    for x, y in zip(a, b):
        if x > y + tol:
            return "A"
        if y > x + tol:
            return "B"
    return "tie"


def caption_judge(a: Record, b: Record, clip_tol: float = 1e-3) -> str:
    """Oracle full match first, then the number of stated attributes right, then CLIP score."""
    key = [int(a["full_match"]) - int(b["full_match"]), a["n_correct"] - b["n_correct"]]
    if key[0] or key[1]:
        return _compare(key, [0, 0], 0.0)
    ca, cb = a.get("clip_score"), b.get("clip_score")
    if ca is None or cb is None:
        return "tie"
    return _compare([ca], [cb], clip_tol)


def realism_judge(a: Record, b: Record, rel_tol: float = 1e-6) -> str:
    """Higher realism score (Kynkäänniemi et al. 2019) against the real reference set wins."""
    ra, rb = a.get("realism"), b.get("realism")
    if ra is None or rb is None:
        return "tie"
    return _compare([ra], [rb], rel_tol * max(abs(ra), abs(rb), 1.0))


JUDGES: dict[str, Callable[[Record, Record], str]] = {"caption": caption_judge, "realism": realism_judge}


def per_prompt(keys: Sequence[tuple[str, int]], verdicts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(prompts, verdicts) with one verdict per prompt: A if A's mean item score (1 win, ½ tie) > ½."""
    score: dict[str, list[float]] = defaultdict(list)
    for (prompt, _), v in zip(keys, verdicts):
        score[prompt].append({"A": 1.0, "B": 0.0, "tie": 0.5}[v])
    prompts = list(score)
    out = []
    for p in prompts:
        m = sum(score[p]) / len(score[p])
        out.append("A" if m > 0.5 else "B" if m < 0.5 else "tie")
    return prompts, out
