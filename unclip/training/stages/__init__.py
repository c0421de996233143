"""Per-stage pieces for the one training loop: each module's ``build(cfg, env) -> StageParts``."""
from __future__ import annotations

import importlib

from .base import Evaluation, StageParts

_MODULES = {"clip": "clip", "prior": "prior", "decoder": "decoder", "sr256": "upsampler", "sr1024": "upsampler"}


def build_stage(cfg, env) -> StageParts:
    name = cfg.stage.name
    if name not in _MODULES:
        raise ValueError(f"stage.name={name!r}: expected one of {sorted(_MODULES)}")
    return importlib.import_module(f".{_MODULES[name]}", __name__).build(cfg, env)


__all__ = ["Evaluation", "StageParts", "build_stage"]
