"""Agreement and interval math against published worked examples."""
from __future__ import annotations

import math

import pytest

from unclip.metrics.preference import wilson_interval
from unclip.studies.agreement import fleiss_kappa, krippendorff_alpha_nominal

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories -> κ = 0.210
WIKI_FLEISS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_wikipedia_example():
    assert fleiss_kappa(WIKI_FLEISS) == pytest.approx(0.2099, abs=5e-4)
    assert round(fleiss_kappa(WIKI_FLEISS), 3) == 0.210


def _counts(units: list[list[int | None]], categories: list[int]) -> list[list[int]]:
    return [[sum(v == c for v in u) for c in categories] for u in units]


def test_krippendorff_alpha_nominal_worked_example():
    # Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", example C: 4 observers,
    # 12 units, missing values; nominal α = 0.743
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    c = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    units = [[x for x in col if x is not None] for col in zip(a, b, c, d)]
    assert krippendorff_alpha_nominal(_counts(units, [1, 2, 3, 4, 5])) == pytest.approx(0.743, abs=5e-4)


def test_agreement_edge_cases():
    perfect = [[3, 0, 0], [0, 3, 0], [0, 0, 3]]
    assert fleiss_kappa(perfect) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal(perfect) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[1, 0, 0], [0, 1, 0]]))  # nobody rated twice
    assert math.isnan(krippendorff_alpha_nominal([[2, 0], [3, 0]]))  # one category only
    # variable raters per item: single-rated items are ignored
    assert fleiss_kappa([[2, 0], [0, 2], [1, 0]]) == pytest.approx(fleiss_kappa([[2, 0], [0, 2]]))
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [1, 1, 0]])


def test_wilson_reused_from_evals():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
