"""Where each reading worker is inside its epoch, so that a resumed run skips what it consumed exactly.

Three stages of ``build_pipeline`` are methods of one ``StreamPosition`` (each DataLoader worker holds its
own copy): ``count_shards`` after the shard source counts the shard URLs this worker pulled,
``count_samples`` after the tar reader (after the shuffle buffer when there is one) counts samples, and
``tag_batches``, appended by ``ShardPipeline.tag_positions``, wraps each batch as ``Tagged(batch, worker,
position)``, the position after its last sample, and ends every worker's epoch with ``Tagged(None, worker,
position)`` (``tag``, which the clip-retrieval reader uses too).
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

    def count_shards(self, src: Iterable[dict]) -> Iterator[dict]:
        """Stage: count shard URLs; on resume pass on none of the first k − 1 (they are never opened)."""
        for url in src:
            self.shards += 1
            if self.shards >= self.skip_shards:
                yield url

    def count_samples(self, src: Iterable[dict]) -> Iterator[dict]:
        """Stage: count samples (per shard, or out of the shuffle buffer); drop those a resumed run consumed."""
        for sample in src:
            if self.buffered:
                self.samples += 1
                consumed = self.samples <= self.skip_samples
            else:
                if self.shards != self._shard:
                    self._shard, self.in_shard = self.shards, 0
                self.in_shard += 1
                consumed = self.shards == self.skip_shards and self.in_shard <= self.skip_in_shard
            if not consumed:
                yield sample

    def tag_batches(self, src: Iterable[Any]) -> Iterator[Tagged]:
        """The last stage: every batch with this worker and the position after it, then the end marker."""
        self.begin()
        yield from tag(src, self.worker, self.state)


def tag(batches: Iterable[Any], worker: int, position: Callable[[], list[int]]) -> Iterator[Tagged]:
    """``Tagged(batch, worker, position())`` for every batch, then ``Tagged(None, worker, position())``."""
    for batch in batches:
        yield Tagged(batch, worker, position())
    yield Tagged(None, worker, position())


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
