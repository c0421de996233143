"""Caption match (shapes oracle) + photorealism over a directory of generated images.

    python evals/caption_match.py images_dir=DIR name=NAME [clip.dir=PIPELINE/clip] [out_dir=runs/evals] \
        [reference=PHOTO_DIR | "reference='/data/coco/{00000..00009}.tar'"] [fid_weights=INCEPTION.pth]

`reference` (default: shapes renders) is the real set of the realism metrics: an image folder or
webdataset shards; `fid_weights` (a local torch-fidelity InceptionV3 file) adds Inception FID.

Writes ${out_dir}/caption_match-${name}.json and appends sections to ${out_dir}/report.html.
"""
from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from unclip.evals.config import job_kwargs, register_configs
from unclip.evals.jobs import caption_match_job

register_configs()
log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    out = caption_match_job(cfg.images_dir, cfg.name, cfg.report, cfg.json, grid_prompts=cfg.grid_prompts,
                            **job_kwargs(cfg))
    log.info("caption match %s (oracle %s): %s", cfg.name, out["oracle"].split(":")[0],
             json.dumps(out["summary"]["all"]))
    if out["realism"]:
        log.info("realism %s: %s", cfg.name, json.dumps(out["realism"]))
    log.info("wrote %s and %s", cfg.json, cfg.report)
    return out


@hydra.main(version_base="1.3", config_path="../configs/eval", config_name="caption_match")
def main(cfg: DictConfig) -> None:
    run(cfg)
