"""Reading one component of a diffusers / transformers directory from local disk: ``config.json`` and its
weights (``*.safetensors``, sharded with an ``*.index.json``, or a torch ``*.bin``). Nothing is downloaded."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")


class ConversionError(ValueError):
    """A source that cannot be converted: a missing file, or a config our networks cannot express."""


def read_component(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of one component folder, e.g. ``karlo/decoder``."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise ConversionError(f"{d}: no config.json (expected a diffusers / transformers component folder)")
    config = json.loads((d / "config.json").read_text())
    for name in WEIGHT_NAMES:
        if (d / name).is_file():
            return config, _load(d / name)
        index = d / f"{name}.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for f in files:
                state.update(_load(d / f))
            return config, state
    raise ConversionError(f"{d}: no weights (looked for {', '.join(WEIGHT_NAMES)} and sharded indexes)")


def _load(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def require(config: dict[str, Any], source: str, **expected: Any) -> None:
    """Fail naming the field when ``config`` sets something our networks do not express."""
    for key, want in expected.items():
        got = config.get(key, want if not isinstance(want, tuple) else want[0])
        ok = got in want if isinstance(want, tuple) else got == want
        if not ok:
            raise ConversionError(f"{source}: {key}={got!r} is not supported (expected {want!r}); "
                                  "unclip's networks cannot express it")


class StateMap:
    """Builds a target state dict from a source one, tracking which source tensors were used, so that a
    conversion that leaves weights behind (or misses some) fails instead of loading half a model."""

    def __init__(self, source: dict[str, torch.Tensor], name: str):
        self.source, self.name, self.out, self.used = source, name, {}, set()

    @classmethod
    def merged(cls, parts: list[StateMap], name: str) -> StateMap:
        """One map over several sources (e.g. decoder + text_proj) for a joint ``finish``."""
        whole = cls({}, name)
        for i, part in enumerate(parts):
            whole.source.update({f"{i}:{k}": v for k, v in part.source.items()})
            whole.used |= {f"{i}:{k}" for k in part.used}
            whole.out.update(part.out)
        return whole

    def take(self, key: str) -> torch.Tensor:
        if key not in self.source:
            raise ConversionError(f"{self.name}: missing weight {key!r}")
        self.used.add(key)
        return self.source[key]

    def has(self, key: str) -> bool:
        return key in self.source

    def copy(self, dst: str, src: str, params: tuple[str, ...] = ("weight", "bias")) -> None:
        for p in params:
            if self.has(f"{src}.{p}"):
                self.out[f"{dst}.{p}"] = self.take(f"{src}.{p}")

    def concat(self, dst: str, srcs: list[str]) -> None:
        """Fused projections: our one Linear = the source's Linears stacked along the output dim."""
        for p in ("weight", "bias"):
            self.out[f"{dst}.{p}"] = torch.cat([self.take(f"{s}.{p}") for s in srcs], dim=0)

    def finish(self, model: torch.nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """Check every source tensor was used and the result is exactly ``model``'s keys and shapes."""
        left = sorted(k for k in set(self.source) - self.used if not k.split(":", 1)[-1].startswith(ignore))
        if left:
            raise ConversionError(f"{self.name}: weights not converted: {left[:8]}{' …' if len(left) > 8 else ''}")
        want = model.state_dict()
        missing, extra = sorted(set(want) - set(self.out)), sorted(set(self.out) - set(want))
        if missing or extra:
            raise ConversionError(f"{self.name}: converted keys differ from the network: missing {missing[:8]}, "
                                  f"extra {extra[:8]}")
        bad = [(k, tuple(v.shape), tuple(want[k].shape)) for k, v in self.out.items() if v.shape != want[k].shape]
        if bad:
            raise ConversionError(f"{self.name}: shape mismatches (key, converted, expected): {bad[:4]}")
        return {k: v.to(want[k].dtype) for k, v in self.out.items()}
