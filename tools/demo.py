"""`make demo`: the whole unCLIP job on the embedded `shapes` data, end to end on a CPU.

Stages (each skipped when its output already exists, so a rerun resumes where the last one stopped):
  1. data      render shapes shards: 64-px train (held-out combos excluded) and val, 256-px and 1024-px
               shards for the upsamplers;
  2. clip      train the tiny CLIP contrastively (the clip stage of the training loop), report val retrieval;
  3. embed     precompute the CLIP embedding shards, store the z_i statistics with the CLIP, write
               <out>/pipeline/clip;
  4. prior, decoder, sr256, sr1024: like clip, `train/train.py stage=<s> experiment=shapes_demo_<s>` subprocesses
               (the real entry point; each stage's recipe is that experiment config), each exporting into
               <out>/pipeline/<s>/; a stage with a release is skipped, one with checkpoints resumes
               (checkpoint.resume=true);
  5. sample    held-out eval prompts at 64 px for three systems — (a) the cascade (prior → decoder),
               (b) the decoder fed the CLIP text embedding z_t (no prior, §5.1), (c) the decoder fed the
               true CLIP image embedding of a real render of the prompt's scene — plus grids at 256 and
               1024 px;
  6. eval      oracle caption match of (a), (b), (c), pairwise win rates (Wilson intervals), and one
               self-contained HTML report <out>/report.html.

Budget: DEMO_MINUTES (env) or --minutes (default 25) scales the samples of every stage proportionally;
the defaults are calibrated so the whole demo takes about that long on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/demo_*.py helpers
sys.path.insert(0, str(REPO))

import demo_report  # noqa: E402

from unclip.clip import FrozenCLIP  # noqa: E402
from unclip.data.embeddings import image_embedding_stats, precompute_embeddings, validate_embedding_shards  # noqa: E402
from unclip.data.write_shards import write_shards  # noqa: E402
from unclip.io import atomic_write_json  # noqa: E402

log = logging.getLogger("demo")

DEFAULT_MINUTES = 25.0  # the ceiling; docs/learning.md has the curves that ask for it
HELDOUT = "star:red,triangle:green"  # combos never rendered in train; the eval asks for them
STAGES = ("data", "clip", "embed", "prior", "decoder", "sr256", "sr1024", "sample", "eval")

# The budget of a DEFAULT_MINUTES run; --minutes scales every count (samples per stage) proportionally.
BUDGET = {
    "n_train": 6000, "n_val": 512, "n_256": 600, "n_1024": 24,      # rendered samples
    "clip_steps": 300,                                               # CLIP steps (batch: shapes_demo_clip)
    "prior_samples": 20000, "decoder_samples": 28000, "sr256_samples": 1600, "sr1024_samples": 96,
    "eval_one": 48, "eval_two": 16,                                  # held-out eval prompts (1 seed each)
    "decoder_evals": 3, "gain_n": 64, "match_n": 32,                 # the decoder's learning instrument
    "grid_256": 16, "grid_1024": 1,                                  # showcase images
}
MINIMUM = {"n_train": 256, "n_val": 64, "n_256": 16, "n_1024": 4, "clip_steps": 4, "prior_samples": 256,
           "decoder_samples": 64, "sr256_samples": 8, "sr1024_samples": 2, "eval_one": 4, "eval_two": 2,
           "decoder_evals": 1, "gain_n": 8, "match_n": 4,
           "grid_256": 2, "grid_1024": 1}
# Each stage's recipe (batch size, learning rate, model overrides) is configs/experiment/shapes_demo_<stage>.yaml;
# the demo adds its data folder (below), paths, the budget and the seed.
STAGE_DATA = {"clip": "data", "prior": "embeddings", "decoder": "data", "sr256": "data256", "sr1024": "data1024"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--minutes", type=float, default=float(os.environ.get("DEMO_MINUTES", DEFAULT_MINUTES)),
                   help=f"budget; scales the samples of every stage (env DEMO_MINUTES; default {DEFAULT_MINUTES:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads")
    p.add_argument("--heldout", default=HELDOUT, help="held-out combos, never in train (e.g. 'star:red')")
    p.add_argument("--guidance", type=float, default=3.0, help="decoder guidance scale at eval")
    p.add_argument("--decoder-steps", type=int, default=25, help="decoder sampling steps at eval")
    p.add_argument("--bench", type=Path, default=None, help="also write the measured figures to this JSON")
    p.add_argument("--set", action="append", default=[], metavar="KEY=N",
                   help=f"override one budget count after scaling (keys: {', '.join(BUDGET)})")
    return p.parse_args(argv)


UNSCALED = ("gain_n", "match_n")  # sizes of one instrument reading: the same at any budget


def budget(minutes: float, overrides: list[str]) -> dict[str, int]:
    scale = minutes / DEFAULT_MINUTES
    b = {k: v if k in UNSCALED else max(MINIMUM[k], int(round(v * scale))) for k, v in BUDGET.items()}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in BUDGET:
            raise SystemExit(f"--set {item!r}: unknown budget key {key!r}; expected one of {sorted(BUDGET)}")
        b[key] = int(value)
    return b


class State:
    """<out>/demo_state.json: per-stage wall times and results, kept across reruns."""

    def __init__(self, out: Path):
        self.path = out / "demo_state.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}

    def record(self, stage: str, **fields) -> None:
        self.data["stages"].setdefault(stage, {}).update(fields)
        atomic_write_json(self.path, self.data)

    def get(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})


def _released(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.yaml").is_file()


# ------------------------------------------------------------------------------------------ stages


def make_data(out: Path, b: dict[str, int], args) -> None:
    jobs = [  # (folder, split, n, extra resolutions, heldout)
        (out / "data" / "train", "train", b["n_train"], (), args.heldout),
        (out / "data" / "val", "val", b["n_val"], (), args.heldout),
        (out / "data256" / "train", "train", b["n_256"], (256,), args.heldout),
        (out / "data256" / "val", "val", MINIMUM["n_256"], (256,), args.heldout),
        (out / "data1024" / "train", "train", b["n_1024"], (1024,), args.heldout),
        (out / "data1024" / "val", "val", MINIMUM["n_1024"], (1024,), args.heldout),
    ]
    for folder, split, n, extra, heldout in jobs:
        name = f"render {folder.parent.name}/{split}"
        workers = args.threads if n * max((1, *extra)) ** 2 > 2e6 else 1
        write_shards(folder, split=split, n=n, resolution=64, extra_resolutions=extra, seed=args.seed,
                     shard_size=1000 if not extra else 200, heldout=heldout, num_workers=workers,
                     progress=lambda it, n=n, name=name: tqdm(it, total=n, desc=name, dynamic_ncols=True))


def train_clip(out: Path, b: dict[str, int], args) -> tuple[FrozenCLIP, dict]:
    """The tiny CLIP: the training loop's clip stage on the train renders (``train_stage``), its val retrieval
    measured at the end of the run. Its release stays in the run folder until ``embed`` completes it."""
    run_dir = out / "runs" / "clip" / "run"
    release = run_dir / "export" / "clip"
    finished = _released(release) and (run_dir / "summary.json").is_file()  # only embed was cut short last time
    report = _run_report(run_dir) if finished else train_stage("clip", out, b, args)
    last = report["evals"][-1] if report["evals"] else {}
    report["val_retrieval"] = {k.removeprefix("clip/val_"): v for k, v in last.items() if k.startswith("clip/val_")}
    return FrozenCLIP.load(release), report


def embed(clip: FrozenCLIP, out: Path) -> dict:
    summary = {}
    for split in ("train", "val"):
        shards = sorted((out / "data" / split).glob("*.tar"))
        emb_dir = out / "embeddings" / split
        precompute_embeddings(clip, shards, emb_dir, batch_size=256, resume=True)
        v = validate_embedding_shards(shards, sorted(emb_dir.glob("*.tar")), embed_dim=clip.embed_dim,
                                      token_width=clip.token_width, context_length=clip.context_length)
        summary[split] = {"dir": str(emb_dir), "samples": v["samples"], "shards": v["shards"]}
    mean, std = image_embedding_stats(sorted((out / "embeddings" / "train").glob("*.tar")))
    clip.set_stats(mean, std)
    summary["z_i_probe"] = probe_embeddings(out)
    return summary


def calibrate_image_filter(clip: FrozenCLIP, out: Path, clip_dir: Path) -> dict:
    """Measure the image filter's thresholds for this CLIP on val renders (acceptable images), so the
    served pipeline moderates images (unclip.moderation_calibration)."""
    from unclip.evals.reference import load_reference
    from unclip.moderation import DEFAULT_CONFIG, read_concepts
    from unclip.moderation_calibration import FILE, calibrate

    ref = load_reference(str(out / "data" / "val"), 500, clip.input_side, 0, 20)
    result = calibrate(clip, read_concepts(DEFAULT_CONFIG), ref.images, reference_name=ref.description)
    atomic_write_json(clip_dir / FILE, result)
    return {c["text"]: round(c["threshold"], 3) for c in result["concepts"]}


def _embeddings_and_scenes(out: Path, split: str) -> tuple[torch.Tensor, list]:
    """z_i of a split's embedding shards with the scene of each sample (aligned by key)."""
    from unclip.data import shapes as S
    from unclip.data.embeddings import embedding_shard_path, iter_embedding_shard, iter_tar_samples
    zs, scenes = [], []
    for shard in sorted((out / "data" / split).glob("*.tar")):
        by_key = {r["__key__"]: r["json"] for r in iter_tar_samples(shard, fields=("json",))}
        for r in iter_embedding_shard(embedding_shard_path(shard, out / "embeddings" / split)):
            zs.append(torch.from_numpy(r["image_emb"]))
            scenes.append(S.Scene.from_json(by_key[r["__key__"]]))
    return torch.stack(zs), scenes


