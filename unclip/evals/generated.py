"""Directories of generated images: ``<name>.png`` + ``<name>.json`` sidecars.

A sidecar holds at least ``prompt`` (str), ``seed`` (int) and ``size`` (int, or "WxH"); extra fields
are kept in `GeneratedImage.meta` (``scene``: the shapes scene JSON/dict the prompt was made from;
``split``: "heldout" marks a held-out-combo prompt).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

REQUIRED = ("prompt", "seed", "size")


@dataclasses.dataclass(frozen=True)
class GeneratedImage:
    name: str
    path: Path
    prompt: str
    seed: int
    size: int
    meta: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return self.prompt, self.seed

    def image(self) -> Image.Image:
        with Image.open(self.path) as im:
            return im.convert("RGB")


def _parse_size(value: Any, where: Path) -> int:
    if isinstance(value, int):
        return value
    text = str(value).lower().strip()
    try:
        return int(text.split("x")[0])
    except ValueError:
        raise ValueError(f"{where}: 'size' must be an int or 'WxH', got {value!r}") from None


def load_generated(directory: str | Path) -> list[GeneratedImage]:
    """Every ``*.png`` in `directory` with its sidecar, sorted by name; errors name the bad file.
    PNGs without a sidecar (the sampling jobs' contact sheets) are skipped with a log line."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"generated-images directory not found: {directory}")
    out = []
    for png in sorted(directory.glob("*.png")):
        side = png.with_suffix(".json")
        if not side.is_file():
            log.info("skipping %s: no sidecar %s (a contact sheet?)", png, side.name)
            continue
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"sidecar {side} is not valid JSON: {e}") from e
        if not isinstance(meta, Mapping):
            raise ValueError(f"sidecar {side} must hold a JSON object with {list(REQUIRED)}")
        missing = [k for k in REQUIRED if k not in meta]
        if missing:
            raise ValueError(f"sidecar {side} lacks {missing}; expected at least {list(REQUIRED)}")
        try:
            seed = int(meta["seed"])
        except (TypeError, ValueError):
            raise ValueError(f"sidecar {side}: 'seed' must be an integer, got {meta['seed']!r}") from None
        out.append(GeneratedImage(png.stem, png, str(meta["prompt"]), seed,
                                  _parse_size(meta["size"], side), dict(meta)))
    if not out:
        raise FileNotFoundError(f"no <name>.png + <name>.json pairs in {directory}")
    return out


def align_runs(runs: Mapping[str, Sequence[GeneratedImage]]) -> list[tuple[str, int]]:
    """The common (prompt, seed) keys of several runs, in the first run's order; raises ValueError
    naming the first mismatch (a key one run lacks, or a duplicated key)."""
    names = list(runs)
    if len(names) < 2:
        raise ValueError(f"comparing needs at least two runs, got {names}")
    keysets = {}
    for name in names:
        counts = Counter(g.key for g in runs[name])
        dup = [k for k, c in counts.items() if c > 1]
        if dup:
            raise ValueError(f"run {name!r} has {len(dup)} duplicated (prompt, seed) pairs, e.g. {dup[0]!r}")
        keysets[name] = set(counts)
    ref = names[0]
    for name in names[1:]:
        only_ref, only_other = keysets[ref] - keysets[name], keysets[name] - keysets[ref]
        if only_ref or only_other:
            example = sorted(only_ref)[:1] or sorted(only_other)[:1]
            raise ValueError(
                f"runs {ref!r} and {name!r} do not share prompts/seeds: {len(only_ref)} (prompt, seed) pairs only "
                f"in {ref!r}, {len(only_other)} only in {name!r}; e.g. {example[0]!r}. Generate every system on "
                "the same prompts and seeds")
    return [g.key for g in runs[ref]]
