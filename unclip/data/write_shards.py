"""Write the shapes dataset as webdataset tar shards plus a JSON manifest.

Layout of an output folder (one folder may hold several splits)::

    {out}/shapes-{split}-000000.tar, shapes-{split}-000001.tar, ...   `shard_size` samples each
    {out}/shapes-{split}.json                                          manifest, written last

Each tar member is ``{key}.{ext}`` with the sample dict of `unclip.data.shapes` (png, txt, json,
and ``{r}.png`` per extra resolution). Tars are reproducible: fixed mtime/owner, stable keys.
The manifest holds the generating config, the shard names and per-shard counts; a folder whose
shards of this split come from another config (or from an interrupted run, which leaves no
manifest) is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import webdataset as wds

from unclip.data.shapes import SPLITS, ShapesDataset, parse_heldout
from unclip.io import atomic_write_json

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "unclip-shapes-v1"
_CONFIG_KEYS = ("split", "n", "seed", "resolution", "extra_resolutions", "shard_size", "heldout", "val_fraction")
_FIXED_MTIME = 946684800.0  # 2000-01-01: identical tar bytes on every run


def shard_name(split: str, index: int) -> str:
    return f"shapes-{split}-{index:06d}.tar"


def manifest_path(out: str | os.PathLike, split: str) -> str:
    return os.path.join(os.fspath(out), f"shapes-{split}.json")


def existing_shards(out: str | os.PathLike, split: str) -> list[str]:
    prefix = f"shapes-{split}-"
    if not os.path.isdir(out):
        return []
    return sorted(f for f in os.listdir(out) if f.startswith(prefix) and f.endswith(".tar"))


def _check_output(out: str, config: Mapping[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The existing manifest when `out` already holds exactly this config; None when the folder is
    free (or was cleared because overwrite=True); raise FileExistsError otherwise."""
    split = config["split"]
    shards, mpath = existing_shards(out, split), manifest_path(out, split)
    if not shards and not os.path.exists(mpath):
        return None
    old = None
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
    same = old is not None and all(old.get(k) == config[k] for k in _CONFIG_KEYS)
    if same and sorted(old["shards"]) == shards and not overwrite:
        return old
    if not overwrite:
        if old is None:
            why = f"{len(shards)} shards of split {split!r} without a manifest (an interrupted run?)"
        else:
            diff = {k: (old.get(k), config[k]) for k in _CONFIG_KEYS if old.get(k) != config[k]}
            why = f"shards of another config (existing vs requested: {diff})" if diff else "an incomplete shard set"
        raise FileExistsError(f"{out} already holds {why}; choose another folder or pass overwrite=True (--overwrite)")
    for name in shards:
        os.remove(os.path.join(out, name))
    if os.path.exists(mpath):
        os.remove(mpath)
    return None


def _render_sample(args: tuple[ShapesDataset, int]) -> dict[str, Any]:
    dataset, index = args
    sample = dataset.sample(index)
    return {k: v.encode("utf-8") if isinstance(v, str) and k != "__key__" else v for k, v in sample.items()}


def _samples(dataset: ShapesDataset, num_workers: int) -> Iterator[dict[str, Any]]:
    jobs = ((dataset, i) for i in range(len(dataset)))
    if num_workers <= 1:
        yield from map(_render_sample, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:  # imap keeps index order
        yield from pool.imap(_render_sample, jobs, chunksize=16)


def write_shards(
    out: str | os.PathLike,
    split: str = "train",
    n: int = 10_000,
    resolution: int = 64,
    extra_resolutions: Sequence[int] = (),
    seed: int = 0,
    shard_size: int = 1000,
    heldout: Iterable[Mapping[str, str]] | str | None = None,
    val_fraction: float = 0.1,
    overwrite: bool = False,
    num_workers: int = 1,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, Any]:
    """Render `n` samples of `split` into `{out}/shapes-{split}-{i:06d}.tar` and return the manifest.

    `progress` wraps the sample iterator (e.g. ``lambda it: tqdm(it, total=n)``). If `out` already
    holds this exact config the existing manifest is returned and nothing is written.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n < 1 or shard_size < 1:
        raise ValueError(f"n and shard_size must be positive, got n={n}, shard_size={shard_size}")
    out = os.fspath(out)
    extra = sorted({int(r) for r in extra_resolutions} - {int(resolution)})
    config = {
        "split": split, "n": int(n), "seed": int(seed), "resolution": int(resolution),
        "extra_resolutions": extra, "shard_size": int(shard_size),
        "heldout": parse_heldout(heldout), "val_fraction": float(val_fraction),
    }
    os.makedirs(out, exist_ok=True)
    existing = _check_output(out, config, overwrite)
    if existing is not None:
        log.info("%s already holds %d %s samples of this config; nothing to do", out, n, split)
        return existing

    dataset = ShapesDataset(split, n, seed, resolution, extra, config["heldout"], val_fraction)
    samples: Iterable[dict[str, Any]] = _samples(dataset, num_workers)
    if progress is not None:
        samples = progress(samples)
    pattern = os.path.join(out, f"shapes-{split}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0, encoder=False, mtime=_FIXED_MTIME) as writer:
        for sample in samples:
            writer.write(sample)
    # ShardWriter starts a new shard after exactly `shard_size` samples: all but the last are full.
    n_shards = -(-n // shard_size)
    counts = [shard_size] * (n_shards - 1) + [n - shard_size * (n_shards - 1)]
    manifest = {
        "format": MANIFEST_FORMAT,
        **config,
        "keys": f"{split}-{seed}-{{index:08d}}",
        "members": ["png", "txt", "json"] + [f"{r}.png" for r in extra],
        "shards": [shard_name(split, i) for i in range(n_shards)],
        "counts": counts,
    }
    atomic_write_json(manifest_path(out, split), manifest)
    return manifest
