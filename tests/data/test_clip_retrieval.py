"""The clip-retrieval reader on a small output folder written here the way `clip-retrieval inference`
writes one (float16 embeddings of shapes renders by a tiny CLIP, parquet metadata, two unequal parts)."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from unclip.clip import FrozenCLIP
from unclip.data import shapes as S
from unclip.data.clip_retrieval import (
    ClipRetrievalError,
    ClipRetrievalPipeline,
    first_rows,
    image_emb_stats,
    is_clip_retrieval_root,
    open_clip_retrieval,
    slice_pieces,
)

SIZES = (23, 17)  # two parts of unequal sizes


def write_clip_retrieval(root, clip: FrozenCLIP, sizes=SIZES, dtype=np.float16, start: int = 0) -> Path:
    """A clip-retrieval output folder: img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy [N_i, D] and
    metadata/metadata_{i}.parquet (caption, url, key), captions unique (numbered) shapes captions."""
    root = Path(root)
    for folder in ("img_emb", "text_emb", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    first = start
    for part, n in enumerate(sizes):
        ids = range(first, first + n)
        scenes = [S.sample_scene(i) for i in ids]
        captions = [f"{S.caption(s, i)}, number {i}" for s, i in zip(scenes, ids)]
        z_i = clip.encode_image([S.render(s, 32) for s in scenes]).cpu().numpy()
        z_t = clip.encode_text(captions)[0].cpu().numpy()
        np.save(root / "img_emb" / f"img_emb_{part}.npy", z_i.astype(dtype))
        np.save(root / "text_emb" / f"text_emb_{part}.npy", z_t.astype(dtype))
        table = pa.table({"image_path": [f"{i:09d}.jpg" for i in ids], "caption": captions,
                          "url": [f"https://example.org/{i}.jpg" for i in ids], "key": [f"{i:09d}" for i in ids]})
        pq.write_table(table, root / "metadata" / f"metadata_{part}.parquet")
        first += n
    return root


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP.create("unclip-tiny")


@pytest.fixture(scope="module")
def cr_root(clip, tmp_path_factory) -> Path:
    return write_clip_retrieval(tmp_path_factory.mktemp("clip_retrieval") / "out", clip)


@pytest.fixture()
def broken(cr_root, tmp_path) -> Path:
    """A writable copy of the folder, to damage."""
    return Path(shutil.copytree(cr_root, tmp_path / "out"))


def _stored(root) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """caption -> (z_i, z_t) as stored, in float32 and re-normalised."""
    out = {}
    for i in range(len(SIZES)):
        img = np.load(root / "img_emb" / f"img_emb_{i}.npy").astype(np.float32)
        txt = np.load(root / "text_emb" / f"text_emb_{i}.npy").astype(np.float32)
        caps = pq.read_table(root / "metadata" / f"metadata_{i}.parquet").column("caption").to_pylist()
        for c, a, b in zip(caps, img, txt):
            out[c] = (a / np.linalg.norm(a), b / np.linalg.norm(b))
    return out


def _captions(pipeline, num_workers: int = 0) -> list[str]:
    loader = DataLoader(pipeline, batch_size=None, num_workers=num_workers)
    return [c for batch in loader for c in batch["caption"]]


def test_open_finds_the_parts(cr_root):
    data = open_clip_retrieval(cr_root)
    assert is_clip_retrieval_root(cr_root) and not is_clip_retrieval_root(cr_root / "img_emb")
    assert data.part_names == ["0", "1"] and data.rows == sum(SIZES) and data.dim == 128
    assert [p.rows for p in data.parts] == list(SIZES)


def test_one_epoch_reads_every_row_once_across_ranks_and_workers(cr_root):
    stored = _stored(cr_root)
    seen, per_rank = [], []
    for rank in range(2):
        pipe = ClipRetrievalPipeline(cr_root, batch_size=3, block_size=4, shuffle_buffer=0, seed=1, rank=rank,
                                     world_size=2)
        loader = DataLoader(pipe, batch_size=None, num_workers=2)
        n = 0
        for batch in loader:
            assert batch["image_emb"].dtype == torch.float32
            assert batch["image_emb"].shape == batch["text_emb"].shape == (len(batch["caption"]), 128)
            for c, zi, zt in zip(batch["caption"], batch["image_emb"], batch["text_emb"]):
                np.testing.assert_allclose(zi.numpy(), stored[c][0], atol=1e-6)  # rows stay aligned
                np.testing.assert_allclose(zt.numpy(), stored[c][1], atol=1e-6)
            seen += batch["caption"]
            n += len(batch["caption"])
        per_rank.append(n)
    assert Counter(seen) == Counter(list(stored))  # every row exactly once
    assert per_rank == [20, 20]  # 40 rows split evenly


def test_slices_cover_the_epoch_for_any_split(cr_root):
    data = open_clip_retrieval(cr_root)
    for consumers in (1, 3, 7):
        rows = [(p, r) for k in range(consumers)
                for p, a, b in slice_pieces(data, k, consumers, block_size=5, shuffle=True, seed=0, epoch=2)
                for r in range(a, b)]
        assert sorted(rows) == [(p, r) for p, n in enumerate(SIZES) for r in range(n)]


def test_order_is_seeded_by_epoch(cr_root):
    def order(epoch, seed=0):
        pipe = ClipRetrievalPipeline(cr_root, batch_size=4, block_size=4, seed=seed, rank=0, world_size=1)
        pipe.set_epoch(epoch)
        return _captions(pipe)

    e0 = order(0)
    assert order(0) == e0  # same (seed, epoch): same order
    assert order(1) != e0 and sorted(order(1)) == sorted(e0)
    assert order(0, seed=5) != e0


def test_partial_batches_and_first_rows(cr_root):
    pipe = ClipRetrievalPipeline(cr_root, batch_size=8, partial_batches=False, rank=0, world_size=1)
    sizes = [len(b["caption"]) for b in DataLoader(pipe, batch_size=None)]
    assert sizes == [8] * 5 and pipe.failures == 0 and pipe.shards == ["0", "1"]
    rows = first_rows(open_clip_retrieval(cr_root), 30)  # crosses into part 1, in order
    caps = pq.read_table(cr_root / "metadata" / "metadata_0.parquet").column("caption").to_pylist()
    assert rows["caption"][:23] == caps and len(rows["caption"]) == 30


def test_image_emb_stats_match_numpy(cr_root):
    z = np.stack([v[0] for v in _stored(cr_root).values()]).astype(np.float64)
    mean, std = image_emb_stats(open_clip_retrieval(cr_root), chunk_rows=5)
    np.testing.assert_allclose(mean, z.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, z.std(0, ddof=1), atol=1e-5)


def test_bad_rows_are_skipped_and_counted(broken):
    path = broken / "img_emb" / "img_emb_1.npy"
    arr = np.load(path)
    arr[3] = np.nan
    np.save(path, arr)
    meta = broken / "metadata" / "metadata_0.parquet"
    table = pq.read_table(meta)
    caps = table.column("caption").to_pylist()
    caps[5] = None
    pq.write_table(table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(caps)), meta)
    pipe = ClipRetrievalPipeline(broken, batch_size=4, rank=0, world_size=1)
    assert len(_captions(pipe)) == sum(SIZES) - 2 and pipe.failures == 2


def _drop_folder(root):
    shutil.rmtree(root / "metadata")


def _drop_part(root):
    (root / "text_emb" / "text_emb_1.npy").unlink()


def _short_rows(root):
    np.save(root / "img_emb" / "img_emb_1.npy", np.load(root / "img_emb" / "img_emb_1.npy")[:-2])


def _text_dim(root):
    np.save(root / "text_emb" / "text_emb_0.npy", np.zeros((23, 64), np.float16))


def _part_dim(root):
    for f in ("img_emb", "text_emb"):
        np.save(root / f / f"{f}_1.npy", np.zeros((17, 64), np.float16))


def _no_caption(root):
    pq.write_table(pa.table({"text": ["x"] * 23, "url": ["u"] * 23}), root / "metadata" / "metadata_0.parquet")


def _one_d(root):
    np.save(root / "img_emb" / "img_emb_0.npy", np.zeros(23, np.float16))


def _meta_rows(root):
    pq.write_table(pa.table({"caption": ["x"] * 20}), root / "metadata" / "metadata_1.parquet")


@pytest.mark.parametrize("damage, message", [
    (_drop_folder, r"has no metadata/ folder"),
    (_drop_part, r"part 1 of .* incomplete: .*img_emb_1\.npy.* but text_emb/text_emb_1\.npy is missing"),
    (_short_rows, r"part 1 of .*row counts differ .*img_emb_1\.npy has 15, .*text_emb_1\.npy has 17"),
    (_meta_rows, r"part 1 of .*row counts differ .*metadata_1\.parquet has 20"),
    (_text_dim, r"img_emb_0\.npy has dim 128 but .*text_emb_0\.npy has dim 64"),
    (_part_dim, r"parts have different dims: .*img_emb_0\.npy has 128, .*img_emb_1\.npy has 64"),
    (_no_caption, r"metadata_0\.parquet: no caption column 'caption'; columns found: \['text', 'url'\]"),
    (_one_d, r"img_emb_0\.npy: expected a 2-D array \[rows, dim\], got shape \(23,\)"),
])
def test_misaligned_output_is_refused_naming_the_file(broken, damage, message):
    damage(broken)
    with pytest.raises(ClipRetrievalError, match=message):
        open_clip_retrieval(broken)


def test_other_caption_column(broken):
    with pytest.raises(ClipRetrievalError, match="no caption column 'text'"):
        open_clip_retrieval(broken, caption_column="text")
    assert open_clip_retrieval(broken, caption_column="url").caption_column == "url"


def test_missing_pyarrow_says_what_to_install(cr_root, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'unclip\[data\]'"):
        open_clip_retrieval(cr_root)


def test_training_stream_resumes_from_worker_positions(cr_root):
    """The training loop's BatchStream over this reader: stopped anywhere, its state re-creates the rest."""
    from unclip.training.data import BatchStream

    def stream(workers):
        pipe = ClipRetrievalPipeline(cr_root, batch_size=4, partial_batches=False, block_size=4, shuffle_buffer=8,
                                     seed=2, rank=0, world_size=1)
        return BatchStream(pipe, num_workers=workers)

    def take(s, n):
        return [tuple(next(s)["caption"]) for _ in range(n)]

    for workers, stop in ((0, 3), (2, 5)):
        whole = take(stream(workers), 14)  # 10 batches per epoch: into the second
        first = stream(workers)
        head = take(first, stop)
        again = stream(workers)
        again.load_state_dict(first.state_dict())
        assert head + take(again, 14 - stop) == whole
