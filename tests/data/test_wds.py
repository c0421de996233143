"""Shards: write -> read round trip, rank × worker coverage, bad data, epoch shuffling, errors."""

import logging
import os
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from unclip.data.shapes import Scene, ShapesDataset
from unclip.data.wds import LogAndCount, resolve_shards, shard_pipeline
from unclip.data.write_shards import existing_shards, write_shards


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, "train", n=30, resolution=32, extra_resolutions=[64], seed=7, shard_size=5)
    write_shards(out, "val", n=6, resolution=32, seed=7, shard_size=5)
    return out


def _keys(pipeline):
    return [s["key"] for s in pipeline]


def test_write_then_read_round_trip(shard_dir):
    assert existing_shards(shard_dir, "train") == [f"shapes-train-{i:06d}.tar" for i in range(6)]
    ds = ShapesDataset("train", 30, seed=7, resolution=32, extra_resolutions=[64])
    samples = list(shard_pipeline(shard_dir, split="train", shuffle_shards=False, image_format="pil", resolutions=[64]))
    assert [s["key"] for s in samples] == [ds.key(i) for i in range(30)]
    for i, s in enumerate(samples):
        assert s["caption"] == ds.caption(i)
        assert Scene.from_dict(s["scene"]) == ds.scene(i)
        assert np.array_equal(np.asarray(s["image"]), np.asarray(ds.image(i)))
        assert np.array_equal(np.asarray(s["image_64"]), np.asarray(ds.image(i, 64)))
    (batch,) = shard_pipeline(shard_dir, split="val", batch_size=8)  # 6 samples, one partial batch
    assert batch["image"].shape == (6, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert len(batch["caption"]) == 6 and isinstance(batch["scene"][0], dict)
    image, caption = next(iter(shard_pipeline(shard_dir, split="val", fields=("image", "caption"))))
    assert image.shape == (3, 32, 32) and isinstance(caption, str)


def test_each_sample_once_per_epoch_across_ranks_and_workers(shard_dir):
    seen = {0: [], 1: []}
    for rank in range(2):
        pipeline = shard_pipeline(shard_dir, split="train", rank=rank, world_size=2, shuffle_buffer=4, seed=1)
        loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2, persistent_workers=True)
        for epoch in range(2):
            pipeline.set_epoch(epoch)
            seen[epoch] += [s["key"] for s in loader]
    everything = [f"train-7-{i:08d}" for i in range(30)]
    for epoch in range(2):
        assert sorted(seen[epoch]) == everything  # each sample exactly once, no duplicates
    assert seen[0] != seen[1]  # persistent workers picked up the new epoch


def test_epochs_shuffle_differently_but_deterministically(shard_dir):
    pipeline = shard_pipeline(shard_dir, split="train", shuffle_buffer=8, seed=3)
    e0 = _keys(pipeline)
    pipeline.set_epoch(1)
    e1 = _keys(pipeline)
    pipeline.set_epoch(0)
    assert _keys(pipeline) == e0
    assert e0 != e1 and sorted(e0) == sorted(e1)
    assert _keys(shard_pipeline(shard_dir, split="train", shuffle_buffer=8, seed=3, epoch=1)) == e1
    assert _keys(shard_pipeline(shard_dir, split="train", shuffle_buffer=8, seed=4)) != e0


