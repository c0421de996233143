"""Where each reading worker is inside its epoch, so that a resumed run skips what it consumed exactly.

Three stages of ``build_pipeline`` share one ``StreamPosition`` (each DataLoader worker holds its own
copy): ``CountShards`` after the shard source counts the shard URLs this worker pulled, ``TrackSamples``
after the tar reader (after the shuffle buffer when there is one) counts samples, and ``TagBatches``,
appended by ``ShardPipeline.tag_positions``, wraps each batch as ``Tagged(batch, worker, position)``,
the position after its last sample, and ends every worker's epoch with ``Tagged(None, worker, position)``.
That position is exact because no stage between them reads ahead: batches come from ``Batched``, which
yields a batch as soon as it is full (webdataset's ``batched`` waits for the next sample first).

A position is ``[k, j]``: k shards pulled, j samples of the k-th read. Resuming from it drops the first
k − 1 shard URLs unopened and the first j samples of the k-th before they are decoded. With a sample
shuffle buffer the order mixes shards, so the position is ``[r]``, r samples out of the buffer, and
resuming reads the tars up to there again but decodes none of them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
import webdataset as wds


class Tagged(NamedTuple):
    batch: Any  # None: this worker's epoch has ended
    worker: int
    position: list[int]


def worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


class StreamPosition:
    """One worker's counters for the current epoch and the position to resume from (``resume``:
    worker id -> position, set in the main process before the DataLoader iterator is made)."""

    def __init__(self, buffered: bool):
        self.buffered = buffered
        self.resume: dict[int, list[int]] = {}
        self.begin()

    def begin(self) -> None:
        """Zero the counters and load this worker's resume target (called as its epoch starts)."""
        self.worker = worker_id()
        self.shards = self.in_shard = self.samples = self._shard = 0
        target = self.resume.get(self.worker, [])
        if self.buffered:
            self.skip_samples, self.skip_shards, self.skip_in_shard = (target[0] if target else 0), 0, 0
        else:
            self.skip_samples = 0
            self.skip_shards, self.skip_in_shard = (target[0], target[1]) if target else (0, 0)

    def state(self) -> list[int]:
        return [self.samples] if self.buffered else [self.shards, self.in_shard]


class CountShards:
    """Counts shard URLs; on resume passes on none of the first k − 1 (they are never opened)."""

    def __init__(self, position: StreamPosition):
        self.position = position

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        p = self.position
        for url in src:
            p.shards += 1
            if p.shards < p.skip_shards:
                continue
            yield url


class TrackSamples:
    """Counts samples (per shard, or out of the shuffle buffer) and drops those a resumed run consumed."""

    def __init__(self, position: StreamPosition):
        self.position = position

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        p = self.position
        for sample in src:
            if p.buffered:
                p.samples += 1
                if p.samples <= p.skip_samples:
                    continue
            else:
                if p.shards != p._shard:
                    p._shard, p.in_shard = p.shards, 0
                p.in_shard += 1
                if p.shards == p.skip_shards and p.in_shard <= p.skip_in_shard:
                    continue
            yield sample


class Batched:
    """Collate every ``size`` samples into a batch and yield it at once (no look-ahead); the short last
    batch too when ``partial``."""

    def __init__(self, size: int, partial: bool = True, collate: Callable[[list], Any] | None = None):
        self.size, self.partial = size, partial
        self.collate = collate or wds.filters.default_collation_fn

    def __call__(self, src: Iterable[Any]) -> Iterator[Any]:
        batch: list = []
        for sample in src:
            batch.append(sample)
            if len(batch) == self.size:
                yield self.collate(batch)
                batch = []
        if batch and self.partial:
            yield self.collate(batch)


class TagBatches:
    """The last stage: every batch with its worker and the position after it, then an end marker."""

    def __init__(self, position: StreamPosition):
        self.position = position

    def __call__(self, src: Iterable[Any]) -> Iterator[Tagged]:
        p = self.position
        p.begin()
        for batch in src:
            yield Tagged(batch, p.worker, p.state())
        yield Tagged(None, p.worker, p.state())
