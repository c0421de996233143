"""Train one unCLIP stage: ``python train/train.py stage=decoder experiment=shapes_tiny [key=value ...]``.

Runs as one process or under ``torchrun --nproc_per_node N train/train.py ...`` (DDP; trainer=fsdp
for FSDP2). ``checkpoint.resume=true`` continues from the latest checkpoint of ``run_dir`` (or of the
newest earlier run of the stage). All logic lives in ``unclip.training``; see docs/training.md.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.training import register_configs, train  # noqa: E402

register_configs()

if int(os.environ.get("RANK", "0")) > 0:  # only rank 0 writes Hydra's output folder and log file
    sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                 "hydra.run.dir=."]


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary['stage']}: {summary['steps']} steps, {summary['samples_seen']} samples, "
              f"final loss {summary['losses'][-1] if summary['losses'] else float('nan'):.4f}; "
              f"run dir {summary['run_dir']}; release {summary['exports'][:1]}")


if __name__ == "__main__":
    main()
