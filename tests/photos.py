"""Real photographs no one here made, as img2dataset would write them (test helper).

scikit-image ships a few photographs inside its wheel (no download): an astronaut, a cat, a cup of
coffee, a rocket, a retina, the Hubble deep field, a cameraman, the moon. `write_photo_shards` cuts
varied crops of them at varied sizes and aspect ratios and writes webdataset shards in img2dataset's
layout: ``KEY.jpg`` (or ``.webp``), ``KEY.txt`` (caption), ``KEY.json`` (key, caption, width, height).
"""
from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# skimage.data loader name -> caption (what the photograph shows)
PHOTOS = {
    "astronaut": "a photo of an astronaut in a white space suit with a flag",
    "chelsea": "a photo of a tabby cat looking to the side",
    "coffee": "a photo of a cup of coffee on a saucer",
    "rocket": "a photo of a rocket on its launch pad",
    "retina": "a photo of the retina of a human eye",
    "hubble_deep_field": "a photo of galaxies in the hubble deep field",
    "camera": "a black and white photo of a man with a camera on a tripod",
    "moon": "a black and white photo of the surface of the moon",
}
SIZES = [(96, 96), (160, 120), (120, 200), (300, 180), (90, 72), (256, 256), (200, 96), (60, 48), (140, 140)]


def photo(name: str) -> Image.Image:
    """One bundled photograph as an RGB PIL image."""
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return Image.fromarray(a[..., :3].astype(np.uint8))


def photo_samples(n: int, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """`n` (image, caption) pairs: random crops of the bundled photos resized to varied sizes."""
    rng = random.Random(seed)
    names = list(PHOTOS)
    sources = {name: photo(name) for name in names}
    out = []
    for i in range(n):
        name = names[i % len(names)]
        src = sources[name]
        w, h = SIZES[(i // len(names) + i) % len(SIZES)]
        scale = rng.uniform(0.6, 1.0)  # crop a window of the photo with the target aspect ratio
        cw = min(src.width, int(src.height * w / h)) * scale
        ch = cw * h / w
        x0, y0 = rng.uniform(0, src.width - cw), rng.uniform(0, src.height - ch)
        crop = src.crop((int(x0), int(y0), int(x0 + cw), int(y0 + ch))).resize((w, h), Image.BICUBIC)
        out.append((crop, PHOTOS[name]))
    return out


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format={"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt], quality=90)
    return buf.getvalue()


def write_photo_shards(folder: str | Path, n: int = 24, per_shard: int = 8, seed: int = 0,
                       corrupt_keys: tuple[int, ...] = (), formats: tuple[str, ...] = ("jpg", "webp")) -> list[Path]:
    """img2dataset-style shards ``00000.tar``… in `folder`; sample i is stored as formats[i % len(formats)].
    Samples whose index is in `corrupt_keys` get an image member cut to its first 100 bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    samples = photo_samples(n, seed)
    for s in range(0, n, per_shard):
        path = folder / f"{s // per_shard:05d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(s, min(s + per_shard, n)):
                image, caption = samples[i]
                key, fmt = f"{i:09d}", formats[i % len(formats)]
                data = encode(image, fmt)
                if i in corrupt_keys:
                    data = data[:100]
                _add(tf, f"{key}.{fmt}", data)
                _add(tf, f"{key}.txt", caption.encode())
                _add(tf, f"{key}.json", json.dumps({"key": key, "caption": caption, "width": image.width,
                                                    "height": image.height, "status": "success"}).encode())
        paths.append(path)
    return paths


def write_photo_folder(folder: str | Path, n: int = 16, seed: int = 1) -> Path:
    """A plain folder of `n` photo crops as PNG files (a reference set for realism metrics)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, _) in enumerate(photo_samples(n, seed)):
        image.save(folder / f"{i:04d}.png")
    return folder
