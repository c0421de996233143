"""k-NN manifold estimates of precision, recall and per-sample realism (Kynkäänniemi et al. 2019).

Each set's manifold is the union of hyperspheres around its samples with radius the distance to
the sample's k-th nearest neighbour in the same set (k = 3 in the paper). Precision is the fraction
of generated samples inside the real manifold, recall the fraction of real samples inside the
generated one. The realism score of a generated φ_g is R = max_r NND_k(φ_r) / ‖φ_g − φ_r‖ (§5),
over the real samples whose radius is at most the median (the paper discards the half with the
largest radii so outliers cannot claim big regions); R ≥ 1 means inside the (pruned) real manifold.
"""
from __future__ import annotations

import torch


def _as64(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise ValueError(f"expected features [N, D], got {tuple(x.shape)}")
    return x


def _cdist(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    if not len(a):
        return a.new_zeros(0, len(b))
    return torch.cat([torch.cdist(a[i:i + chunk], b) for i in range(0, len(a), chunk)])


def knn_radii(features, k: int = 3) -> torch.Tensor:
    """Distance from each sample to its k-th nearest other sample in the same set [N] (needs N > k)."""
    f = _as64(features)
    if not 1 <= k < len(f):
        raise ValueError(f"knn_radii needs 1 ≤ k < N, got k={k} with N={len(f)} samples")
    d = _cdist(f, f)
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the sample itself (distance 0)


def precision_recall(real, fake, k: int = 3) -> dict[str, float]:
    """Improved precision and recall of `fake` [N, D] against `real` [M, D] with k-NN radii."""
    r, f = _as64(real), _as64(fake)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"precision_recall: feature sizes differ ({r.shape[1]} vs {f.shape[1]})")
    d = _cdist(f, r)  # [N_fake, N_real]
    precision = (d <= knn_radii(r, k)[None, :]).any(dim=1).double().mean()
    recall = (d <= knn_radii(f, k)[:, None]).any(dim=0).double().mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}


def realism_score(real, fake, k: int = 3, prune_quantile: float = 0.5, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample realism score [N_fake] of `fake` against `real` (≥ 1: inside the real manifold).

    Real hyperspheres with radius above the `prune_quantile` quantile of radii are discarded
    (0.5 as in the paper; 1.0 keeps all)."""
    r, f = _as64(real), _as64(fake)
    radii = knn_radii(r, k)
    keep = radii <= torch.quantile(radii, prune_quantile)
    d = _cdist(f, r[keep])
    return (radii[keep][None, :] / d.clamp_min(eps)).max(dim=1).values
