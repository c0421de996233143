"""Shapes sampling: a scene of a split, deterministic in a seed, resampled until its signature's bucket
matches the split and it respects the held-out combos."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .rendering import shape_extent
from .scenes import (
    BACKGROUND_KINDS,
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPLITS,
    Background,
    Scene,
    ShapeObject,
    parse_heldout,
    split_bucket,
    true_relations,
)

_CELL = 1.0 / 3.0
_MARGIN = 0.006  # keeps every object strictly inside its cell, so two objects never overlap
_MAX_JITTER = 0.04
_MAX_ROTATION = 10.0  # degrees; squares stay clearly unlike diamonds (45°)


def _as_rng(rng: np.random.Generator | int) -> tuple[np.random.Generator, int | None]:
    if isinstance(rng, np.random.Generator):
        return rng, None
    return np.random.default_rng(int(rng)), int(rng)


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _sample_object(rng: np.random.Generator, taken: set[str], fixed: Mapping[str, str]) -> ShapeObject:
    shape = fixed.get("shape") or _pick(rng, SHAPES)
    color = fixed.get("color") or _pick(rng, list(COLORS))
    size = fixed.get("size") or _pick(rng, list(SIZES))
    position = fixed.get("position") or _pick(rng, [p for p in POSITIONS if p not in taken])
    row, col = POSITIONS[position]
    jitter = min(_MAX_JITTER, _CELL / 2 - shape_extent(shape, SIZES[size]) - _MARGIN)
    cx = (col + 0.5) * _CELL + float(rng.uniform(-jitter, jitter))
    cy = (row + 0.5) * _CELL + float(rng.uniform(-jitter, jitter))
    rotation = float(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    return ShapeObject(shape, color, size, position, (cx, cy), rotation)


def _sample_background(rng: np.random.Generator) -> Background:
    kind = _pick(rng, BACKGROUND_KINDS)
    name = _pick(rng, list(BACKGROUNDS))
    rgb = BACKGROUNDS[name][0]
    if kind == "plain":
        return Background(kind, name, rgb)
    if kind == "gradient":  # same hue, 15–30 % lighter or darker at the far end
        factor = float(rng.uniform(0.7, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3))
        rgb2 = tuple(int(min(255, round(c * factor))) for c in rgb)
        return Background(kind, name, rgb, rgb2=rgb2, angle=float(rng.uniform(0, 360)))
    waves = []
    for _ in range(3):  # low frequencies only: smooth at 64 px, exact at any resolution
        fx, fy = 0, 0
        while fx == 0 and fy == 0:
            fx, fy = (int(v) for v in rng.integers(-4, 5, size=2))
        waves.append((float(fx), float(fy), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.03, 0.06))))
    return Background(kind, name, rgb, waves=tuple(waves))


def _sample_candidate(rng: np.random.Generator, forced: Mapping[str, str] | None) -> Scene:
    n = 1 if rng.random() < 0.5 else 2
    forced_index = int(rng.integers(n)) if forced else -1
    taken: set[str] = set()
    if forced and "position" in forced:  # place the forced object first so its cell is free
        order = [forced_index] + [i for i in range(n) if i != forced_index]
    else:
        order = list(range(n))
    slots: dict[int, ShapeObject] = {}
    for i in order:
        obj = _sample_object(rng, taken, forced if i == forced_index else {})
        slots[i] = obj
        taken.add(obj.position)
    objects = [slots[i] for i in range(n)]
    relation = _pick(rng, true_relations(*objects)) if n == 2 else None
    return Scene(tuple(objects), _sample_background(rng), relation)


def sample_scene(
    rng: np.random.Generator | int,
    split: str = "train",
    heldout: Iterable[Mapping[str, str]] | str | None = None,
    val_fraction: float = 0.1,
    max_tries: int = 10_000,
) -> Scene:
    """Sample a scene of `split` ('train', 'val' or 'heldout'), deterministic in `rng` (seed or Generator).

    train: signature hashes to the train bucket and no object matches a held-out combo;
    val: signature hashes to the val bucket (held-out combos appear at their natural rate);
    heldout: one object is forced to match a held-out combo (bucket ignored; never in train).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    combos = parse_heldout(heldout)
    if split == "heldout" and not combos:
        raise ValueError("split 'heldout' needs at least one held-out combo, e.g. [{'shape': 'star', 'color': 'red'}]")
    gen, seed = _as_rng(rng)
    for _ in range(max_tries):
        forced = _pick(gen, combos) if split == "heldout" else None
        scene = _sample_candidate(gen, forced)
        if split == "train" and (
            split_bucket(scene, val_fraction) != "train" or any(o.matches(c) for o in scene.objects for c in combos)
        ):
            continue
        if split == "val" and split_bucket(scene, val_fraction) != "val":
            continue
        return dataclasses.replace(scene, seed=seed, split=split)
    raise RuntimeError(f"no {split!r} scene found in {max_tries} tries (val_fraction={val_fraction}, heldout={combos})")
