"""Fréchet distance between two feature sets, each summarised as a Gaussian (mean, covariance).

FD = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})   (Heusel et al. 2017; FD_CLIP over CLIP image
features, Kynkäänniemi et al. 2023). Σ1 Σ2 is not symmetric, so instead of a general matrix square
root we use tr((Σ1 Σ2)^{1/2}) = tr((Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}): the inner matrix is symmetric PSD
(same eigenvalues as Σ1 Σ2), so two float64 eigendecompositions with negative round-off clamped to 0
give the trace with no complex parts and no iterative solver.
"""
from __future__ import annotations

import torch


def _as64(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to("cpu", torch.float64)


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D], N ≥ 2."""
    f = _as64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats expects features [N, D] with N ≥ 2, got {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError("feature_stats: features contain NaN or inf")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition (negative round-off -> 0)."""
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((Σ1 Σ2)^{1/2}) for symmetric PSD Σ1, Σ2, via the symmetric form Σ1^{1/2} Σ2 Σ1^{1/2}."""
    s1, s2 = _as64(sigma1), _as64(sigma2)
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    return float(torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum())


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """FD between N(μ1, Σ1) and N(μ2, Σ2) (float64); ≥ 0 up to round-off, clamped at 0."""
    mu1, mu2, s1, s2 = (_as64(t) for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"frechet_distance: mismatched statistics shapes {tuple(mu1.shape)}, "
                         f"{tuple(s1.shape)} vs {tuple(mu2.shape)}, {tuple(s2.shape)}")
    diff = float(((mu1 - mu2) ** 2).sum())
    fd = diff + float(torch.trace(s1) + torch.trace(s2)) - 2.0 * trace_sqrt_product(s1, s2)
    return max(fd, 0.0)


def frechet_distance(features1, features2) -> float:
    """FD between two feature sets [N1, D] and [N2, D] (e.g. CLIP image embeddings: FD_CLIP)."""
    f1, f2 = _as64(features1), _as64(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"frechet_distance expects [N1, D] and [N2, D], got {tuple(f1.shape)} and {tuple(f2.shape)}")
    return frechet_distance_from_stats(*feature_stats(f1), *feature_stats(f2))
