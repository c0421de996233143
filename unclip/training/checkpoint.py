"""Training checkpoints: one file per save, ``<run_dir>/checkpoints/ckpt-<step>.pt``.

A checkpoint is a dict of state dicts and plain values (tensors, numbers, strings, lists, dicts) —
loadable with ``torch.load(weights_only=True)``; nothing is pickled beyond that. It is written to a
temporary name beside the target, fsync'ed and renamed (``unclip.io.atomic_path``), so a crash while
writing leaves the previous checkpoints untouched; the last ``keep`` are kept.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unclip.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = "unclip-train-ckpt/1"
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are ignored)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step`` and delete all but the last ``keep``."""
    path = checkpoint_dir(run_dir) / f"ckpt-{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an unclip training checkpoint (expected format {FORMAT!r})")
    return state


def load_latest(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads; an unreadable one is reported and the one before it tried."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except Exception as err:  # noqa: BLE001 — a damaged file must not block resuming from an older one
            log.warning("checkpoint %s cannot be read (%s: %s); trying the previous one", path, type(err).__name__, err)
    return None


def find_resume_dir(run_dir: str | os.PathLike) -> Path | None:
    """``run_dir`` if it holds checkpoints, else the most recently written sibling run that does."""
    run_dir = Path(run_dir)
    if list_checkpoints(run_dir):
        return run_dir
    parent = run_dir.parent
    if not parent.is_dir():
        return None
    runs = [p for p in parent.iterdir() if p.is_dir() and p != run_dir and list_checkpoints(p)]
    return max(runs, key=lambda p: list_checkpoints(p)[-1].stat().st_mtime) if runs else None


# ------------------------------------------------------------------ RNG states as tensors / plain values

def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_gauss": [int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
