"""An endless, resumable stream of batches over a webdataset pipeline.

The stream is deterministic given (seed, rank, epoch): shuffles are seeded per epoch, and batches come
round-robin from the DataLoader workers still reading (the stream puts them in that order itself, so the
order is the same after a resume). Its state is the epoch, the batches taken in it, whose turn is next
and each worker's position (unclip/data/position.py); ``load_state_dict`` re-opens the epoch with every
worker starting at its position, skipping consumed shards unopened and decoding nothing twice, so a
resumed run sees exactly the batches the uninterrupted run would have seen (with the same world size
and workers; otherwise, and for states without positions, it replays the batches one by one).
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from unclip.data.position import Tagged
from unclip.data.wds import ShardPipeline

log = logging.getLogger(__name__)


class BatchStream:
    def __init__(self, pipeline: ShardPipeline, num_workers: int = 0, describe: str = "shards"):
        self.pipeline, self.num_workers, self.describe = pipeline, num_workers, describe
        pipeline.tag_positions()
        self.loader = DataLoader(pipeline, batch_size=None, num_workers=num_workers)
        self.epoch, self.index = 0, 0
        self._workers = max(num_workers, 1)
        self._positions: dict[int, list[int]] = {}
        self._turn, self._replay = 0, 0
        self._it: Iterator | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        for _ in range(2):  # at most one epoch roll-over per batch
            if self._it is None:
                self._open()
            batch = self._take()
            if batch is not None:
                self.index += 1
                return batch
            if self.index == 0:
                small = getattr(self.pipeline, "too_small", 0)
                raise ValueError(f"no full batch could be read from {self.describe} "
                                 f"({self.pipeline.failures} bad samples and {small} images under "
                                 "data.min_image_size skipped): fewer samples per rank than the micro batch? "
                                 "use more data, a smaller batch, data.resampled=true or a lower data.min_image_size")
            self.epoch, self.index, self._it = self.epoch + 1, 0, None
            self._positions, self._turn = {}, 0
        raise RuntimeError("unreachable")

    def _take(self) -> Any:
        """The next batch in round-robin order over the workers still reading, or None at the epoch's end."""
        while self._active:
            w = self._turn
            if not self._pending[w]:  # read on until this worker's next batch (or end marker) arrives
                try:
                    tagged: Tagged = next(self._it)
                except StopIteration:  # every worker has sent its end marker
                    break
                self._pending[tagged.worker].append(tagged)
                continue
            tagged = self._pending[w].popleft()
            if tagged.batch is None:  # this worker's epoch is over: the turn passes on
                self._active.discard(w)
            else:
                self._positions[w] = tagged.position
            self._turn = self._next_turn(w)
            if tagged.batch is not None:
                return tagged.batch
        return None

    def _next_turn(self, w: int) -> int:
        for k in range(1, self._workers + 1):
            if (w + k) % self._workers in self._active:
                return (w + k) % self._workers
        return w

    def _open(self) -> None:
        self.pipeline.set_epoch(self.epoch)
        self.pipeline.resume_positions(self._positions)
        self._active = set(range(self._workers))
        self._pending: dict[int, deque] = {w: deque() for w in self._active}
        self._it = iter(self.loader)
        for skipped in range(self._replay):  # a state without positions: replay its batches
            if self._take() is None:
                log.warning("data position %d of epoch %d is past its end after %d batches; starting epoch %d",
                            self._replay, self.epoch, skipped, self.epoch + 1)
                self.epoch, self.index, self._positions, self._turn = self.epoch + 1, 0, {}, 0
                self._replay = 0
                return self._open()
        self._replay = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "turn": self._turn, "workers": self._workers,
                "positions": {str(w): list(p) for w, p in self._positions.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index, self._it = int(state["epoch"]), int(state["index"]), None
        self._positions, self._turn, self._replay = {}, 0, 0
        if "positions" in state and int(state.get("workers", 0)) == self._workers:
            self._positions = {int(w): list(p) for w, p in state["positions"].items()}
            self._turn = int(state["turn"])
        elif self.index:
            why = ("it has no worker positions (an older checkpoint)" if "positions" not in state
                   else f"data.num_workers gives {self._workers} readers, the checkpoint had {state.get('workers')}")
            log.warning("resuming the data stream by replaying %d batches: %s", self.index, why)
            self._replay = self.index


PipelineFactory = Callable[[int, int, int], ShardPipeline]  # (rank, world_size, micro_batch) -> pipeline
