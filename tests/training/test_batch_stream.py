"""The training data stream resumes exactly from worker positions: same batches, consumed shards unopened."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from unclip.data.wds import shard_pipeline
from unclip.data.write_shards import write_shards
from unclip.training.data import BatchStream

BATCH = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream")
    write_shards(out, "train", n=70, resolution=16, seed=3, shard_size=7)  # 10 shards of 7: batches cross shards
    return out


def _stream(root, workers: int, buffer: int) -> BatchStream:
    pipe = shard_pipeline(root, split="train", batch_size=BATCH, partial_batches=False, size=16, seed=5,
                          shuffle_buffer=buffer, rank=0, world_size=1)
    return BatchStream(pipe, num_workers=workers, describe=str(root))


def _take(stream: BatchStream, n: int) -> list[tuple[str, ...]]:
    return [tuple(next(stream)["key"]) for _ in range(n)]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("workers,buffer,stop", [(0, 0, 5), (2, 0, 7), (3, 0, 4), (3, 0, 16), (2, 10, 9)])
def test_resumed_stream_gives_the_same_batches(shards, workers, buffer, stop):
    """Stopped at `stop` (any worker's turn, inside a shard, two of three workers done: 10 shards give them
    7, 5 and 5 batches), the state alone
    re-creates the rest of the epoch and the next one, batch for batch."""
    whole = _take(_stream(shards, workers, buffer), 30)  # 16 or so batches per epoch: two epochs and a bit
    assert len(set(whole[:12])) == 12 and whole[:12] != whole[16:28]  # the next epoch is shuffled anew
    first = _stream(shards, workers, buffer)
    head = _take(first, stop)
    state = first.state_dict()
    assert state["positions"] and state["workers"] == max(workers, 1)
    again = _stream(shards, workers, buffer)
    again.load_state_dict(state)
    assert head + _take(again, 30 - stop) == whole


def test_consumed_shards_are_never_opened(shards, tmp_path):
    """One worker, no shuffle buffer: after resuming, every shard the run had finished is garbage on disk,
    and the stream still gives the same batches without a single read error."""
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    whole = _stream(copy, 0, 0)
    expected = [next(whole) for _ in range(12)]
    first = _stream(copy, 0, 0)
    head = [next(first) for _ in range(6)]  # 24 samples: 3 shards done, the 4th read 3 of 7
    state = first.state_dict()
    urls = [u for b in head for u in b["url"]]
    current = urls[-1]
    done = {u for u in urls if u != current}
    assert len(done) == 3 and state["positions"]["0"] == [4, 3]
    for url in done:
        Path(url).write_bytes(b"not a tar file")
    again = _stream(copy, 0, 0)
    again.load_state_dict(state)
    rest = [next(again) for _ in range(6)]
    assert [tuple(b["key"]) for b in rest] == [tuple(b["key"]) for b in expected[6:]]
    assert again.pipeline.failures == 0


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_states_without_positions_replay(shards, caplog):
    whole = _take(_stream(shards, 2, 0), 10)
    first = _stream(shards, 2, 0)
    _take(first, 5)
    old = {k: v for k, v in first.state_dict().items() if k in ("epoch", "index")}  # an older checkpoint's
    again = _stream(shards, 2, 0)
    again.load_state_dict(old)
    with caplog.at_level(logging.WARNING, logger="unclip.training.data"):
        assert _take(again, 5) == whole[5:]
    assert "replaying 5 batches: it has no worker positions" in caplog.text
    other = _stream(shards, 3, 0)
    other.load_state_dict(first.state_dict())
    with caplog.at_level(logging.WARNING, logger="unclip.training.data"):
        _take(other, 1)
    assert "data.num_workers gives 3 readers, the checkpoint had 2" in caplog.text
