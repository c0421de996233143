"""Metric math shared by evals and training reports (no I/O, no files; models only as arguments).

* retrieval: `retrieval_top1`
* frechet: `feature_stats`, `frechet_distance`, `frechet_distance_from_stats`, `trace_sqrt_product`
  (FD over any features: FD_CLIP with CLIP image features, Kynkäänniemi et al. 2023)
* manifold: `knn_radii`, `precision_recall`, `realism_score` (Kynkäänniemi et al. 2019)
* clip_score: `clip_score` (100 · cos(z_i, z_t), clipped at 0)
* preference: `wilson_interval`, `win_rate`, `bradley_terry`, `bradley_terry_bootstrap`
"""
from unclip.metrics.clip_score import clip_score
from unclip.metrics.frechet import feature_stats, frechet_distance, frechet_distance_from_stats, trace_sqrt_product
from unclip.metrics.manifold import knn_radii, precision_recall, realism_score
from unclip.metrics.preference import (
    bradley_terry,
    bradley_terry_bootstrap,
    wilson_interval,
    win_rate,
)
from unclip.metrics.retrieval import retrieval_top1

__all__ = [
    "bradley_terry", "bradley_terry_bootstrap", "clip_score", "feature_stats", "frechet_distance",
    "frechet_distance_from_stats", "knn_radii", "precision_recall", "realism_score", "retrieval_top1",
    "trace_sqrt_product", "win_rate", "wilson_interval",
]
