"""Text → image sampling job: ``python -m sample.generate pipeline_dir=DIR prompts='[a red star]' n=4``.

Prompts come from ``prompts`` and/or ``prompts_file``; under torchrun each rank takes every
world-th prompt (same seeds as a single-process run: seeds follow the prompt's line number).
``reproduce=path/to/x.json`` makes that image again from its sidecar."""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm.auto import tqdm

from unclip.cli.common import job_size, load_pipeline, rank_world, save_result
from unclip.cli.schema import register
from unclip.diffusion import derive_seed

register()


def read_prompts(cfg) -> list[str]:
    prompts = list(cfg.prompts)
    if cfg.prompts_file:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise SystemExit(f"prompts_file={str(path)!r}: no such file")
        prompts += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not prompts:
        raise SystemExit("no prompts: set prompts='[a red star, ...]' or prompts_file=FILE")
    return prompts


def run(cfg: DictConfig) -> list[Path]:
    pipe = load_pipeline(cfg)
    if cfg.reproduce:
        record = json.loads(Path(cfg.reproduce).read_text())
        result = pipe.reproduce(record)
        return save_result(result, cfg.out, Path(cfg.reproduce).stem + "_again", cfg.contact_sheet)
    prompts = read_prompts(cfg)
    rank, world = rank_world()
    mine = list(range(rank, len(prompts), world))
    paths = []
    with tqdm(total=len(mine), unit="prompt", desc="generate", disable=not cfg.progress) as bar:
        for lo in range(0, len(mine), cfg.prompts_per_call):
            group = mine[lo:lo + cfg.prompts_per_call]  # one pipeline call; seeds still follow line numbers
            seeds = [derive_seed(cfg.seed, k, i) for k in group for i in range(cfg.n)]
            result = pipe.generate([prompts[k] for k in group], n=cfg.n, size=job_size(cfg, pipe), seed=cfg.seed,
                                   sample_seeds=seeds)
            for j, k in enumerate(group):  # each prompt's files and sidecars as if it had been called alone
                part = result.part(j * cfg.n, (j + 1) * cfg.n)
                for r in part.records:
                    r["prompt_index"] = k
                paths += save_result(part, cfg.out, f"p{k:06d}", cfg.contact_sheet)
            bar.update(len(group))
    return paths


@hydra.main(version_base=None, config_path="../configs/sample", config_name="generate")
def main(cfg: DictConfig) -> None:
    run(cfg)
