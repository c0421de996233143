"""Interpolation (§3.2) and text-diff (§3.3) job.

``python -m sample.interpolate pipeline_dir=DIR image=a.png image_b=b.png steps=7``
``python -m sample.interpolate pipeline_dir=DIR image=a.png caption='a red star' new_caption='a blue star'``"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unclip.cli.common import job_size, load_image, load_pipeline, save_result
from unclip.cli.schema import register

register()


def run(cfg: DictConfig) -> list[Path]:
    if (cfg.image_b is None) == (cfg.caption is None or cfg.new_caption is None):
        raise SystemExit("give either image_b (interpolation) or caption and new_caption (text diff)")
    pipe = load_pipeline(cfg)
    image = load_image(cfg.image)
    if cfg.image_b is not None:
        result = pipe.interpolate(image, load_image(cfg.image_b, "image_b"), steps=cfg.steps, size=job_size(cfg, pipe),
                                  seed=cfg.seed, noise=cfg.noise, progress=cfg.progress)
        stem = f"{Path(cfg.image).stem}_to_{Path(cfg.image_b).stem}"
    else:
        result = pipe.text_diff(image, cfg.caption, cfg.new_caption, thetas=list(cfg.thetas), size=job_size(cfg, pipe),
                                seed=cfg.seed, progress=cfg.progress)
        stem = Path(cfg.image).stem + "_textdiff"
    for r in result.records:
        r.update(image=str(cfg.image), image_b=cfg.image_b)
    return save_result(result, cfg.out, stem, cfg.contact_sheet)


@hydra.main(version_base=None, config_path="../configs/sample", config_name="interpolate")
def main(cfg: DictConfig) -> None:
    run(cfg)
