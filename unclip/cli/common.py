"""Shared by the sampling jobs: loading the pipeline, writing PNGs + JSON sidecars + a contact sheet,
and splitting work across torchrun ranks."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

from unclip.io import atomic_path, atomic_write_json
from unclip.pipeline import UnCLIPPipeline

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def rank_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (its env vars); (0, 1) otherwise. No process group needed:
    every rank samples its own share of the prompts and writes its own files."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def job_size(cfg, pipe: UnCLIPPipeline) -> int:
    """``size``, or the largest size the pipeline makes (the server's default too)."""
    return int(cfg.size) if cfg.size is not None else max(pipe.sizes)


def load_pipeline(cfg) -> UnCLIPPipeline:
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype={cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    device = cfg.device
    rank, world = rank_world()
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    settings = {"preset": cfg.preset, **_drop_none(OmegaConf.to_container(cfg.settings, resolve=True))}
    return UnCLIPPipeline.load(cfg.pipeline_dir, device=device, dtype=DTYPES[cfg.dtype], settings=settings,
                               moderation=cfg.moderation)


def _drop_none(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        v = _drop_none(v) if isinstance(v, dict) else v
        if v is not None and v != {}:
            out[k] = v
    return out


def load_image(path: str, param: str = "image") -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (FileNotFoundError, OSError) as err:
        raise SystemExit(f"{param}={path!r}: cannot read an image there ({err})") from None


def save_result(result, out: str | Path, stem: str, contact_sheet: bool = True) -> list[Path]:
    """``out/{stem}_{i:03d}.png`` + ``.json`` sidecar per image, and ``out/{stem}_sheet.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, record) in enumerate(zip(result.images, result.records)):
        path = out / f"{stem}_{i:03d}.png"
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        atomic_write_json(path.with_suffix(".json"), {"file": path.name, **record})
        paths.append(path)
    if contact_sheet and result.images:
        sheet = make_contact_sheet(result.images)
        with atomic_path(out / f"{stem}_sheet.png") as tmp:
            sheet.save(tmp, format="PNG")
    log.info("wrote %d images to %s", len(paths), out)
    return paths


def make_contact_sheet(images: list[Image.Image], max_cols: int = 8, cell: int = 256) -> Image.Image:
    cols = min(max_cols, len(images))
    rows = math.ceil(len(images) / cols)
    w = min(cell, max(im.width for im in images))
    h = min(cell, max(im.height for im in images))
    sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        thumb = im.copy()
        thumb.thumbnail((w, h))
        sheet.paste(thumb, ((i % cols) * w, (i // cols) * h))
    return sheet
