"""Reader for the output folder of ``clip-retrieval inference`` (LAION-style CLIP embeddings), for
training the prior on embeddings computed elsewhere::

    ROOT/img_emb/img_emb_{i}.npy          [N_i, D] float16/float32   L2-normalised image embeddings z_i
    ROOT/text_emb/text_emb_{i}.npy        [N_i, D]                   text embeddings z_t, same rows
    ROOT/metadata/metadata_{i}.parquet    N_i rows                   a caption column (default "caption")

Part ``i`` of the three folders is aligned row by row; :func:`open_clip_retrieval` checks that once
(parts present everywhere, equal row counts, one dim, the caption column) without reading the arrays:
``.npy`` files are memory-mapped and only the parquet footers are read.

:class:`ClipRetrievalPipeline` yields training batches ``{"text_emb": [B, D] f32, "image_emb": [B, D]
f32, "caption": list[str]}``; the prior stage adds the per-token text features from the captions with
its CLIP. One epoch, deterministic in (seed, epoch)::

    parts in a seeded order, each part's fixed-size row blocks in a seeded order
    -> that row sequence cut into world_size × num_workers contiguous slices of equal size
       (every row exactly once per epoch, whatever the number of ranks and workers)
    -> each slice read block by block (contiguous memmap reads)
    -> rows permuted within a buffer of whole blocks, seeded by (seed, epoch, rank, worker)
    -> batches

Blocks are permuted within a part, not across all parts: the captions live in parquet files that
are usually one row group each, so a global block order would re-read a part's caption column for
nearly every block; this way each slice reads each of its parts' captions once per epoch.

Rows with a non-finite embedding or a null caption are skipped, logged and counted (``.failures``).
Both embeddings are re-normalised in float32 (float16 storage leaves norms off by ~1e-3).
"""
from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .moments import Moments
from .position import Tagged, tag
from .wds import LogAndCount, SharedEpoch, dist_info

FOLDERS = {"img_emb": "img_emb_{}.npy", "text_emb": "text_emb_{}.npy", "metadata": "metadata_{}.parquet"}
_PART_RE = {folder: re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")
            for folder, pattern in FOLDERS.items()}
MIN_BUFFER_BLOCKS = 8  # a shuffled batch mixes rows of at least this many blocks
_INSTALL = "pip install 'unclip[data]'"


class ClipRetrievalError(ValueError):
    """clip-retrieval output that cannot be read or whose parts do not line up; names the file."""


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading clip-retrieval metadata (parquet) needs pyarrow: {_INSTALL}") from e
    return pq


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Part:
    """One aligned part: ``img_emb_{name}.npy``, ``text_emb_{name}.npy``, ``metadata_{name}.parquet``."""

    name: str
    img_emb: Path
    text_emb: Path
    metadata: Path
    rows: int


@dataclass(frozen=True)
class ClipRetrievalData:
    """A checked clip-retrieval output folder (paths and sizes only: picklable, no open files)."""

    root: Path
    parts: tuple[Part, ...]
    dim: int
    caption_column: str = "caption"

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]

    def __str__(self) -> str:
        return f"clip-retrieval output {self.root} ({self.rows} rows in {len(self.parts)} parts, dim {self.dim})"


