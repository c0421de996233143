"""Pretrained weights in: converters from other layouts to unclip's (docs/pretrained.md).

    python -m unclip.convert karlo KARLO_DIR PIPELINE_DIR [--clip ViT-L-14.pt | CLIP_DIR]
    python -m unclip.convert clip HF_CLIP_DIR CLIP_DIR

Everything reads local files; nothing is downloaded.
"""
from .components import ConversionError
from .hf_clip_import import import_hf_clip
from .karlo import convert_karlo

__all__ = ["ConversionError", "convert_karlo", "import_hf_clip"]