def probe_embeddings(out: Path) -> dict:
    """Linear probes of z_i (train -> val, one-object scenes): which attributes can reach the decoder
    through the image embedding at all."""
    from unclip.evals.probe import attribute_probe
    result = attribute_probe(*_embeddings_and_scenes(out, "train"), *_embeddings_and_scenes(out, "val"))
    print("  z_i linear probe (val one-object accuracy): " + ", ".join(
        f"{a} {100 * r['accuracy']:.0f}% (chance {100 * r['chance']:.0f}%)" for a, r in result.items()), flush=True)
    return result


def stage_recipe(stage: str):
    """The composed training config of ``stage`` under its demo recipe (experiment=shapes_demo_<stage>)."""
    from unclip.training import compose_config

    return compose_config([f"stage={stage}", f"experiment=shapes_demo_{stage}"])


def _samples(stage: str, b: dict[str, int], batch_size: int) -> int:
    """The stage's training length in samples (the CLIP's budget is counted in steps)."""
    return b["clip_steps"] * batch_size if stage == "clip" else b[f"{stage}_samples"]


def _instrument_args(stage: str, b: dict[str, int], batch_size: int) -> list[str]:
    """The decoder's learning instrument (conditioning gain + oracle match, unclip.evals.conditioning) at
    ``decoder_evals`` points along training, the last at the end (sample.every_steps=0: only at the end)."""
    if stage != "decoder":
        return []
    steps = math.ceil(b["decoder_samples"] / batch_size)
    n = b["decoder_evals"]
    every = math.ceil(steps / n) if n > 1 else 0 if n == 1 else -1  # -1: no evaluation at all
    return [f"sample.every_steps={every}", f"sample.gain_n={b['gain_n']}", f"sample.match_n={b['match_n']}"]