def is_clip_retrieval_root(source: Any) -> bool:
    """True for a directory holding ``img_emb/`` and ``text_emb/`` (what ``clip-retrieval inference`` writes)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    root = Path(source)
    return (root / "img_emb").is_dir() and (root / "text_emb").is_dir()


def _index_folder(root: Path, folder: str) -> dict[int, Path]:
    """Part number -> file of ``root/folder``; raises naming the folder when it is missing or empty."""
    path = root / folder
    if not path.is_dir():
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise ClipRetrievalError(
            f"clip-retrieval output {root} has no {folder}/ folder (found: {found}); expected "
            f"{', '.join(f + '/' for f in FOLDERS)} as `clip-retrieval inference` writes them")
    files: dict[int, Path] = {}
    for p in sorted(path.iterdir()):
        m = _PART_RE[folder].match(p.name)
        if m:
            files[int(m.group(1))] = p
    if not files:
        raise ClipRetrievalError(f"{path} holds no {FOLDERS[folder].format('*')} files")
    return files


def _open_npy(path: Path) -> np.ndarray:
    """Memory-map a 2-D float .npy; raises naming the file on a bad header, rank or dtype."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises several types for a bad header
        raise ClipRetrievalError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from e
    if arr.ndim != 2:
        raise ClipRetrievalError(f"{path}: expected a 2-D array [rows, dim], got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ClipRetrievalError(f"{path}: expected float16/float32 embeddings, got dtype {arr.dtype}")
    return arr


def _metadata_rows(path: Path, column: str) -> int:
    """Row count of a metadata parquet (footer only); raises listing the columns if ``column`` is absent."""
    pq = _pyarrow_parquet()
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except Exception as e:
        raise ClipRetrievalError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
    if column not in schema.names:
        raise ClipRetrievalError(f"{path}: no caption column {column!r}; columns found: {schema.names} "
                                 "(set data.caption_column)")
    return int(meta.num_rows)


def _check_part(root: Path, name: str, files: dict[str, Path], column: str) -> tuple[Part, int]:
    """Open one part's three files and check they line up; returns the part and its dim."""
    img, txt = _open_npy(files["img_emb"]), _open_npy(files["text_emb"])
    n_meta = _metadata_rows(files["metadata"], column)
    counts = {files["img_emb"]: img.shape[0], files["text_emb"]: txt.shape[0], files["metadata"]: n_meta}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{p} has {n}" for p, n in counts.items())
        raise ClipRetrievalError(f"part {name} of {root}: row counts differ ({detail}); the three files of a "
                                 "part must hold the same rows in the same order")
    if img.shape[1] != txt.shape[1]:
        raise ClipRetrievalError(f"part {name} of {root}: {files['img_emb']} has dim {img.shape[1]} but "
                                 f"{files['text_emb']} has dim {txt.shape[1]}")
    part = Part(name, files["img_emb"], files["text_emb"], files["metadata"], int(img.shape[0]))
    return part, int(img.shape[1])


def open_clip_retrieval(root: str | os.PathLike, caption_column: str = "caption") -> ClipRetrievalData:
    """Find the parts of a clip-retrieval output folder and check their alignment.

    Raises :class:`ClipRetrievalError` (a ValueError) naming the file or part on: a missing folder, a
    part missing from one folder, row counts or dims that differ, a non-2-D or non-float array, or
    a metadata file without ``caption_column`` (listing the columns it has). Reads no embeddings.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise ClipRetrievalError(f"clip-retrieval output must be one folder (ROOT with img_emb/, text_emb/, "
                                 f"metadata/), got {root!r}")
    root = Path(root)
    if not root.is_dir():
        raise ClipRetrievalError(f"clip-retrieval output {root} is not a directory")
    index = {folder: _index_folder(root, folder) for folder in FOLDERS}
    numbers = sorted(set().union(*index.values()))
    parts, dims = [], {}
    for i in numbers:
        missing = [f"{f}/{FOLDERS[f].format(i)}" for f in FOLDERS if i not in index[f]]
        if missing:
            present = [str(index[f][i]) for f in FOLDERS if i in index[f]]
            raise ClipRetrievalError(f"part {i} of {root} is incomplete: {', '.join(present)} exist(s) but "
                                     f"{', '.join(missing)} is missing")
        part, dim = _check_part(root, str(i), {f: index[f][i] for f in FOLDERS}, caption_column)
        parts.append(part)
        dims[part.img_emb] = dim
    if len(set(dims.values())) > 1:
        first = next(iter(dims.items()))
        other = next((p, d) for p, d in dims.items() if d != first[1])
        raise ClipRetrievalError(f"{root}: parts have different dims: {first[0]} has {first[1]}, "
                                 f"{other[0]} has {other[1]}")
    return ClipRetrievalData(root, tuple(parts), next(iter(dims.values())), caption_column)


# ---------------------------------------------------------------------------------------------- reading


class PartReader:
    """Reads row ranges of parts, keeping the current part's memmaps and caption column open
    (one part at a time: a slice reads its parts one after the other)."""

    def __init__(self, data: ClipRetrievalData, handler: LogAndCount | None = None):
        self.data, self.handler = data, handler
        self._index: int | None = None
        self._img = self._txt = self._captions = None

    def _open(self, index: int) -> None:
        if index != self._index:
            part = self.data.parts[index]
            self._img, self._txt = _open_npy(part.img_emb), _open_npy(part.text_emb)
            pq = _pyarrow_parquet()
            table = pq.read_table(part.metadata, columns=[self.data.caption_column])
            self._captions = table.column(self.data.caption_column)
            self._index = index

    def read(self, index: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Rows [start, stop) of part ``index``: (image_emb, text_emb) float32 [n, D] L2-normalised and the
        captions; bad rows (non-finite embedding, null caption) are dropped and reported to the handler."""
        self._open(index)
        img = np.asarray(self._img[start:stop], dtype=np.float32)
        txt = np.asarray(self._txt[start:stop], dtype=np.float32)
        captions = self._captions.slice(start, stop - start).to_pylist()
        problems = {"non-finite img_emb": ~np.isfinite(img).all(1), "non-finite text_emb": ~np.isfinite(txt).all(1),
                    "null caption": np.array([c is None for c in captions])}
        bad = np.logical_or.reduce(list(problems.values()))
        if bad.any():
            self._report(index, start, problems)
            img, txt = img[~bad], txt[~bad]
            captions = [c for c, b in zip(captions, bad) if not b]
        return _l2(img), _l2(txt), [str(c) for c in captions]

    def _report(self, index: int, start: int, problems: dict[str, np.ndarray]) -> None:
        """One handler call (a log line and a count) per bad row; raises without a handler."""
        part = self.data.parts[index]
        for r in np.flatnonzero(np.logical_or.reduce(list(problems.values()))):
            what = ", ".join(k for k, v in problems.items() if v[r])
            err = ValueError(f"part {part.name} ({part.img_emb.parent.parent}) row {start + int(r)}: {what}")
            if self.handler is None:
                raise err
            self.handler(err)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def image_emb_stats(data: ClipRetrievalData, chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the (re-normalised) image embeddings, streamed over the memmapped
    parts in chunks with float64 sums (the prior's ``stage.normalizer=stats``)."""
    moments = Moments()
    for part in data.parts:
        arr = _open_npy(part.img_emb)
        for a in range(0, part.rows, chunk_rows):
            z = _l2(np.asarray(arr[a:a + chunk_rows], dtype=np.float64))
            moments.add(z[np.isfinite(z).all(1)])
    mean, std = moments.mean_std(str(data))
    return mean.astype(np.float32), std.astype(np.float32)


# ---------------------------------------------------------------------------------------------- epoch order


def _rng(*key: Any) -> np.random.Generator:
    """A numpy generator seeded from a string key (stable across processes and Python runs)."""
    return np.random.default_rng(random.Random("-".join(map(str, key))).getrandbits(128))


def _part_blocks(rows: int, block_size: int, rng: np.random.Generator | None) -> np.ndarray:
    """[nblocks, 2] (start, stop) of a part's fixed-size row blocks, in ``rng``'s order (None: in order)."""
    starts = np.arange(0, rows, block_size)
    blocks = np.stack([starts, np.minimum(starts + block_size, rows)], axis=1)
    return blocks if rng is None else blocks[rng.permutation(len(blocks))]


def slice_pieces(data: ClipRetrievalData, consumer: int, consumers: int, *, block_size: int, shuffle: bool,
                 seed: int, epoch: int) -> Iterator[tuple[int, int, int]]:
    """The contiguous row ranges ``(part index, start, stop)`` that consumer ``consumer`` of ``consumers``
    (rank × worker) reads this epoch: its equal share of the epoch's row sequence (parts and their
    blocks in a seeded order), so that all consumers together read every row exactly once."""
    total = data.rows
    lo, hi = consumer * total // consumers, (consumer + 1) * total // consumers
    order = _rng("parts", seed, epoch).permutation(len(data.parts)) if shuffle else range(len(data.parts))
    offset = 0  # start of the current part in the epoch's row sequence
    for index in order:
        rows = data.parts[index].rows
        a, b = max(lo, offset), min(hi, offset + rows)
        if a < b:
            rng = _rng("blocks", seed, epoch, index) if shuffle else None
            pos = offset  # sequence position of the current block's first row
            for start, stop in _part_blocks(rows, block_size, rng):
                s, e = max(a, pos), min(b, pos + stop - start)
                if s < e:
                    yield int(index), int(start + s - pos), int(start + e - pos)
                pos += stop - start
        offset += rows
        if offset >= hi:
            break


# ---------------------------------------------------------------------------------------------- pipeline


class ClipRetrievalPipeline(torch.utils.data.IterableDataset):
    """Training batches from clip-retrieval output, with the interface the training loop's
    ``BatchStream`` uses: iterate it through ``DataLoader(pipeline, batch_size=None, num_workers=k)``,
    call ``set_epoch(e)`` before each epoch (shared with the workers), read ``.failures``.

    The epoch order is described in the module docstring. ``shuffle_buffer``: rows permuted together
    (whole blocks, at least ``MIN_BUFFER_BLOCKS`` blocks); ``shuffle=False`` reads the parts in order.
    ``partial_batches``: yield the short last batch of each rank × worker slice. There is no
    ``resampled`` mode: the exact split already feeds any number of ranks × workers (each gets
    ``rows // (world_size × num_workers)`` rows, ± 1). rank / world_size: default from
    torch.distributed, else env RANK / WORLD_SIZE, else 0 / 1.
    """

    def __init__(self, data: ClipRetrievalData | str | os.PathLike, *, batch_size: int = 256,
                 partial_batches: bool = True, shuffle: bool = True, shuffle_buffer: int = 8192,
                 block_size: int = 256, seed: int = 0, epoch: int = 0, rank: int | None = None,
                 world_size: int | None = None, handler: LogAndCount | None = None,
                 caption_column: str = "caption"):
        super().__init__()
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size ({batch_size}) and block_size ({block_size}) must be >= 1")
        self.data = data if isinstance(data, ClipRetrievalData) else open_clip_retrieval(data, caption_column)
        self.rank, self.world_size = dist_info(rank, world_size)
        self.batch_size, self.partial_batches, self.shuffle = batch_size, partial_batches, shuffle
        self.buffer_rows = max(shuffle_buffer, MIN_BUFFER_BLOCKS * block_size) if shuffle else batch_size
        self.block_size, self.seed = block_size, seed
        self.epoch, self.handler = SharedEpoch(epoch), handler or LogAndCount()
        self.shards = self.data.part_names
        self.tagged, self.resume = False, {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set(epoch)

    def tag_positions(self) -> None:
        """Yield ``Tagged(batch, worker, [batches so far])`` and an end marker per worker (as ShardPipeline)."""
        self.tagged = True

    def resume_positions(self, positions: dict[int, list[int]]) -> None:
        """Each worker's next epoch skips its first ``positions[worker][0]`` batches inside the worker
        (its embedding rows are memory-mapped and cheap to read; nothing skipped crosses to the loader)."""
        self.resume = {int(w): int(pos[0]) for w, pos in positions.items()}

    @property
    def failures(self) -> int:
        return self.handler.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = self.epoch.get()
        pieces = slice_pieces(self.data, self.rank * workers + worker, self.world_size * workers,
                              block_size=self.block_size, shuffle=self.shuffle, seed=self.seed, epoch=epoch)
        rng = _rng("rows", self.seed, epoch, self.rank, worker) if self.shuffle else None
        batches = self._batches(pieces, rng)
        return self._tag(batches, worker, self.resume.get(worker, 0)) if self.tagged else batches

    @staticmethod
    def _tag(batches: Iterator[dict[str, Any]], worker: int, skip: int) -> Iterator[Tagged]:
        count = 0

        def unsent():  # the first ``skip`` batches are computed (cheap memory-mapped rows) but not sent
            nonlocal count
            for batch in batches:
                count += 1
                if count > skip:
                    yield batch
        return tag(unsent(), worker, lambda: [count])

    def _batches(self, pieces: Iterator[tuple[int, int, int]], rng: np.random.Generator | None
                 ) -> Iterator[dict[str, Any]]:
        """Fill a buffer of pieces, permute it, emit its full batches and carry the rest over."""
        reader = PartReader(self.data, self.handler)
        buf: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
        held = 0
        for piece in pieces:
            rows = reader.read(*piece)
            buf.append(rows)
            held += len(rows[2])
            if held >= self.buffer_rows:
                img, txt, cap = _concat(buf, rng)
                full = len(cap) // self.batch_size * self.batch_size
                yield from self._split(img[:full], txt[:full], cap[:full])
                buf, held = [(img[full:], txt[full:], cap[full:])], len(cap) - full
        if held:
            img, txt, cap = _concat(buf, rng)
            keep = len(cap) if self.partial_batches else len(cap) // self.batch_size * self.batch_size
            yield from self._split(img[:keep], txt[:keep], cap[:keep])

    def _split(self, img: np.ndarray, txt: np.ndarray, cap: list[str]) -> Iterator[dict[str, Any]]:
        for a in range(0, len(cap), self.batch_size):
            b = a + self.batch_size
            yield {"text_emb": torch.from_numpy(np.ascontiguousarray(txt[a:b])),
                   "image_emb": torch.from_numpy(np.ascontiguousarray(img[a:b])), "caption": cap[a:b]}


def _concat(buf: list[tuple[np.ndarray, np.ndarray, list[str]]], rng: np.random.Generator | None
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Join buffered row ranges; permute the rows when ``rng`` is given."""
    img = np.concatenate([b[0] for b in buf])
    txt = np.concatenate([b[1] for b in buf])
    cap = [c for b in buf for c in b[2]]
    if rng is not None and len(cap) > 1:
        perm = rng.permutation(len(cap))
        img, txt, cap = img[perm], txt[perm], [cap[i] for i in perm]
    return img, txt, cap


def first_rows(data: ClipRetrievalData, n: int) -> dict[str, Any]:
    """The first ``n`` good rows in part order, as one batch (held-out evaluation, alignment checks)."""
    batches = ClipRetrievalPipeline(data, batch_size=n, shuffle=False, rank=0, world_size=1)
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError(f"{data} holds no readable rows")
    return batch
