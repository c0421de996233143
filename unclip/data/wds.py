"""Webdataset reader: tar shards -> decoded samples, split by node and DataLoader worker.

`shard_pipeline` builds the pipeline as one visible list of stages::

    shards (SimpleShardList, or ResampledShards with replacement)
    -> shard shuffle seeded by (seed, epoch)          identical on every rank and worker
    -> split by node (explicit rank / world_size)
    -> split by DataLoader worker
    -> count shards (position.py: a resumed run skips consumed shards unopened)
    -> tar -> samples (tarfile_to_samples, log-and-count handler)
    -> sample shuffle buffer seeded by (seed, epoch, rank, worker)   optional
    -> count samples (and skip the consumed ones before decoding when resuming)
    -> decode: PIL images or CHW float tensors in [-1, 1], caption, scene dict
    -> pick fields as a tuple                                          optional
    -> batch                                                           optional

Call ``pipeline.set_epoch(e)`` before each epoch (like DistributedSampler.set_epoch); the epoch
lives in shared memory, so persistent DataLoader workers see it too. With the plain shard list
each rank × worker reads a disjoint set of whole shards, so one epoch sees every sample exactly
once across all of them (provided there are at least world_size × num_workers shards).

Bad data is logged (one warning line naming the shard or key and the error), counted by the
`LogAndCount` handler (``pipeline.failures``) and skipped: a truncated tar yields its samples up
to the cut and counts the read error and the partial sample it leaves; a corrupt or missing
image counts once. (A tar cut exactly between two members reads as a shorter shard: tarfile
cannot tell it apart; compare with the manifest's counts if that matters.)

Shards are the embedded `shapes` shards or img2dataset's output as is: one image member (jpg, jpeg,
png or webp, any size and aspect ratio), the caption ``txt``, an optional ``json``. With ``size`` the
image is fitted to a square (short side resized, centre or seeded random crop); images under the
minimum are skipped and counted apart (``pipeline.too_small``); shards with no image or caption
member fail at once (LayoutError naming the shard and the members found).

A decoded sample is a dict::

    {"key": str, "url": shard path, "image": image (fitted to `size` when given), "caption": str,
     "scene": dict or None (the json member), "image_{r}": image at extra resolution r (when requested)}
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds
from PIL import Image

from .images import ImageTooSmall, MissingImage, crop_offset, fit_square, image_member, open_rgb
from .position import Batched, StreamPosition

log = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "ais://", "sftp://", "scp://")


# ---------------------------------------------------------------------------------------------
# Shared state: the epoch and the bad-sample counter live in shared memory so that DataLoader
# workers (forked or spawned, persistent or not) read the epoch set in the main process and the
# main process reads the failures counted in the workers. A spawn-context lock pickles into
# spawn/forkserver workers and is inherited by forked ones (a fork-context lock refuses spawn).
# ---------------------------------------------------------------------------------------------

_SHARED = multiprocessing.get_context("spawn")


class SharedEpoch:
    """An epoch number shared with DataLoader worker processes."""

    def __init__(self, epoch: int = 0):
        self._value = _SHARED.Value("q", int(epoch), lock=False)  # one writer: the main process

    def set(self, epoch: int) -> None:
        self._value.value = int(epoch)

    def get(self) -> int:
        return self._value.value


class LogAndCount:
    """Webdataset exception handler: log one warning line naming the shard/key and the error,
    count it, and continue. Raises once more than `max_failures` errors were seen (None: never).
    Images under the minimum size are counted apart (``too_small``); a LayoutError is raised."""

    def __init__(self, max_failures: int | None = None):
        self._count = _SHARED.Value("q", 0)
        self._small = _SHARED.Value("q", 0)
        self.max_failures = max_failures

    @property
    def count(self) -> int:
        return self._count.value

    @property
    def too_small(self) -> int:
        """Images skipped for being under the minimum size (not counted as bad data)."""
        return self._small.value

    def reset(self) -> None:
        self._count.value = 0
        self._small.value = 0

    def __call__(self, exn: BaseException) -> bool:
        if isinstance(exn, LayoutError):
            raise exn
        if isinstance(exn, SmallImage):
            with self._small.get_lock():
                self._small.value += 1
                small = self._small.value
            if small == 1 or small % 1000 == 0:  # one line, then every thousandth: small images are common
                log.warning("skipping images under the minimum size (%d so far): %s", small, exn)
            return True
        with self._count.get_lock():
            self._count.value += 1
            count = self._count.value
        # webdataset appends the shard url (and stream) to exn.args; keep the readable parts.
        where = " | ".join(str(a) for a in exn.args if isinstance(a, str) and a) or str(exn)
        log.warning("skipping bad data (%d so far): %s: %s", count, type(exn).__name__, where)
        if self.max_failures is not None and count > self.max_failures:
            raise RuntimeError(f"more than {self.max_failures} bad samples or shards; last: {where}") from exn
        return True


class BadSample(ValueError):
    """A sample that could not be decoded; the message names its key and shard."""


class SmallImage(BadSample):
    """A sample whose image is under the minimum size: skipped and counted apart (``LogAndCount.too_small``)."""


class LayoutError(BadSample):
    """A sample missing its image or caption that holds members this reader does not know (another
    layout, e.g. ``gif`` images or ``caption.txt``): raised at once, never skipped, since every sample of
    such shards would be. A sample that merely lacks a member (the partial sample at a tar's cut) is a
    BadSample, counted and skipped."""


_KNOWN_MEMBER = re.compile(r"^(jpg|jpeg|png|webp|txt|json|\d+\.png)$")


# ---------------------------------------------------------------------------------------------
# Shards and ranks
# ---------------------------------------------------------------------------------------------


def resolve_shards(source: str | os.PathLike | Sequence[str | os.PathLike], split: str | None = None) -> list[str]:
    """Shard paths from a brace pattern ('shapes-train-{000000..000003}.tar'), a glob, a directory
    (its *.tar, only `shapes-{split}-*` when `split` is given) or a list of any of these.
    Raises FileNotFoundError naming the pattern/directory when nothing (or a named file) is missing."""
    if isinstance(source, (list, tuple)):
        urls = [u for item in source for u in resolve_shards(item, split)]
    else:
        text = os.fspath(source)
        if text.startswith(_REMOTE_PREFIXES):
            return list(braceexpand.braceexpand(text))
        if os.path.isdir(text):
            pattern = os.path.join(text, f"shapes-{split}-*.tar" if split else "*.tar")
            urls = sorted(glob.glob(pattern))
            if split is None:
                names = [os.path.basename(u) for u in urls]
                splits = {n.rsplit("-", 1)[0] for n in names if n.startswith("shapes-")}
                if len(splits) > 1:
                    raise ValueError(f"{text} holds shards of several splits {sorted(splits)}; pass split=")
        else:
            urls = []
            for item in braceexpand.braceexpand(text):
                if glob.has_magic(item):
                    urls.extend(sorted(glob.glob(item)))
                elif os.path.exists(item):
                    urls.append(item)
                else:
                    raise FileNotFoundError(f"shard {item!r} (from {text!r}) does not exist")
            pattern = text
        if not urls:
            raise FileNotFoundError(
                f"no shards found for {pattern!r}: expected a directory of .tar shards, a brace pattern "
                f"like 'shapes-train-{{000000..000003}}.tar' or a list of shard paths"
            )
    if not urls:
        raise FileNotFoundError(f"no shards found in the empty list {source!r}")
    for u in urls:  # a FIFO or device named .tar would block the reader forever
        if not u.startswith(_REMOTE_PREFIXES) and os.path.exists(u) and not os.path.isfile(u):
            raise ValueError(f"shard {u!r} is not a regular file (a directory, FIFO, socket or device); "
                             "expected a .tar file")
    return urls


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values, else torch.distributed if initialised, else env RANK /
    WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        r, w = rank, world_size
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank is not None:
        r = rank
    if world_size is not None:
        w = world_size
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is outside world_size {w}")
    return r, w


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# ---------------------------------------------------------------------------------------------
# Stages (picklable, so that spawned DataLoader workers can receive the pipeline)
# ---------------------------------------------------------------------------------------------


class EpochShardShuffle:
    """Shuffle the whole shard list with random.Random(f'{seed}-{epoch}'): every rank and worker
    gets the same order, so the node and worker splits that follow stay disjoint."""

    def __init__(self, seed: int, epoch: SharedEpoch):
        self.seed, self.epoch = seed, epoch

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        shards = list(src)
        random.Random(f"shards-{self.seed}-{self.epoch.get()}").shuffle(shards)
        yield from shards


class SplitByNode:
    """Keep every world_size-th shard starting at rank (explicit, so tests can emulate ranks)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        yield from islice(src, self.rank, None, self.world_size)


class SplitByWorker:
    """Keep every num_workers-th shard starting at this DataLoader worker's id."""

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        worker, num_workers = _worker_info()
        count = 0
        for shard in islice(src, worker, None, num_workers):
            count += 1
            yield shard
        if count == 0:
            log.warning("DataLoader worker %d of %d got no shards: use fewer workers or more shards",
                        worker, num_workers)


class EpochSampleShuffle(wds.PipelineStage):
    """Buffered sample shuffle seeded by (seed, epoch, rank, worker): deterministic per epoch."""

    def __init__(self, bufsize: int, seed: int, epoch: SharedEpoch, rank: int):
        self.bufsize, self.seed, self.epoch, self.rank = bufsize, seed, epoch, rank

    def run(self, src: Iterable[dict]) -> Iterator[dict]:
        worker, _ = _worker_info()
        rng = random.Random(f"samples-{self.seed}-{self.epoch.get()}-{self.rank}-{worker}")
        return wds.shuffle(self.bufsize, initial=self.bufsize, rng=rng)(src)


class EpochResampledShards(wds.ResampledShards):
    """Shards drawn with replacement, seeded by (seed, epoch, rank, worker); each rank × worker
    draws ceil(#shards / (world_size × num_workers)) shards per epoch (about one pass in all)."""

    def __init__(self, urls: list[str], seed: int, epoch: SharedEpoch, rank: int, world_size: int):
        super().__init__(urls, seed=seed, worker_seed=self._worker_seed, deterministic=True)
        self.shared_epoch, self.rank, self.world_size = epoch, rank, world_size

    def _worker_seed(self) -> int:
        return self.rank * 1000 + _worker_info()[0]

    def __iter__(self) -> Iterator[dict]:
        _, num_workers = _worker_info()
        self.nshards = -(-len(self.urls) // (self.world_size * num_workers))
        self.epoch = self.shared_epoch.get() - 1  # the parent increments before seeding
        return super().__iter__()


def _to_tensor(image: Image.Image, image_format: str) -> Image.Image | torch.Tensor:
    if image_format == "pil":
        return image
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # H W C
    return array.permute(2, 0, 1).float().div_(127.5).sub_(1.0)  # C H W in [-1, 1]


def decode_sample(
    sample: dict[str, Any], image_format: str = "torch", resolutions: Sequence[int] = (), *,
    size: int | None = None, crop: str = "center", min_size: int | None = None, seed: int = 0,
    epoch: SharedEpoch | None = None,
) -> dict[str, Any]:
    """Raw tar sample -> {"key", "url", "image", "caption", "scene", "image_{r}"...}.

    The image is the first member of jpg / jpeg / png / webp; with `size` it is fitted to a square
    (``unclip.data.images.fit_square``: short side resized, `crop` "center" or "random", the random
    offset seeded by (seed, epoch, key)); `min_size` is the smallest short side kept (default: the
    target size, never upscale). ``image_{r}`` is the ``{r}.png`` member when the shard has one,
    else the image fitted to r. ``scene`` is the parsed json member (a shapes scene, or img2dataset's
    metadata) or None. Raises BadSample naming the key and shard on a missing member or undecodable
    content, SmallImage when an image is under the minimum."""
    key, url = sample.get("__key__"), sample.get("__url__")
    e = 0 if epoch is None else epoch.get()

    def fit(image, r):
        return fit_square(image, r, crop=crop, min_size=min_size,
                          offset_fn=lambda span: crop_offset(seed, e, key, span))

    try:
        _, data = image_member(sample)
        image = open_rgb(data)
        out = {"key": key, "url": url, "image": _to_tensor(fit(image, size) if size else image, image_format),
               "caption": sample["txt"].decode("utf-8"),
               "scene": json.loads(sample["json"]) if sample.get("json") is not None else None}
        for r in resolutions:
            extra = sample.get(f"{r}.png")
            out[f"image_{r}"] = _to_tensor(open_rgb(extra) if extra is not None else fit(image, r), image_format)
    except ImageTooSmall as exn:
        raise SmallImage(f"sample {key!r} in {url}: {exn}") from exn
    except (MissingImage, KeyError) as exn:
        found = sorted(k for k in sample if not k.startswith("__"))
        what = str(exn) if isinstance(exn, MissingImage) else f"no {exn} member (found members {found})"
        if any(not _KNOWN_MEMBER.match(k) for k in found):  # another layout: every sample would be skipped
            raise LayoutError(f"shard {url}, sample {key!r}: {what}") from exn
        raise BadSample(f"sample {key!r} in {url}: {what}") from exn  # e.g. the partial sample at a tar's cut
    except Exception as exn:
        raise BadSample(f"sample {key!r} in {url}: {type(exn).__name__}: {exn}") from exn
    return out


def pick_fields(sample: dict[str, Any], fields: tuple[str, ...]) -> tuple:
    return tuple(sample[f] for f in fields)


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


class ShardPipeline(wds.DataPipeline):
    """A webdataset DataPipeline that also holds its shared epoch and bad-sample handler."""

    def __init__(self, stages: list, epoch: SharedEpoch, handler: LogAndCount, shards: list[str],
                 position: StreamPosition):
        super().__init__(*stages)
        self.epoch, self.handler, self.shards, self.position = epoch, handler, shards, position
        self.tagged = False

    def tag_positions(self) -> None:
        """From now on yield ``Tagged(batch, worker, position)`` and an end marker per worker (position.py)."""
        if not self.tagged:
            self.pipeline.append(self.position.tag_batches)
            self.tagged = True

    def resume_positions(self, positions: dict[int, list[int]]) -> None:
        """Start the next iteration of each worker at its position (empty: from the epoch's beginning)."""
        self.position.resume = {int(w): [int(v) for v in pos] for w, pos in positions.items()}

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set(epoch)

    @property
    def failures(self) -> int:
        return self.handler.count

    @property
    def too_small(self) -> int:
        return self.handler.too_small


def shard_pipeline(
    shards: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    split: str | None = None,
    batch_size: int | None = None,
    partial_batches: bool = True,
    image_format: str = "torch",
    resolutions: Sequence[int] = (),
    size: int | None = None,
    crop: str = "center",
    min_size: int | None = None,
    fields: Sequence[str] | None = None,
    shuffle_shards: bool = True,
    shuffle_buffer: int = 0,
    resampled: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    handler: LogAndCount | None = None,
) -> ShardPipeline:
    """Build the reading pipeline (see the module docstring for its stages and sample dict).

    shards: brace pattern, glob, directory (with `split`) or list.  image_format: 'torch' (CHW
    float in [-1, 1]) or 'pil'.  resolutions: extra resolutions to decode as 'image_{r}'.
    size / crop / min_size: fit every image to a `size` square ("center" or seeded "random" crop; short
    sides under `min_size`, default `size`, are skipped and counted; see ``decode_sample``).
    fields: return these sample fields as a tuple instead of the dict.  resampled: draw shards
    with replacement (no node/worker split needed; every rank × worker draws its own).
    rank / world_size: default from torch.distributed, else env RANK / WORLD_SIZE, else 0 / 1.
    """
    if image_format not in ("torch", "pil"):
        raise ValueError(f"image_format must be 'torch' or 'pil', got {image_format!r}")
    shared_epoch = SharedEpoch(epoch)
    decode = partial(decode_sample, image_format=image_format, resolutions=tuple(resolutions), size=size, crop=crop,
                     min_size=min_size, seed=seed, epoch=shared_epoch)
    tail = [wds.map(partial(pick_fields, fields=tuple(fields))) if fields else None,
            Batched(batch_size, partial=partial_batches) if batch_size else None]
    return build_pipeline(resolve_shards(shards, split), decode, tail, shuffle_shards=shuffle_shards,
                          shuffle_buffer=shuffle_buffer, resampled=resampled, seed=seed, epoch=shared_epoch,
                          rank=rank, world_size=world_size, handler=handler)


def build_pipeline(
    urls: list[str],
    decode: Callable[[dict], dict],
    tail: Sequence[Any | None] = (),
    *,
    shuffle_shards: bool = True,
    shuffle_buffer: int = 0,
    resampled: bool = False,
    seed: int = 0,
    epoch: int | SharedEpoch = 0,
    rank: int | None = None,
    world_size: int | None = None,
    handler: LogAndCount | None = None,
) -> ShardPipeline:
    """The stage list every shard reader shares: shards → (shuffle → node/worker split | resampled) →
    tar samples → optional shuffle buffer → ``decode`` (bad samples counted and skipped) → ``tail``."""
    rank, world_size = dist_info(rank, world_size)
    if not resampled and len(urls) < world_size:
        raise ValueError(f"{len(urls)} shards cannot feed {world_size} ranks: write more shards or use resampled=True")
    shared_epoch = epoch if isinstance(epoch, SharedEpoch) else SharedEpoch(epoch)
    handler = handler or LogAndCount()
    position = StreamPosition(buffered=shuffle_buffer > 1)
    if resampled:
        source = [EpochResampledShards(urls, seed, shared_epoch, rank, world_size)]
    else:
        source = [
            wds.SimpleShardList(urls),
            EpochShardShuffle(seed, shared_epoch) if shuffle_shards else None,
            SplitByNode(rank, world_size),
            SplitByWorker(),
        ]
    stages = [
        *source,
        position.count_shards,
        wds.tarfile_to_samples(handler=handler),
        EpochSampleShuffle(shuffle_buffer, seed, shared_epoch, rank) if shuffle_buffer > 1 else None,
        position.count_samples,
        wds.map(decode, handler=handler),
        *tail,
    ]
    return ShardPipeline([s for s in stages if s is not None], shared_epoch, handler, urls, position)
