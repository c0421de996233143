"""Crash-safe file writes: write beside the target under a temporary name, then rename.

``os.replace`` is atomic on POSIX within one filesystem, so a reader (or a resumed run) sees either
the old complete file or the new complete file, never a half-written one.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# A release directory: ``config.yaml`` (everything needed to rebuild the module) + ``model.safetensors``.
CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.safetensors"


def write_release(directory: str | os.PathLike, config: dict[str, Any], module, metadata: dict[str, str]) -> Path:
    """Write ``directory/{model.safetensors, config.yaml}`` atomically (weights first, so a config never
    points at missing weights). Tied tensors are handled by safetensors' ``save_model``."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_model(module, str(tmp), metadata=metadata)
    with atomic_path(directory / CONFIG_FILE) as tmp:
        OmegaConf.save(OmegaConf.create(config), tmp)
    return directory


def read_release_config(directory: str | os.PathLike, what: str, expected_format: str) -> tuple[dict, Path, Path]:
    """(config dict, config path, weights path) of a release directory, with errors that name the
    missing file or the wrong format; ``what`` names the kind of release in messages."""
    from omegaconf import OmegaConf

    directory = Path(directory)
    cfg_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (cfg_path, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{what} {directory} is missing {path.name} "
                                    f"(expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    if not isinstance(cfg, dict) or cfg.get("format") != expected_format:
        got = cfg.get("format") if isinstance(cfg, dict) else None
        raise ValueError(f"{cfg_path}: not a {what} (format {got!r}, expected {expected_format!r})")
    return cfg, cfg_path, weights
