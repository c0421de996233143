"""``build_random_pipeline``: a complete pipeline directory with random weights, for tests and demos.

The layout is the released one (DESIGN.md): ``clip/`` (FrozenCLIP.save), ``prior/``, ``decoder/`` and
optionally ``sr256/``, ``sr1024/`` (``save_stage``: config.yaml + model.safetensors). The images it
makes are noise, but every code path (guidance, learned σ, inpainting channels, Analytic-DPM Γ,
upsamplers) runs exactly as with trained weights.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from unclip.clip import FrozenCLIP
from unclip.models import UPSAMPLER_SIZES, StageSpec, prior_analytic_gamma, save_stage

_CAPTIONS = ["a small red star at the top left", "a large blue circle", "a green square below a pink triangle",
             "a yellow hexagon on a grey background", "an orange cross at the center", "a purple diamond",
             "a cyan star to the right of a red circle", "a small white square"]


def build_random_pipeline(directory: str | os.PathLike, preset: str = "tiny", *, inpaint: bool = False,
                          upsamplers: Iterable[str] = ("sr256",), clip: FrozenCLIP | None = None,
                          clip_arch: str = "unclip-tiny", seed: int = 0,
                          analytic_gamma_steps: Iterable[int] = (25, 64),
                          overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write a random-weight pipeline to ``directory`` and return its path.

    Args:
        preset: network size of every stage ("tiny", "base", "paper"); CLIP dims follow ``clip``.
        inpaint: build the decoder with GLIDE inpainting channels (edits then use them, not RePaint).
        upsamplers: which of "sr256", "sr1024" to include (sr1024 needs sr256).
        clip: the CLIP to save (e.g. a trained one); default a random ``clip_arch``.
        analytic_gamma_steps: step counts for which Analytic-DPM Γ of the prior is estimated (on random
            CLIP embeddings of a few captions) and stored in ``prior/config.yaml`` ``extra.analytic_gamma``.
        overrides: per-stage preset field overrides, e.g. ``{"sr1024": {"model_channels": 8}}``.
    """
    ups = tuple(upsamplers)
    bad = [u for u in ups if u not in UPSAMPLER_SIZES]
    if bad or ("sr1024" in ups and "sr256" not in ups):
        raise ValueError(f"upsamplers={ups}: expected a subset of ('sr256', 'sr1024'), sr1024 only with sr256")
    directory = Path(directory)
    torch.manual_seed(seed)
    clip = clip if clip is not None else FrozenCLIP.create(clip_arch)
    clip.save(directory / "clip")
    dims = dict(clip_embed_dim=clip.embed_dim, clip_token_width=clip.token_width,
                clip_context_length=clip.context_length)
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    specs = {
        "prior": StageSpec("prior", preset, overrides=dims | overrides.get("prior", {})),
        "decoder": StageSpec("decoder", preset, overrides=dims | {"inpaint": inpaint} | overrides.get("decoder", {})),
    }
    specs |= {u: StageSpec(u, preset, overrides=overrides.get(u, {})) for u in ups}
    for name, spec in specs.items():
        model = spec.build_model().eval()
        if name == "prior" and analytic_gamma_steps:
            spec.extra["analytic_gamma"] = _random_gamma(model, spec, clip, analytic_gamma_steps, seed)
        save_stage(directory / name, spec, model)
    return directory


def _random_gamma(prior, spec: StageSpec, clip: FrozenCLIP, steps: Iterable[int], seed: int) -> dict[str, list]:
    """Γ_n of the (random) prior on the CLIP embeddings of a few captions and random images."""
    g = torch.Generator().manual_seed(seed)
    emb, tokens, mask = clip.encode_text(_CAPTIONS)
    image_emb = clip.encode_image(torch.rand(len(_CAPTIONS), 3, 64, 64, generator=g))
    out = {}
    for n in steps:
        gamma = prior_analytic_gamma(prior, spec.diffusion(), image_emb, emb, tokens, mask, steps=int(n),
                                     mean_type=spec.mean_type, generator=g)
        out[str(int(n))] = [float(v) for v in gamma]
    return out
