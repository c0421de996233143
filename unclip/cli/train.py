"""unclip-train: train one unCLIP stage (clip, prior, decoder, sr256, sr1024) with the one training loop.

    unclip-train stage=decoder experiment=shapes_tiny
    unclip-train stage=prior data.shards=/data/emb data.val_shards=/data/emb_val clip.path=PIPE/clip model=base
    unclip-train stage=decoder run_dir=runs/decoder/exp1 checkpoint.resume=true
    torchrun --nproc_per_node 8 -m unclip.cli.train stage=decoder model=paper trainer=fsdp

Main keys: stage, model (tiny | base | paper), data.shards / data.val_shards, clip.path, batch_size,
total_samples, run_dir, export_dir, trainer.precision (fp32 | bf16 | auto), checkpoint.resume,
checkpoint.resume_from, logger (wandb | none). A run writes config.yaml, checkpoints, sample grids and
summary.json into run_dir and exports <stage>/{config.yaml, model.safetensors}. docs/training.md.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from unclip.cli import hydra_command
from unclip.training import register_configs, train

register_configs()
log = logging.getLogger(__name__)

if int(os.environ.get("RANK", "0")) > 0:  # only rank 0 writes Hydra's output folder and log file
    sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                 "hydra.run.dir=."]


def _own_run_dir_in_multirun(cfg: DictConfig) -> None:
    """In a Hydra multirun every job gets its own run directory: Hydra's job folder (runs/multirun/<time>/<n>)
    unless run_dir was given, then <run_dir>/<n> — never one shared directory that a later job's
    checkpoint.resume=true would pick up from a sibling."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    given = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+") == "run_dir"]
    cfg.run_dir = f"{cfg.run_dir}/{hc.job.num}" if given else hc.runtime.output_dir
    log.info("multirun job %d: run_dir=%s", hc.job.num, cfg.run_dir)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)
    _own_run_dir_in_multirun(cfg)
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary['stage']}: {summary['steps']} steps, {summary['samples_seen']} samples, "
              f"final loss {summary['losses'][-1] if summary['losses'] else float('nan'):.4f}; "
              f"run dir {summary['run_dir']}; release {summary['exports'][:1]}")



if __name__ == "__main__":  # torchrun -m unclip.cli.train ...
    sys.exit(hydra_command(main, __doc__))
