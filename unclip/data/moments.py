"""Per-dimension mean and standard deviation of embeddings, accumulated in float64 over any number of chunks.

The one implementation behind the z_i statistics: embedding shards (``image_embedding_stats``),
clip-retrieval parts (``image_emb_stats``) and tensors in memory (``FrozenCLIP.compute_stats``).
"""
from __future__ import annotations

import numpy as np


class Moments:
    """Running count, sum and sum of squares of rows [N, D]; ``mean_std`` gives the unbiased std."""

    def __init__(self) -> None:
        self.n, self.sum, self.sum_sq = 0, 0.0, 0.0

    def add(self, rows) -> None:
        z = np.asarray(rows, dtype=np.float64)
        z = z.reshape(-1, z.shape[-1])  # [N, D]
        self.n += len(z)
        self.sum = self.sum + z.sum(0)
        self.sum_sq = self.sum_sq + (z * z).sum(0)

    def mean_std(self, source: str = "the data") -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) in float64, each [D]; at least 2 rows are needed."""
        if self.n < 2:
            raise ValueError(f"need at least 2 image embeddings for statistics, {source} has {self.n}")
        mean = self.sum / self.n
        var = np.maximum(self.sum_sq / self.n - mean * mean, 0.0) * self.n / (self.n - 1)
        return mean, np.sqrt(var)
