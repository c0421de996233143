"""Metric math against closed forms: FD, k-NN precision/recall/realism, Wilson, Bradley–Terry, CLIP score."""
import math

import numpy as np
import pytest
import torch

from unclip.metrics import (
    bradley_terry,
    bradley_terry_bootstrap,
    clip_score,
    frechet_distance,
    frechet_distance_from_stats,
    precision_recall,
    realism_score,
    retrieval_top1,
    trace_sqrt_product,
    wilson_interval,
    win_rate,
)


def test_fd_identical_sets_is_zero():
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_diagonal_gaussians_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.0])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * (v1 * v2).sqrt()).sum())  # 5 + 4 + 1 + 0
    assert frechet_distance_from_stats(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(10.0)


def test_fd_full_covariance_matches_commuting_closed_form_and_samples():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    d1, d2 = (torch.tensor([1.0, 2, 3, 4, 5], dtype=torch.float64),
              torch.tensor([2.0, 1, 1, 3, 0.5], dtype=torch.float64))
    s1, s2 = q @ torch.diag(d1) @ q.T, q @ torch.diag(d2) @ q.T  # commuting: tr sqrt = Σ sqrt(d1 d2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(float((d1 * d2).sqrt().sum()), rel=1e-10)
    # sample estimate converges to the closed form (rank-deficient inputs do not break the sqrt)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(20000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5]) + 1.0
    assert frechet_distance(a, b) == pytest.approx(3 + 4 + 1 + 0, abs=0.25)
    low_rank = (torch.randn(50, 2, generator=g, dtype=torch.float64)
                @ torch.randn(2, 8, generator=g, dtype=torch.float64))
    assert math.isfinite(frechet_distance(low_rank, low_rank + 0.1))


def test_precision_recall_and_realism():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    pr = precision_recall(real, real.clone(), k=3)
    assert pr["precision"] == pytest.approx(1.0) and pr["recall"] == pytest.approx(1.0)
    far = precision_recall(real, torch.randn(300, 8, generator=g) + 50.0, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # a collapsed generator: precise but with little recall
    collapsed = precision_recall(real, 0.05 * torch.randn(300, 8, generator=g), k=3)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3
    near, away = realism_score(real, torch.zeros(1, 8)), realism_score(real, torch.full((1, 8), 20.0))
    assert near.item() > 1.0 > away.item()
    with pytest.raises(ValueError, match="k < N"):
        precision_recall(real[:3], real[:3], k=3)


def test_wilson_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.490, 0.943), abs=5e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.404, 0.596), abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    wr = win_rate(["A"] * 7 + ["B"] * 1 + ["tie"] * 2)  # ties count as half: 8/10
    assert wr["rate"] == pytest.approx(0.8) and (wr["lo"], wr["hi"]) == pytest.approx((0.490, 0.943), abs=5e-4)
    with pytest.raises(ValueError, match="verdicts"):
        win_rate(["A", "C"])


def test_bradley_terry_recovers_strengths():
    rng = np.random.default_rng(0)
    true = np.array([0.0, 1.0, -0.5, 2.0])
    true -= true.mean()
    m = len(true)
    per_prompt = np.zeros((4000, m, m))
    for p in range(len(per_prompt)):
        for i in range(m):
            for j in range(i + 1, m):
                if rng.random() < 1 / (1 + math.exp(true[j] - true[i])):
                    per_prompt[p, i, j] = 1
                else:
                    per_prompt[p, j, i] = 1
    est = bradley_terry(per_prompt.sum(0))
    np.testing.assert_allclose(est, true, atol=0.06)
    bt = bradley_terry_bootstrap(per_prompt[:400], n_boot=100)
    assert np.all(bt["lo"] <= bt["score"]) and np.all(bt["score"] <= bt["hi"])
    assert bt["rank_first"].argmax() == 3 and np.argsort(bt["score"]).tolist() == [2, 0, 1, 3]


def test_clip_score_and_retrieval_still_importable():
    class FakeClip:
        def encode_image(self, images):
            return torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])

        def encode_text(self, captions):
            return torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]), None, None

    s = clip_score(FakeClip(), [None] * 3, ["a", "b", "c"])
    torch.testing.assert_close(s, torch.tensor([100.0, 100 / math.sqrt(2), 0.0]))
    assert retrieval_top1(torch.eye(2), torch.eye(2))["image_to_text"] == 1.0
