"""Variations job (§3.1): ``python -m sample.vary pipeline_dir=DIR image=in.png n=4 eta=1.0``."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unclip.cli.common import job_size, load_image, load_pipeline, save_result
from unclip.cli.schema import register

register()


def run(cfg: DictConfig) -> list[Path]:
    pipe = load_pipeline(cfg)
    result = pipe.variations(load_image(cfg.image), n=cfg.n, size=job_size(cfg, pipe), seed=cfg.seed, eta=cfg.eta,
                             progress=cfg.progress)
    for r in result.records:
        r["image"] = str(cfg.image)
    return save_result(result, cfg.out, Path(cfg.image).stem + "_var", cfg.contact_sheet)


@hydra.main(version_base=None, config_path="../configs/sample", config_name="vary")
def main(cfg: DictConfig) -> None:
    run(cfg)