def train_stage(stage: str, out: Path, b: dict[str, int], args) -> dict:
    """One `train/train.py` subprocess; resumes from its checkpoints when a previous run was cut short. The
    CLIP's release stays in its run folder (``embed`` adds the z_i statistics before it joins the pipeline)."""
    data = STAGE_DATA[stage]
    run_dir = out / "runs" / stage / "run"
    batch_size = stage_recipe(stage).batch_size
    samples = _samples(stage, b, batch_size)
    every = max(10, math.ceil(samples / batch_size / 4))
    export_dir = "null" if stage == "clip" else out / "pipeline"
    cmd = [sys.executable, str(REPO / "train" / "train.py"), f"stage={stage}", f"experiment=shapes_demo_{stage}",
           f"run_dir={run_dir}", f"export_dir={export_dir}", f"clip.path={out / 'pipeline' / 'clip'}",
           f"data.shards={out / data / 'train'}", f"data.val_shards={out / data / 'val'}",
           f"total_samples={samples}", f"seed={args.seed}", "checkpoint.resume=true",
           f"checkpoint.every_steps={every}", *_instrument_args(stage, b, batch_size)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HYDRA_FULL_ERROR="1")
    log.info("running %s", " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode}); rerun the demo to resume it from its "
                         f"last checkpoint in {run_dir}")
    return _run_report(run_dir)