def test_truncated_tar_and_corrupt_png_are_logged_counted_and_skipped(tmp_path, caplog):
    write_shards(tmp_path, "train", n=12, resolution=32, seed=0, shard_size=4)
    truncated = tmp_path / "shapes-train-000001.tar"
    with tarfile.open(truncated) as tar:  # cut inside the image of the shard's third sample
        member = tar.getmember("train-0-00000006.png")
    truncated.write_bytes(truncated.read_bytes()[: member.offset_data + member.size // 2])
    good = ShapesDataset("train", 12, seed=0, resolution=32)
    with wds.TarWriter(str(tmp_path / "shapes-train-000003.tar"), encoder=False) as w:
        for i in (20, 21):
            sample = {k: v.encode() if isinstance(v, str) and k != "__key__" else v for k, v in good[i % 12].items()}
            sample["__key__"] = f"bad-{i}"
            if i == 20:
                sample["png"] = b"\x89PNG\r\n\x1a\n this is not an image"
            w.write(sample)

    handler = LogAndCount()
    with caplog.at_level(logging.WARNING, logger="unclip.data.wds"):
        keys = _keys(shard_pipeline(tmp_path, split="train", shuffle_shards=False, handler=handler))
    # good samples: the intact shards, the truncated shard's first two, the corrupt shard's other
    assert keys == [good.key(i) for i in (0, 1, 2, 3, 4, 5, 8, 9, 10, 11)] + ["bad-21"]
    # counted: the tar read error (reported for the member, then for the stream), the partial
    # sample it left (no png), the corrupt png
    assert handler.count >= 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == handler.count
    assert any("ReadError" in m and "shapes-train-000001.tar" in m for m in messages)
    assert any("train-0-00000006" in m and "shapes-train-000001.tar" in m for m in messages)
    assert any("bad-20" in m and "shapes-train-000003.tar" in m for m in messages)

    # failures counted inside DataLoader workers are visible in the main process
    workers = LogAndCount()
    pipeline = shard_pipeline(tmp_path, split="train", handler=workers)
    loaded = [s["key"] for s in torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)]
    assert sorted(loaded) == sorted(keys) and workers.count == handler.count
    with pytest.raises(RuntimeError, match="more than 1 bad"):
        _keys(shard_pipeline(tmp_path, split="train", handler=LogAndCount(max_failures=1)))


def test_shard_sources_and_clear_errors(shard_dir, tmp_path):
    pattern = f"{shard_dir}/shapes-train-{{000000..000005}}.tar"
    assert resolve_shards(pattern) == sorted(resolve_shards(shard_dir, split="train"))
    assert len(resolve_shards([f"{shard_dir}/shapes-val-000000.tar", f"{shard_dir}/shapes-val-000001.tar"])) == 2
    with pytest.raises(ValueError, match="several splits"):
        resolve_shards(shard_dir)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        shard_pipeline(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="000009"):
        resolve_shards(f"{shard_dir}/shapes-train-{{000000..000009}}.tar")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        resolve_shards(tmp_path)  # an empty directory
    with pytest.raises(ValueError, match="ranks"):
        shard_pipeline(shard_dir, split="val", rank=0, world_size=4)  # 2 shards cannot feed 4 ranks


def test_resampled_shards_are_deterministic_per_epoch_and_rank(shard_dir):
    def keys(**kw):
        return _keys(shard_pipeline(shard_dir, split="train", resampled=True, seed=5, **kw))

    e0 = keys(rank=0, world_size=2)
    assert len(e0) == 3 * 5  # ceil(6 shards / 2 ranks) shards of 5 samples
    assert keys(rank=0, world_size=2) == e0
    assert keys(rank=0, world_size=2, epoch=1) != e0
    assert keys(rank=1, world_size=2) != e0


def test_write_shards_refuses_another_config_unless_overwrite(tmp_path):
    write_shards(tmp_path, "train", n=4, resolution=16, shard_size=2)
    again = write_shards(tmp_path, "train", n=4, resolution=16, shard_size=2)  # same config: kept
    assert again["counts"] == [2, 2]
    with pytest.raises(FileExistsError, match="another config"):
        write_shards(tmp_path, "train", n=6, resolution=16, shard_size=2)
    manifest = write_shards(tmp_path, "train", n=3, resolution=16, shard_size=2, overwrite=True)
    assert manifest["counts"] == [2, 1] and len(os.listdir(tmp_path)) == 3
    (tmp_path / "shapes-val-000000.tar").write_bytes(b"")  # leftovers of an interrupted run
    with pytest.raises(FileExistsError, match="without a manifest"):
        write_shards(tmp_path, "val", n=2, resolution=16)


def test_a_fifo_named_like_a_shard_is_refused_not_read_forever(tmp_path):
    fifo = tmp_path / "stuck-000000.tar"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        resolve_shards(str(tmp_path / "*.tar"))
    with pytest.raises(ValueError, match="not a regular file"):
        resolve_shards(str(fifo))
