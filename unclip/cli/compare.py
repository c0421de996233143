"""Compare two or more systems on the same prompts and seeds: caption and photorealism judges,
win rates with Wilson intervals, Bradley–Terry ranking with bootstrap intervals (> 2 systems).

    python evals/compare.py '+runs={a: DIR_A, b: DIR_B}' [clip.dir=PIPELINE/clip] [out_dir=runs/evals] \
        [reference=PHOTO_DIR_OR_SHARDS] [fid_weights=INCEPTION.pth]

Every system is scored against the same reference set (default: shapes renders), prepared once.

Writes ${out_dir}/compare.json and appends sections to ${out_dir}/report.html.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from unclip.evals.config import job_kwargs, register_configs
from unclip.evals.jobs import compare_job

register_configs()
log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    if len(cfg.runs) < 2:
        raise ValueError(f"compare needs runs={{name: directory, ...}} with at least two systems, got {dict(cfg.runs)}")
    out = compare_job(dict(cfg.runs), cfg.report, cfg.json, grid_prompts=cfg.grid_prompts, n_boot=cfg.n_boot,
                      **job_kwargs(cfg))
    for p in out["pairs"]:
        log.info("%s judge: %s vs %s win rate %.3f [%.3f, %.3f] (ties = 1/2)",
                 p["judge"], p["A"], p["B"], p["rate"], p["lo"], p["hi"])
    log.info("wrote %s and %s", cfg.json, cfg.report)
    return out


@hydra.main(version_base="1.3", config_path="../configs/eval", config_name="compare")
def main(cfg: DictConfig) -> None:
    run(cfg)
