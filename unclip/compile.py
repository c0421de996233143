"""``torch.compile`` (inductor) as a switch, with a fallback to eager where no compiler can run.

Training (``trainer.compile=true``) and sampling (``UnCLIPPipeline.load(..., compile=True)``) wrap their
networks here. Inductor needs a C++ compiler on the CPU and Triton on CUDA; without one the network runs
eager, with a warning that says why. A compiled module reads through to the original's attributes, but
its state dict keys carry a prefix: checkpoints, EMA and exports keep reading the original module.
Measured gains: docs/training.md.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)


def compiler_missing(device: torch.device | str) -> str | None:
    """Why inductor cannot compile for ``device`` here, or None when it can."""
    kind = torch.device(device).type
    if kind == "cuda":
        return None if importlib.util.find_spec("triton") is not None else "Triton is not installed"
    if kind == "cpu":
        cxx = os.environ.get("CXX") or "g++"
        if shutil.which(cxx) or shutil.which("c++") or shutil.which("clang++"):
            return None
        return f"no C++ compiler on PATH ({cxx}, c++ or clang++)"
    return f"inductor does not compile for {kind!r} here"


def maybe_compile(module: nn.Module, enabled: bool, device: torch.device | str) -> nn.Module:
    """``torch.compile(module)`` when ``enabled`` and a compiler is present, else ``module`` itself."""
    if not enabled:
        return module
    missing = compiler_missing(device)
    if missing:
        log.warning("compile requested but %s: running eager", missing)
        return module
    return torch.compile(module)
