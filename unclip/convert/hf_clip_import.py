"""A transformers CLIPModel folder (config.json + weights, e.g. openai/clip-vit-large-patch14 downloaded
elsewhere) -> a FrozenCLIP directory (``python -m unclip.convert clip SRC DEST``)."""
from __future__ import annotations

import os
from pathlib import Path

from . import hf_clip
from .components import read_component


def import_hf_clip(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Convert ``src`` (a transformers CLIPModel folder) and save it as a FrozenCLIP at ``dest``."""
    config, state = read_component(src)
    text_cfg, vision_cfg, dim = hf_clip.split_clip_config(config)
    clip = hf_clip.frozen_clip((text_cfg, state), (vision_cfg, state), dim, Path(src).name)
    return clip.save(dest)
