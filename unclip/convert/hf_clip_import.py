"""A transformers CLIPModel folder (config.json + weights, e.g. openai/clip-vit-large-patch14 downloaded
elsewhere) -> a FrozenCLIP directory (``python -m unclip.convert clip SRC DEST``)."""
from __future__ import annotations

import os
from pathlib import Path

from unclip.clip import FrozenCLIP, build_open_clip

from . import hf_clip
from .components import ConversionError, StateMap, read_component
from .karlo import _preprocess


def import_hf_clip(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Convert ``src`` (a transformers CLIPModel folder) and save it as a FrozenCLIP at ``dest``."""
    config, state = read_component(src)
    text_cfg, vision_cfg, dim = hf_clip.split_clip_config(config)
    model_cfg = hf_clip.open_clip_config(text_cfg, vision_cfg, dim, str(src))
    m = StateMap(state, str(src))
    hf_clip.map_text(m, model_cfg["text_cfg"]["layers"])
    hf_clip.map_vision(m, model_cfg["vision_cfg"]["layers"])
    m.out["logit_scale"] = m.take("logit_scale")
    model = build_open_clip(Path(src).name, model_cfg, _preprocess(model_cfg))
    try:
        model.load_state_dict(m.finish(model, ignore=hf_clip.IGNORED), strict=True)
    except ConversionError:
        raise
    clip = FrozenCLIP(model, Path(src).name, model_cfg, _preprocess(model_cfg))
    return clip.save(dest)
