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
_TMP = re.compile(r"^\.ckpt-\d+\.pt\.tmp-(\d+)$")  # unclip.io.atomic_path's temporary name


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are ignored)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


class CorruptCheckpointsError(RuntimeError):
    """Every checkpoint of a run failed to load: resuming would silently lose all progress."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.ckpt-*.pt.tmp-PID`` files left by writers that died (their PID no longer runs)."""
    d, removed = checkpoint_dir(run_dir), []
    if d.is_dir():
        for p in d.iterdir():
            m = _TMP.match(p.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep the last ``keep`` checkpoints of steps up
    to ``step``. Files of later steps (from an earlier life of this run directory) are never counted, so they
    cannot push the new checkpoints out. Stale temporaries of dead writers are removed."""
    path = checkpoint_dir(run_dir) / f"ckpt-{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    if keep > 0:
        upto = [p for p in list_checkpoints(run_dir) if _step_of(p) <= step]
        for old in upto[:-keep]:
            old.unlink(missing_ok=True)
    remove_stale_temporaries(run_dir)
    return path


def _step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an unclip training checkpoint (expected format {FORMAT!r})")
    return state


def load_latest(run_dir: str | os.PathLike, quarantine: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads (None when there is none). An unreadable one is reported, renamed
    ``<name>.corrupt`` (with ``quarantine``: so it never counts among the checkpoints again) and the one
    before it tried. When checkpoints exist but none loads, CorruptCheckpointsError: starting over would
    silently lose the run's progress."""
    failures = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except Exception as err:  # noqa: BLE001 — a damaged file must not block resuming from an older one
            failures.append(f"{path.name} ({type(err).__name__}: {err})")
            log.warning("checkpoint %s cannot be read (%s: %s); trying the previous one", path, type(err).__name__, err)
            if quarantine:
                path.rename(path.with_name(path.name + ".corrupt"))
    if failures:
        raise CorruptCheckpointsError(
            f"none of the {len(failures)} checkpoints in {checkpoint_dir(run_dir)} can be read: {'; '.join(failures)}. "
            "They were renamed *.corrupt; rerun to start this run over from step 0, or restore good copies")
    return None


# What must agree between a checkpoint's resolved config and the run resuming it: the model's shape and
# the data order (the optimiser's lr or the logging may change on resume).
SHAPING_KEYS = ("stage.name", "model", "seed", "batch_size", "trainer.micro_batch", "data.shards", "data.format",
                "data.shuffle_buffer", "data.resampled", "data.min_image_size", "data.resolution")


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None  # absent (an older config) reads as unset
        node = node[part]
    return node


def config_differences(saved: dict[str, Any], current: dict[str, Any], keys=SHAPING_KEYS) -> list[str]:
    """``key: saved -> current`` for each of ``keys`` on which two resolved configs disagree."""
    return [f"{k}: {_lookup(saved, k)!r} -> {_lookup(current, k)!r}" for k in keys
            if _lookup(saved, k) != _lookup(current, k)]


def load_resume_source(source: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """A checkpoint file, or the newest loadable checkpoint of a run directory (None when it has none).
    Only the path given is looked at: never another run's checkpoints."""
    source = Path(source)
    if source.is_file():
        return source, load_checkpoint(source)
    return load_latest(source)


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