def _run_report(run_dir: Path) -> dict:
    """What the demo keeps of a finished run (its summary.json)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "steps": summary["steps"], "samples_seen": summary["samples_seen"],
            "final_loss": summary["losses"][-1] if summary["losses"] else None, "evals": summary.get("evals", []),
            "train_seconds": summary.get("train_seconds")}


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:  # called as a library (tests), leave the process as it was
        torch.set_num_threads(before)


def _run(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    b = budget(args.minutes, args.set)
    state = State(out)
    state.data["budget"], state.data["minutes"] = b, args.minutes
    start = time.perf_counter()
    pipe_dir = out / "pipeline"
    ran: dict[str, str] = {}

    def run(i: int, stage: str, done: bool, fn):
        t0 = time.perf_counter()
        if done:
            print(f"[{i}/{len(STAGES)}] {stage}: done already, skipped", flush=True)
            ran[stage] = "skipped"
            return None
        print(f"[{i}/{len(STAGES)}] {stage}", flush=True)
        result = fn()
        state.record(stage, seconds=round(time.perf_counter() - t0, 1), **(result if isinstance(result, dict) else {}))
        ran[stage] = "ran"
        return result

    run(1, "data", False, lambda: make_data(out, b, args))  # write_shards skips an identical existing split

    clip_done = _released(pipe_dir / "clip")

    def clip_and_embed():
        clip, report = train_clip(out, b, args)
        state.record("clip", **report)
        return clip

    clip = run(2, "clip", clip_done, clip_and_embed)
    if clip is not None:
        t0 = time.perf_counter()
        print(f"[3/{len(STAGES)}] embed", flush=True)
        summary = embed(clip, out)
        clip.save(pipe_dir / "clip")  # last: its presence marks clip + embeddings done
        summary["moderation"] = calibrate_image_filter(clip, out, pipe_dir / "clip")
        state.record("embed", seconds=round(time.perf_counter() - t0, 1), **summary)
        ran["embed"] = "ran"
    else:
        print(f"[3/{len(STAGES)}] embed: done already, skipped", flush=True)
        ran["embed"] = "skipped"

    for i, stage in enumerate(("prior", "decoder", "sr256", "sr1024"), start=4):
        run(i, stage, _released(pipe_dir / stage), lambda stage=stage: train_stage(stage, out, b, args))

    eval_cfg = {"guidance": args.guidance, "decoder_steps": args.decoder_steps, "seed": args.seed,
                "heldout": args.heldout, "budget": b}
    run(8, "sample", demo_report.samples_done(out, eval_cfg),
        lambda: demo_report.sample_all(out, eval_cfg, args.threads))
    metrics = run(9, "eval", False, lambda: demo_report.evaluate_all(out, eval_cfg, state.data))

    wall = round(time.perf_counter() - start, 1)
    state.data["last_run"] = {"wall_seconds": wall, "stages": ran}
    atomic_write_json(state.path, state.data)
    demo_report.print_summary(out, metrics, wall, ran)
    if args.bench:
        demo_report.write_bench(args.bench, out, state.data, metrics, wall, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
