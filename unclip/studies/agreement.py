"""Inter-rater agreement for nominal answers: Fleiss' κ and Krippendorff's α.

Both take per-item category counts (how many raters put item i in category j), so the order of
raters does not matter; items rated fewer than twice carry no agreement information and are dropped.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def _clean(counts: Sequence[Sequence[int]]) -> list[list[int]]:
    rows = [list(map(int, r)) for r in counts]
    if rows and len({len(r) for r in rows}) != 1:
        raise ValueError("every item needs a count for every category (rows of equal length)")
    if any(c < 0 for r in rows for c in r):
        raise ValueError("category counts must be non-negative")
    return [r for r in rows if sum(r) >= 2]


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' κ (Fleiss 1971) over ``counts[item][category]``.

    With a varying number of raters per item, each item's agreement P_i uses its own n_i and the
    category shares p_j pool all ratings (the usual generalisation; equal n_i gives Fleiss' formula).
    Returns NaN when there are no items rated twice or chance agreement is 1 (a single category used).
    """
    rows = _clean(counts)
    if not rows:
        return math.nan
    total = sum(sum(r) for r in rows)
    p_bar = sum((sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows) / len(rows)
    p_j = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(counts: Sequence[Sequence[int]]) -> float:
    """Krippendorff's α for nominal data: α = 1 − D_o / D_e from the coincidence matrix.

    o_ck = Σ_u n_uc (n_uk − [c = k]) / (m_u − 1) over units u with m_u ≥ 2 values;
    α = 1 − (n − 1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k (Krippendorff 2011, "Computing Krippendorff's alpha").
    NaN when fewer than two pairable values or only one category occurs.
    """
    rows = _clean(counts)
    if not rows:
        return math.nan
    k = len(rows[0])
    o = [[0.0] * k for _ in range(k)]
    for r in rows:
        m = sum(r)
        for c in range(k):
            for d in range(k):
                o[c][d] += r[c] * (r[d] - (c == d)) / (m - 1)
    n_c = [sum(o[c]) for c in range(k)]
    n = sum(n_c)
    disagree_obs = sum(o[c][d] for c in range(k) for d in range(k) if c != d)
    disagree_exp = sum(n_c[c] * n_c[d] for c in range(k) for d in range(k) if c != d)
    if disagree_exp == 0:
        return math.nan
    return 1.0 - (n - 1) * disagree_obs / disagree_exp
