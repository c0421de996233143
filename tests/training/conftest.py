"""Shared tiny data for the training tests (made once per session) and one intra-op thread."""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    """64-px train/val shards (2 train shards, so 2 ranks split them), 256/1024-px shards, embeddings."""
    from unclip.clip import FrozenCLIP
    from unclip.data.embeddings import precompute_embeddings
    from unclip.data.write_shards import write_shards

    root = tmp_path_factory.mktemp("train_data")
    write_shards(root / "train", split="train", n=64, shard_size=32)
    write_shards(root / "val", split="val", n=16, shard_size=16)
    write_shards(root / "d256", split="train", n=8, shard_size=8, extra_resolutions=[256])
    write_shards(root / "d1024", split="train", n=4, shard_size=4, extra_resolutions=[1024])
    torch.manual_seed(0)
    clip = FrozenCLIP.create("unclip-tiny")
    for split in ("train", "val"):
        precompute_embeddings(clip, sorted(glob.glob(str(root / split / "*.tar"))), root / "emb" / split,
                              progress=False)
    clip.save(root / "clip")
    return {k: str(root / k) for k in ("train", "val", "d256", "d1024", "clip")} | {
        "emb_train": str(root / "emb" / "train"), "emb_val": str(root / "emb" / "val")}


def overrides_for(stage: str, data: dict[str, str], run_dir, *extra: str) -> list[str]:
    """Command-line overrides of a few-step tiny run of ``stage`` on ``data``."""
    common = [f"stage={stage}", "logger=none", "logger.progress=false", f"run_dir={run_dir}", "batch_size=4",
              "total_samples=16", "sample.every_steps=-1", "checkpoint.every_steps=2", "stage.optim.warmup_steps=0",
              f"clip.path={data['clip']}"]
    per_stage = {
        "clip": [f"data.shards={data['train']}", f"data.val_shards={data['val']}"],
        "decoder": [f"data.shards={data['train']}", f"data.val_shards={data['val']}"],
        "prior": [f"data.shards={data['emb_train']}", f"data.val_shards={data['emb_val']}", "stage.gamma_samples=8"],
        "sr256": [f"data.shards={data['d256']}", f"data.val_shards={data['d256']}", "data.resampled=true"],
        "sr1024": [f"data.shards={data['d1024']}", f"data.val_shards={data['d1024']}", "data.resampled=true",
                   "batch_size=2", "total_samples=4"],
    }
    return common + per_stage[stage] + list(extra)


def compose_cfg(overrides: list[str]):
    from unclip.training import compose_config

    return compose_config(overrides)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), WANDB_MODE="offline", WANDB_SILENT="true")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TRAIN = str(REPO / "train" / "train.py")
