"""The real reference set of the realism metrics (FD, precision / recall, realism, Inception FID).

`load_reference(source, n, size)` gives the first `n` images of
  * None: shapes renders of the val split (the synthetic dataset's own "real" images);
  * an image folder: every .png / .jpg / .jpeg / .webp under it (recursively), in sorted path order;
  * webdataset shards (img2dataset layout ``KEY.jpg|jpeg|png|webp`` + ``KEY.txt``): a directory of
    ``*.tar``, a brace pattern (``/data/coco/{00000..00009}.tar``), a glob, or a list of these;
each resized (bicubic) to cover the generated images' size and centre-cropped to it, so that
generated and real images reach the feature extractor at the same resolution.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


@dataclasses.dataclass
class ReferenceSet:
    """Reference images (already at the target size), a human description for report notes, and the
    shard captions when the source had ``.txt`` members (None per image otherwise)."""
    images: list[Image.Image]
    description: str
    captions: list[str | None]


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize (bicubic) so that the image covers `size` = (width, height), then centre-crop to it;
    for a square target this is "short side to size, centre crop"."""
    image = image.convert("RGB")
    w, h = size
    scale = max(w / image.width, h / image.height)
    rw, rh = max(w, round(image.width * scale)), max(h, round(image.height * scale))
    if (rw, rh) != image.size:
        image = image.resize((rw, rh), Image.BICUBIC)
    left, top = (rw - w) // 2, (rh - h) // 2
    return image.crop((left, top, left + w, top + h))


def shapes_reference(n: int, size: tuple[int, int], seed: int = 0) -> ReferenceSet:
    """`n` shapes renders of the val split (square, at the generated width)."""
    from unclip.data import shapes as S

    ds = S.ShapesDataset("val", length=n, seed=seed, resolution=size[0])
    images = [fit_image(ds.image(i), size) for i in range(n)]
    return ReferenceSet(images, f"shapes renders (val split, seed {seed})", [ds.caption(i) for i in range(n)])


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS)


def _iter_folder(files: Sequence[Path]) -> Iterator[tuple[Image.Image, str | None]]:
    for path in files:
        try:
            with Image.open(path) as im:
                yield im.convert("RGB"), None
        except (UnidentifiedImageError, OSError) as e:
            log.warning("reference: skipping unreadable image %s (%s)", path, e)


def _iter_shards(shards: Sequence[str]) -> Iterator[tuple[Image.Image, str | None]]:
    """(image, caption) of each sample with an image member, shard by shard, read lazily."""
    from unclip.data.embeddings import iter_tar_samples

    for shard in shards:
        for sample in iter_tar_samples(shard, fields=(*IMAGE_EXTS, "txt")):
            ext = next((e for e in IMAGE_EXTS if sample.get(e) is not None), None)
            if ext is None:
                continue
            try:
                with Image.open(io.BytesIO(sample[ext])) as im:
                    image = im.convert("RGB")
            except (UnidentifiedImageError, OSError) as e:
                log.warning("reference: skipping undecodable %s.%s in %s (%s)", sample["__key__"], ext, shard, e)
                continue
            txt = sample.get("txt")
            yield image, None if txt is None else txt.decode("utf-8", "replace").strip()


def _n_shards(shards: Sequence[str]) -> str:
    return f"{len(shards)} shard" + ("s" if len(shards) != 1 else "")


def _is_shard_source(text: str) -> bool:
    """A brace pattern, a glob or a .tar path (a directory is decided by its contents)."""
    import glob

    return text.endswith(".tar") or "{" in text or glob.has_magic(text)


def _open_source(source: Any) -> tuple[Iterator[tuple[Image.Image, str | None]], str]:
    """The lazy (image, caption) stream of `source` and its description; clear errors on bad input."""
    from unclip.data.wds import resolve_shards

    if isinstance(source, (list, tuple)):
        shards = resolve_shards([os.fspath(s) for s in source])
        return _iter_shards(shards), f"images from webdataset shards {shards[0]} … ({_n_shards(shards)})"
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        if any(path.glob("*.tar")):
            shards = resolve_shards(text)
            return _iter_shards(shards), f"images from webdataset shards in {text} ({_n_shards(shards)})"
        files = _folder_files(path)
        if not files:
            raise FileNotFoundError(f"reference folder {text} holds no images (looked for "
                                    f"{', '.join('*.' + e for e in IMAGE_EXTS)}, recursively, and *.tar shards)")
        return _iter_folder(files), f"images from folder {text}"
    if _is_shard_source(text):
        shards = resolve_shards(text)  # names a missing shard or an empty pattern
        return _iter_shards(shards), f"images from webdataset shards {text} ({_n_shards(shards)})"
    expected = (f"expected an image folder ({'/'.join(IMAGE_EXTS)}), a directory of .tar shards, a .tar shard, "
                "a brace pattern or a glob")
    if path.exists():
        raise ValueError(f"reference {text!r} is a file but not a .tar shard: {expected}")
    raise FileNotFoundError(f"reference {text!r} does not exist: {expected}")


def load_reference(source: Any, n: int, size: int | tuple[int, int], seed: int = 0,
                   min_images: int = 2) -> ReferenceSet:
    """The first `n` reference images of `source` (see the module doc) at `size` (int: square).
    `seed` only picks the shapes scenes. Raises ValueError when fewer than `min_images` are found
    (realism metrics need more than k per set); fewer than `n` but enough only logs a warning."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if hasattr(source, "__iter__") and not isinstance(source, (str, bytes, os.PathLike)):
        source = list(source)  # a Hydra ListConfig
    if source is None:
        ref = shapes_reference(n, size, seed)
    else:
        stream, description = _open_source(source)
        images, captions = [], []
        for image, caption in stream:
            images.append(fit_image(image, size))
            captions.append(caption)
            if len(images) >= n:
                break
        ref = ReferenceSet(images, description, captions)
    if len(ref.images) < min_images:
        raise ValueError(f"reference set ({ref.description}) gave {len(ref.images)} images; the realism metrics "
                         f"need at least {min_images} (more than k per set)")
    if len(ref.images) < n:
        log.warning("reference set (%s) has only %d images (n_reference=%d)", ref.description, len(ref.images), n)
    ref.description = f"{len(ref.images)} {ref.description}"
    return ref
