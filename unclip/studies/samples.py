"""Read the sample directories the sampling jobs write: ``<name>.png`` beside ``<name>.json``.

A sidecar needs at least ``prompt`` and ``seed``; other fields are kept but ignored. PNGs without
a sidecar (contact sheets, grids) are skipped and counted. Directories are searched recursively.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path


class StudyError(ValueError):
    """A study cannot be built or served from the given input; the message names the input."""


@dataclasses.dataclass(frozen=True)
class Sample:
    system: str
    prompt: str
    seed: int
    path: Path


@dataclasses.dataclass
class SampleSet:
    """All images of one system, indexed by prompt then seed."""

    system: str
    root: Path
    by_prompt: dict[str, dict[int, Sample]]
    skipped: list[Path]  # PNGs without a sidecar

    @property
    def n_images(self) -> int:
        return sum(len(v) for v in self.by_prompt.values())


def parse_system_arg(arg: str) -> tuple[str, Path]:
    """``name=path`` or just ``path`` (the system is then named after the directory)."""
    if "=" in arg and not Path(arg).exists():
        name, path = arg.split("=", 1)
        return name.strip(), Path(path)
    path = Path(arg)
    return path.resolve().name, path


def load_sample_dir(system: str, root: str | Path) -> SampleSet:
    root = Path(root)
    if not root.is_dir():
        raise StudyError(f"sample directory {str(root)!r} (system {system!r}) does not exist or is not a directory")
    by_prompt: dict[str, dict[int, Sample]] = {}
    skipped: list[Path] = []
    for png in sorted(root.rglob("*.png")):
        sidecar = png.with_suffix(".json")
        if not sidecar.is_file():
            skipped.append(png)
            continue
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise StudyError(f"sidecar {sidecar} is not valid JSON: {e}") from e
        if not isinstance(meta, dict) or "prompt" not in meta or "seed" not in meta:
            raise StudyError(f"sidecar {sidecar} must be a JSON object with 'prompt' and 'seed' (got keys "
                             f"{sorted(meta) if isinstance(meta, dict) else type(meta).__name__})")
        try:
            seed = int(meta["seed"])
        except (TypeError, ValueError) as e:
            raise StudyError(f"sidecar {sidecar}: 'seed' must be an integer, got {meta['seed']!r}") from e
        prompt = str(meta["prompt"])
        seeds = by_prompt.setdefault(prompt, {})
        if seed in seeds:
            raise StudyError(f"system {system!r}: prompt {prompt!r} seed {seed} appears twice: "
                             f"{seeds[seed].path} and {png}")
        seeds[seed] = Sample(system, prompt, seed, png.resolve())
    if not by_prompt:
        raise StudyError(f"sample directory {str(root)!r} (system {system!r}) holds no <name>.png with a "
                         f"<name>.json sidecar ({len(skipped)} PNGs without sidecars)")
    return SampleSet(system, root.resolve(), by_prompt, skipped)


def _preview(items: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(repr(s) for s in list(items)[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def check_matching(sets: Sequence[SampleSet]) -> list[str]:
    """Raise ``StudyError`` naming the mismatch unless all systems share the same prompts and, per
    prompt, at least one seed. Returns the sorted prompts."""
    if len(sets) < 2:
        raise StudyError(f"a study needs two or more sample directories, got {len(sets)}")
    names = [s.system for s in sets]
    if len(set(names)) != len(names):
        raise StudyError(f"system names must be unique, got {names}; name them with name=path")
    ref = sets[0]
    for other in sets[1:]:
        missing = sorted(set(ref.by_prompt) - set(other.by_prompt))
        extra = sorted(set(other.by_prompt) - set(ref.by_prompt))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} prompt(s) of {ref.system!r} missing from {other.system!r}: "
                             f"{_preview(missing)}")
            if extra:
                parts.append(f"{len(extra)} prompt(s) of {other.system!r} missing from {ref.system!r}: "
                             f"{_preview(extra)}")
            raise StudyError(f"prompts do not match between {str(ref.root)!r} and {str(other.root)!r}: "
                             + "; ".join(parts))
    prompts = sorted(ref.by_prompt)
    for p in prompts:
        common = set.intersection(*(set(s.by_prompt[p]) for s in sets))
        if not common:
            seeds = {s.system: sorted(s.by_prompt[p])[:5] for s in sets}
            raise StudyError(f"prompt {p!r} has no seed common to all systems (seeds: {seeds}); "
                             f"sample every system with the same seeds")
    return prompts
