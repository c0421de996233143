"""Precomputed CLIP embeddings: write them beside the image shards, read them back, validate the pairing.

The prior trains on (z_t, text tokens, z_i) only (Ramesh et al. 2022, §2.2), so CLIP runs once over
the image/caption shards and its outputs are stored as webdataset shards of their own.

Layout: image shard ``<images>/X.tar`` pairs with embedding shard ``<out_dir>/X.tar`` (same basename,
other folder), which holds, under the SAME ``__key__`` and in the SAME order, per sample::

    <key>.text_emb.npy     [D]     float32   z_t, L2-normalised pooled text embedding
    <key>.text_tokens.npy  [L, W]  float16   final-layer per-token text features (after ln_final)
    <key>.text_mask.npy    [L]     bool      True for real tokens, SOT and EOT included
    <key>.image_emb.npy    [D]     float32   z_i, L2-normalised image embedding
    <key>.txt                      utf-8     the caption that was encoded

plus ``<out_dir>/manifest.json`` (CLIP arch and dims, count per shard). Shards are written to a
temporary name and renamed, so a crash never leaves a half shard under a final name.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from unclip.io import atomic_path, atomic_write_json

from .images import IMAGE_EXTS, image_member, open_rgb
from .moments import Moments

if TYPE_CHECKING:
    from unclip.clip import FrozenCLIP

FORMAT = "unclip.embeddings/v1"
MANIFEST = "manifest.json"
ARRAY_FIELDS = ("text_emb", "text_tokens", "text_mask", "image_emb")  # stored as <key>.<field>.npy
_DTYPES = {"text_emb": np.float32, "text_tokens": np.float16, "text_mask": np.bool_, "image_emb": np.float32}
_TAR_END = 2 * tarfile.BLOCKSIZE  # a complete tar ends with two zero blocks
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's split: key up to the first dot of the basename

PathLike = str | os.PathLike
log = logging.getLogger(__name__)


class ShardMismatchError(ValueError):
    """Embedding shards that do not line up with their image shards (pairing, keys, order, counts, dims)."""


class CorruptShardError(ShardMismatchError):
    """A shard that cannot be read: truncated or corrupt tar, undecodable field, duplicate key."""


# ---------------------------------------------------------------------------------------------- reading


def iter_tar_samples(path: PathLike, fields: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Samples of a webdataset tar, in order: ``{"__key__": key, ext: bytes}``.

    Files are grouped the way webdataset groups them (consecutive members sharing the basename up to
    its first dot); extensions are lower-cased. With ``fields``, other extensions map to ``None``
    without being read. A truncated or corrupt tar, or a key that is split up, raises
    :class:`CorruptShardError` naming the shard; a missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    wanted = None if fields is None else set(fields)
    if not path.is_file():
        raise FileNotFoundError(f"shard not found: {path}")
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tf:
            current: dict[str, Any] | None = None
            seen: set[str] = set()
            for member in tf:
                if not member.isfile():
                    continue
                m = _KEY_EXT.match(member.name)
                if m is None:
                    continue
                key, ext = m.group(1), m.group(2).lower()
                if current is None or key != current["__key__"]:
                    if current is not None:
                        yield current
                    if key in seen:
                        raise CorruptShardError(f"{path}: key {key!r} appears twice (its files are not contiguous)")
                    seen.add(key)
                    current = {"__key__": key}
                if ext in current:
                    raise CorruptShardError(f"{path}: sample {key!r} has field {ext!r} twice")
                current[ext] = tf.extractfile(member).read() if wanted is None or ext in wanted else None
            f.seek(tf.offset)  # tarfile stops silently at a cut between members; the end marker tells
            if f.read(_TAR_END) != bytes(_TAR_END):
                raise CorruptShardError(f"{path}: truncated tar (no end-of-archive marker after "
                                        f"{len(seen)} samples)")
            if current is not None:  # the last sample is complete only once the end marker is seen
                yield current
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptShardError(f"{path}: truncated or corrupt tar ({e})") from e


def _decode_npy(shard: Path, key: str, field: str, data: bytes | None) -> np.ndarray:
    if data is None:
        raise ShardMismatchError(f"{shard}: sample {key!r} has no {field}.npy")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises several types for a bad header
        raise CorruptShardError(f"{shard}: sample {key!r} field {field}.npy is not a valid .npy ({e})") from e


def iter_embedding_shard(path: PathLike) -> Iterator[dict[str, Any]]:
    """Samples of one embedding shard: ``{"__key__", "text_emb", "text_tokens", "text_mask",
    "image_emb": np.ndarray, "txt": str}`` (``txt`` is ``None`` if absent)."""
    path = Path(path)
    for raw in iter_tar_samples(path):
        key = raw["__key__"]
        sample: dict[str, Any] = {"__key__": key}
        for field in ARRAY_FIELDS:
            sample[field] = _decode_npy(path, key, field, raw.get(f"{field}.npy"))
        txt = raw.get("txt")
        try:
            sample["txt"] = None if txt is None else txt.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorruptShardError(f"{path}: sample {key!r} field txt is not utf-8 ({e})") from e
        yield sample


def image_embedding_stats(embedding_shards: Sequence[PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of z_i over embedding shards (streamed, float64), for
    :meth:`unclip.clip.FrozenCLIP.set_stats`."""
    moments = Moments()
    for shard in embedding_shards:
        for sample in iter_embedding_shard(shard):
            moments.add(sample["image_emb"])
    mean, std = moments.mean_std("the embedding shards")
    return mean.astype(np.float32), std.astype(np.float32)


