"""Shapes dataset: the indexable view of a split, index -> the webdataset sample dict."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .captions import caption
from .rendering import render
from .sampling import sample_scene
from .scenes import SPLITS, Scene, parse_heldout


def scene_seed(seed: int, split: str, index: int) -> int:
    """Stable 63-bit seed of sample `index` of `split` in the dataset seeded `seed`."""
    digest = hashlib.sha256(f"shapes/{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class ShapesDataset:
    """Map-style view of the shapes split: sample `i` of (split, seed) is always the same.

    `dataset[i]` is the shard sample dict of the `unclip.data.shapes` docstring; `scene(i)`, `caption(i)` and
    `image(i, resolution)` give its parts without PNG encoding.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        seed: int = 0,
        resolution: int = 64,
        extra_resolutions: Sequence[int] = (),
        heldout: Iterable[Mapping[str, str]] | str | None = None,
        val_fraction: float = 0.1,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.split, self.length, self.seed = split, int(length), int(seed)
        self.resolution = int(resolution)
        self.extra_resolutions = tuple(int(r) for r in extra_resolutions if int(r) != self.resolution)
        self.heldout = parse_heldout(heldout)
        self.val_fraction = val_fraction

    def __len__(self) -> int:
        return self.length

    def key(self, index: int) -> str:
        return f"{self.split}-{self.seed}-{index:08d}"

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return sample_scene(scene_seed(self.seed, self.split, index), self.split, self.heldout, self.val_fraction)

    def caption(self, index: int, scene: Scene | None = None) -> str:
        scene = scene or self.scene(index)
        return caption(scene, np.random.default_rng([scene.seed, 1]))

    def image(self, index: int, resolution: int | None = None) -> Image.Image:
        return render(self.scene(index), resolution or self.resolution)

    def sample(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        sample = {
            "__key__": self.key(index),
            "png": encode_png(render(scene, self.resolution)),
            "txt": self.caption(index, scene),
            "json": scene.to_json(),
        }
        for r in self.extra_resolutions:
            sample[f"{r}.png"] = encode_png(render(scene, r))
        return sample

    __getitem__ = sample
