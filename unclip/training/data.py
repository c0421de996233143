"""An endless, resumable stream of batches over a webdataset pipeline.

The stream is deterministic given (seed, rank, epoch): shuffles are seeded per epoch, and the
DataLoader hands out worker batches round-robin. Its position is (epoch, batches taken in that
epoch); ``load_state_dict`` re-opens the epoch and skips that many batches, so a resumed run sees
exactly the batches the uninterrupted run would have seen (with the same world size and workers).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from unclip.data.wds import ShardPipeline

log = logging.getLogger(__name__)


class BatchStream:
    def __init__(self, pipeline: ShardPipeline, num_workers: int = 0, describe: str = "shards"):
        self.pipeline, self.num_workers, self.describe = pipeline, num_workers, describe
        self.loader = DataLoader(pipeline, batch_size=None, num_workers=num_workers)
        self.epoch, self.index = 0, 0
        self._it: Iterator | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        for _ in range(2):  # at most one epoch roll-over per batch
            if self._it is None:
                self._open()
            try:
                batch = next(self._it)
                self.index += 1
                return batch
            except StopIteration:
                if self.index == 0:
                    small = getattr(self.pipeline, "too_small", 0)
                    raise ValueError(f"no full batch could be read from {self.describe} "
                                     f"({self.pipeline.failures} bad samples and {small} images under "
                                     "data.min_image_size skipped): fewer samples per rank than the micro batch? "
                                     "use more data, a smaller batch, data.resampled=true or a lower data.min_image_size")
                self.epoch, self.index, self._it = self.epoch + 1, 0, None
        raise RuntimeError("unreachable")

    def _open(self) -> None:
        self.pipeline.set_epoch(self.epoch)
        self._it = iter(self.loader)
        for skipped in range(self.index):  # resume: replay the position inside the epoch
            try:
                next(self._it)
            except StopIteration:
                log.warning("data position %d of epoch %d is past its end after %d batches; starting epoch %d",
                            self.index, self.epoch, skipped, self.epoch + 1)
                self.epoch, self.index = self.epoch + 1, 0
                self.pipeline.set_epoch(self.epoch)
                self._it = iter(self.loader)
                break

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self._it = int(state["epoch"]), int(state["index"]), None


PipelineFactory = Callable[[int, int, int], ShardPipeline]  # (rank, world_size, micro_batch) -> pipeline