# ---------------------------------------------------------------------------------------------- writing


def embedding_shard_path(image_shard: PathLike, out_dir: PathLike) -> Path:
    """The embedding shard paired with ``image_shard``: the same basename in ``out_dir``."""
    return Path(out_dir) / Path(image_shard).name


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: reruns give identical bytes
    tf.addfile(info, io.BytesIO(data))


def _batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _field(shard: Path, sample: dict[str, Any], field: str) -> bytes:
    data = sample.get(field)
    if data is None:
        have = sorted(k for k in sample if k != "__key__")
        raise ShardMismatchError(f"{shard}: sample {sample['__key__']!r} has no {field!r} field (has {have})")
    return data


def _decode_for_clip(shard: Path, sample: dict[str, Any], image_field: str) -> tuple[str, Image.Image]:
    """(caption, RGB image) of one image-shard sample; ValueError saying what is wrong with it."""
    if sample.get("txt") is None:
        raise ValueError("no txt member")
    caption = sample["txt"].decode("utf-8")
    if image_field == "auto":
        _, data = image_member(sample)
    else:
        data = sample.get(image_field)
        if data is None:
            raise ValueError(f"no {image_field!r} member")
    return caption, open_rgb(data)


def _encode_shard(clip: FrozenCLIP, shard: Path, tmp: Path, batch_size: int, image_field: str,
                  bar: tqdm) -> tuple[int, dict[str, str]]:
    """Encode one image shard into the tar ``tmp``. Samples whose caption or image cannot be decoded are
    logged and skipped; returns (count written, {skipped key: reason})."""
    count, skipped = 0, {}
    fields = ({*IMAGE_EXTS, "txt"} if image_field == "auto" else {image_field, "txt"})
    with tarfile.open(tmp, "w") as tf:
        for batch in _batched(iter_tar_samples(shard, fields=fields), batch_size):
            keys, captions, images = [], [], []
            for s in batch:
                try:
                    caption, image = _decode_for_clip(shard, s, image_field)
                except (ValueError, OSError) as e:  # PIL raises OSError subclasses; MissingImage is a ValueError
                    skipped[s["__key__"]] = f"{type(e).__name__}: {e}"
                    log.warning("%s: skipping sample %r (%d skipped in this shard): %s", shard, s["__key__"],
                                len(skipped), skipped[s["__key__"]])
                    continue
                keys.append(s["__key__"])
                captions.append(caption)
                images.append(image)
            bar.update(len(batch))
            if not keys:
                continue
            text_emb, tokens, mask = clip.encode_text(captions, batch_size=batch_size)
            image_emb = clip.encode_image(images, batch_size=batch_size)
            arrays = {"text_emb": text_emb.cpu().numpy().astype(np.float32),
                      "text_tokens": tokens.cpu().numpy().astype(np.float16),
                      "text_mask": mask.cpu().numpy().astype(np.bool_),
                      "image_emb": image_emb.cpu().numpy().astype(np.float32)}
            for i, key in enumerate(keys):
                for field in ARRAY_FIELDS:
                    _add_member(tf, f"{key}.{field}.npy", _npy_bytes(arrays[field][i]))
                _add_member(tf, f"{key}.txt", captions[i].encode("utf-8"))
            count += len(keys)
    return count, skipped


