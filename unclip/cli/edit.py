"""Inpainting edit job: ``python -m sample.edit pipeline_dir=DIR image=in.png mask=mask.png prompt='...'``.
The mask's fully transparent pixels (or the image's, without a mask) are repainted."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unclip.cli.common import job_size, load_image, load_pipeline, save_result
from unclip.cli.schema import register

register()


def run(cfg: DictConfig) -> list[Path]:
    pipe = load_pipeline(cfg)
    mask = load_image(cfg.mask, "mask") if cfg.mask else None
    result = pipe.edit(load_image(cfg.image), mask, cfg.prompt, n=cfg.n, size=job_size(cfg, pipe), seed=cfg.seed,
                       progress=cfg.progress)
    for r in result.records:
        r.update(image=str(cfg.image), mask=cfg.mask)
    return save_result(result, cfg.out, Path(cfg.image).stem + "_edit", cfg.contact_sheet)


@hydra.main(version_base=None, config_path="../configs/sample", config_name="edit")
def main(cfg: DictConfig) -> None:
    run(cfg)
