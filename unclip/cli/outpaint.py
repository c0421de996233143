"""Outpainting job: ``python -m sample.outpaint pipeline_dir=DIR image=in.png prompt='...' right=64``."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unclip.cli.common import load_image, load_pipeline, save_result
from unclip.cli.schema import register

register()


def run(cfg: DictConfig) -> list[Path]:
    pipe = load_pipeline(cfg)
    result = pipe.outpaint(load_image(cfg.image), cfg.prompt, left=cfg.left, right=cfg.right, top=cfg.top,
                           bottom=cfg.bottom, canvas=cfg.canvas, tile=cfg.tile, overlap=cfg.overlap, n=cfg.n,
                           seed=cfg.seed, progress=cfg.progress)
    for r in result.records:
        r["image"] = str(cfg.image)
    return save_result(result, cfg.out, Path(cfg.image).stem + "_outpaint", cfg.contact_sheet)


@hydra.main(version_base=None, config_path="../configs/sample", config_name="outpaint")
def main(cfg: DictConfig) -> None:
    run(cfg)