def clip_info(clip: FrozenCLIP) -> dict[str, Any]:
    return {"arch": clip.arch, "embed_dim": clip.embed_dim, "token_width": clip.token_width,
            "context_length": clip.context_length, "image_size": clip.image_size}


def check_output_folder(shards: list[Path], out_dir: Path) -> None:
    """Refuse inputs whose embedding shards would collide or overwrite an input; a missing input."""
    names = [p.name for p in shards]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"image shards share basenames {dup}; their embedding shards would collide in {out_dir}")
    for p in shards:
        if not p.is_file():
            raise FileNotFoundError(f"image shard not found: {p}")
        if embedding_shard_path(p, out_dir).resolve() == p.resolve():
            raise ValueError(f"out_dir {out_dir} holds the image shard {p}; write embeddings to another folder")


def check_manifest_clip(manifest_path: Path, info: dict[str, Any]) -> None:
    """Refuse to resume into a folder whose manifest was written by another CLIP."""
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text()).get("clip", {})
        if {k: old.get(k) for k in info} != info:
            raise ValueError(f"{manifest_path} was written by CLIP {old}, not {info}; use another out_dir")


def manifest_entries(manifest_path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's per-shard entries by embedding shard name ({} without a manifest)."""
    if not manifest_path.is_file():
        return {}
    return {e["embedding_shard"]: e for e in json.loads(manifest_path.read_text()).get("shards", [])}


def encode_shards(clip: FrozenCLIP, shards: Sequence[Path], out_dir: Path, *, batch_size: int = 64,
                  image_field: str = "auto", previous: dict[str, dict[str, Any]] | None = None,
                  bar: tqdm | None = None) -> list[dict[str, Any]]:
    """Encode each image shard into its embedding shard in ``out_dir`` (written atomically); returns one
    manifest entry per shard. ``previous`` (resuming: the old manifest's entries by embedding shard name):
    an output that exists and validates against its input is kept."""
    bar = bar if bar is not None else tqdm(disable=True)
    dims = {"embed_dim": clip.embed_dim, "token_width": clip.token_width, "context_length": clip.context_length}
    entries = []
    for shard in shards:
        out = embedding_shard_path(shard, out_dir)
        count, skipped = None, (previous or {}).get(out.name, {}).get("skipped", {})
        if previous is not None and out.is_file():
            try:
                count = validate_embedding_shards([shard], [out], skipped={out.name: skipped}, **dims)["samples"]
                bar.update(count + len(skipped))
            except ShardMismatchError:
                count = None  # stale or broken: recompute
        if count is None:
            with atomic_path(out) as tmp:
                count, skipped = _encode_shard(clip, shard, tmp, batch_size, image_field, bar)
        entries.append({"embedding_shard": out.name, "image_shard": str(shard.resolve()), "count": count,
                        "skipped": skipped})
    return entries


def write_manifest(out_dir: Path, clip: FrozenCLIP, image_field: str, entries: Sequence[dict[str, Any]]) -> Path:
    """Write ``out_dir/manifest.json`` (atomically) for these shard entries."""
    manifest = {"format": FORMAT, "clip": clip_info(clip), "image_field": image_field,
                "fields": {f"{f}.npy": np.dtype(_DTYPES[f]).name for f in ARRAY_FIELDS} | {"txt": "utf-8"},
                "shards": list(entries), "total": sum(e["count"] for e in entries),
                "skipped": sum(len(e.get("skipped", {})) for e in entries)}
    atomic_write_json(out_dir / MANIFEST, manifest)
    return out_dir / MANIFEST


def precompute_embeddings(clip: FrozenCLIP, shard_paths: Sequence[PathLike], out_dir: PathLike,
                          batch_size: int = 64, progress: bool = True, *, image_field: str = "auto",
                          resume: bool = False) -> dict[str, Any]:
    """Encode every sample of ``shard_paths`` with ``clip`` into paired embedding shards in ``out_dir``.

    Shards are read in order, sample by sample (no shuffling or splitting), and each output keeps
    its input's keys and order. ``image_field`` picks the image to embed: "auto" takes the first of
    jpg / jpeg / png / webp (img2dataset's shards, any size: CLIP's own preprocessing resizes and
    crops), or a member name such as ``"256.png"`` where a shard holds several resolutions. Samples
    whose image or caption cannot be decoded are logged, skipped and listed in the manifest (the
    validation accepts their absence). With ``resume``, an output shard that already exists and
    validates against its input is kept. Returns ``{"shards", "samples", "skipped", "counts", "manifest"}``.
    (``unclip.data.precompute`` is the command line, also under torchrun.)
    """
    shards, out_dir = [Path(p) for p in shard_paths], Path(out_dir)
    check_output_folder(shards, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = None
    if resume:
        check_manifest_clip(out_dir / MANIFEST, clip_info(clip))
        previous = manifest_entries(out_dir / MANIFEST)
    entries: list[dict[str, Any]] = []
    with tqdm(desc="CLIP embeddings", unit="sample", disable=not progress) as bar:
        for shard in shards:  # the manifest is rewritten after each shard: a crash keeps the finished ones
            entries += encode_shards(clip, [shard], out_dir, batch_size=batch_size, image_field=image_field,
                                     previous=previous, bar=bar)
            path = write_manifest(out_dir, clip, image_field, entries)
    return {"shards": len(shards), "samples": sum(e["count"] for e in entries),
            "skipped": sum(len(e["skipped"]) for e in entries),
            "counts": {e["embedding_shard"]: e["count"] for e in entries}, "manifest": path}


# ---------------------------------------------------------------------------------------------- validation


def _check_sample(shard: Path, raw: dict[str, Any], dims: dict[str, int | None], image_txt: bytes | None) -> None:
    """Check one raw embedding sample's fields against ``dims``; fills dims left as None."""
    key = raw["__key__"]
    arrays = {f: _decode_npy(shard, key, f, raw.get(f"{f}.npy")) for f in ARRAY_FIELDS}
    # dims not given are taken from the first sample, then held fixed for every later one
    if dims["embed_dim"] is None and arrays["text_emb"].ndim == 1:
        dims["embed_dim"] = int(arrays["text_emb"].shape[0])
    if arrays["text_tokens"].ndim == 2:
        for name, size in zip(("context_length", "token_width"), arrays["text_tokens"].shape):
            dims[name] = int(size) if dims[name] is None else dims[name]
    D, L, W = dims["embed_dim"], dims["context_length"], dims["token_width"]
    expected = {"text_emb": (D,), "image_emb": (D,), "text_tokens": (L, W), "text_mask": (L,)}
    for field, a in arrays.items():
        if a.shape != expected[field] or a.dtype != _DTYPES[field]:
            raise ShardMismatchError(
                f"{shard}: sample {key!r} field {field}.npy is {a.dtype} {a.shape}, expected "
                f"{np.dtype(_DTYPES[field]).name} {expected[field]} (embed_dim={D}, context_length={L}, "
                f"token_width={W})")
        if a.dtype != np.bool_ and not np.isfinite(a).all():
            raise ShardMismatchError(f"{shard}: sample {key!r} field {field}.npy has non-finite values")
    if not arrays["text_mask"][0]:
        raise ShardMismatchError(f"{shard}: sample {key!r} text_mask.npy is False at SOT (position 0)")
    if image_txt is not None and raw.get("txt") is not None and raw["txt"] != image_txt:
        raise ShardMismatchError(f"{shard}: sample {key!r} caption differs from the image shard's txt")


def _skipped_keys(embedding_shards: Sequence[Path]) -> dict[str, set[str]]:
    """{embedding shard name: keys the precompute skipped}, from the manifest beside the shards (if any)."""
    out: dict[str, set[str]] = {}
    for folder in {p.parent for p in embedding_shards}:
        for name, entry in manifest_entries(folder / MANIFEST).items():
            out[name] = set(entry.get("skipped", {}))
    return out


def validate_embedding_shards(image_shards: Sequence[PathLike], embedding_shards: Sequence[PathLike], *,
                              embed_dim: int | None = None, token_width: int | None = None,
                              context_length: int | None = None,
                              skipped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check that ``embedding_shards[i]`` is the embedding shard of ``image_shards[i]``.

    Refuses, with :class:`ShardMismatchError` naming the shard and the first offending key or field:
    different list lengths or basenames, a missing shard, different keys/order/counts, missing
    fields, arrays of the wrong shape or dtype (dims given here, or else taken from the first
    sample and held fixed), captions that differ, and truncated or corrupt tars
    (:class:`CorruptShardError`). Image samples the precompute skipped (undecodable; ``skipped``:
    {embedding shard name: keys}, default read from the manifest beside the embedding shards) may be
    absent. Returns ``{"shards", "samples", "counts", "embed_dim",
    "token_width", "context_length"}``.
    """
    image_shards = [Path(p) for p in ([image_shards] if isinstance(image_shards, (str, os.PathLike)) else image_shards)]
    embedding_shards = [Path(p) for p in
                        ([embedding_shards] if isinstance(embedding_shards, (str, os.PathLike)) else embedding_shards)]
    if len(image_shards) != len(embedding_shards):
        raise ShardMismatchError(f"{len(image_shards)} image shards but {len(embedding_shards)} embedding shards")
    dims: dict[str, int | None] = {"embed_dim": embed_dim, "token_width": token_width, "context_length": context_length}
    skipped_keys = {k: set(v) for k, v in (skipped if skipped is not None else _skipped_keys(embedding_shards)).items()}
    counts: dict[str, int] = {}
    for img, emb in zip(image_shards, embedding_shards):
        if img.name != emb.name:
            raise ShardMismatchError(f"embedding shard {emb} is paired with image shard {img}: basenames differ")
        for p, what in ((img, "image"), (emb, "embedding")):
            if not p.is_file():
                raise ShardMismatchError(f"{what} shard {p} does not exist (paired with {img if p is emb else emb})")
        n = 0
        gone = skipped_keys.get(emb.name, set())
        kept = (a for a in iter_tar_samples(img, fields={"txt"}) if a["__key__"] not in gone)
        pairs = itertools.zip_longest(kept, iter_tar_samples(emb))
        for i, (a, b) in enumerate(pairs):
            if b is None:
                raise ShardMismatchError(f"{emb}: ends after {i} samples, but image shard {img} has more "
                                         f"(first missing key {a['__key__']!r})")
            if a is None:
                raise ShardMismatchError(f"{emb}: extra sample {b['__key__']!r} at index {i}; image shard {img} "
                                         f"has only {i} samples")
            if a["__key__"] != b["__key__"]:
                raise ShardMismatchError(f"{emb}: sample {i} has key {b['__key__']!r}, expected {a['__key__']!r} "
                                         f"(keys and order must match {img})")
            _check_sample(emb, b, dims, a.get("txt"))
            n += 1
        counts[emb.name] = n
    return {"shards": len(counts), "samples": sum(counts.values()), "counts": counts, **dims}
