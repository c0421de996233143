"""Images of any size and format from shard members, fitted to a stage's square resolution.

Shards in img2dataset's layout hold one image member per sample — ``jpg``, ``jpeg``, ``png`` or
``webp`` — of any size and aspect ratio; the embedded `shapes` shards hold ``png`` at the stage's size
(plus ``{r}.png`` members at extra resolutions). A stage sees a square image: the short side resized
to the resolution (bicubic, antialiased by PIL's reduction) and a square cropped from the long side —
the centre for evaluation, a random offset for training. The offset comes from a generator seeded by
(seed, epoch, key), so a resumed run crops exactly as the uninterrupted one did.
"""
from __future__ import annotations

import io
import random
from collections.abc import Mapping
from typing import Any

from PIL import Image

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # the member tried first wins


class MissingImage(ValueError):
    """A sample with no image member this reader knows: the shards have another layout."""


class ImageTooSmall(ValueError):
    """An image whose short side is under the minimum: skipped and counted apart from corrupt data."""


def image_member(sample: Mapping[str, Any], exts: tuple[str, ...] = IMAGE_EXTS) -> tuple[str, bytes]:
    """(extension, bytes) of the first image member present; MissingImage naming what the sample holds."""
    for ext in exts:
        data = sample.get(ext)
        if data is not None:
            return ext, data
    found = sorted(k for k in sample if not k.startswith("__"))
    raise MissingImage(f"no image member: expected one of {list(exts)}, found members {found}")


def open_rgb(data: bytes) -> Image.Image:
    """Decode now (so a corrupt file fails here, where the caller counts it) and convert to RGB."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def crop_offset(seed: int, epoch: int, key: str, span: int) -> int:
    """A reproducible offset in [0, span] for the random crop of sample `key` in `epoch`."""
    return random.Random(f"crop-{seed}-{epoch}-{key}").randint(0, span) if span > 0 else 0


def fit_square(image: Image.Image, size: int, *, crop: str = "center", min_size: int | None = None,
               offset_fn=None) -> Image.Image:
    """Resize the short side to `size` and crop a `size`×`size` square (`crop`: "center" or "random",
    the random offset from ``offset_fn(span)``). A short side under `min_size` (default `size`: never
    upscale) raises ImageTooSmall. A square image of the right size is returned as is."""
    if crop not in ("center", "random"):
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    w, h = image.size
    floor = size if min_size is None else min_size
    if min(w, h) < floor:
        raise ImageTooSmall(f"image is {w}x{h}, under the minimum short side {floor}")
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC, reducing_gap=None if scale >= 1 else 3.0)
    span_x, span_y = nw - size, nh - size
    if crop == "center":
        x, y = span_x // 2, span_y // 2
    else:
        x, y = offset_fn(span_x), offset_fn(span_y)
    return image.crop((x, y, x + size, y + size))
