"""Training throughput per stage (tiny and base presets; fp32 and bf16 autocast) on this machine, and
the 1 -> 2 process scaling of the tiny decoder under torchrun (DDP, gloo) on the CPU.

Each measurement runs the real loop (``unclip.training.train``) on tiny procedural data for a few
warm steps and reads samples/s from the steps after the first (warm-up excluded). Writes
``bench/results/training_<host>.json`` and prints a table.

    python bench/bench_training.py [--quick] [--stages decoder,prior] [--presets tiny,base]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_data(root: Path) -> dict[str, str]:
    import torch

    from unclip.clip import FrozenCLIP
    from unclip.data.embeddings import precompute_embeddings
    from unclip.data.write_shards import write_shards

    write_shards(root / "train", split="train", n=64, shard_size=32)
    write_shards(root / "d256", split="train", n=8, shard_size=8, extra_resolutions=[256])
    write_shards(root / "d1024", split="train", n=4, shard_size=4, extra_resolutions=[1024])
    torch.manual_seed(0)
    clip = FrozenCLIP.create("unclip-tiny")
    precompute_embeddings(clip, sorted(glob.glob(str(root / "train" / "*.tar"))), root / "emb", progress=False)
    clip.save(root / "clip")
    return {k: str(root / k) for k in ("train", "d256", "d1024", "emb", "clip")}


def overrides(stage: str, preset: str, precision: str, data: dict[str, str], run_dir: Path, steps: int,
              batch: int) -> list[str]:
    shards = {"clip": data["train"], "decoder": data["train"], "prior": data["emb"], "sr256": data["d256"],
              "sr1024": data["d1024"]}[stage]
    out = [f"stage={stage}", f"model={preset}", f"trainer.precision={precision}", "logger=none",
           "logger.progress=false", "logger.every_steps=1", f"run_dir={run_dir}", f"batch_size={batch}",
           f"total_samples={batch * steps}", "sample.every_steps=-1", "checkpoint.every_steps=0",
           f"data.shards={shards}", f"data.val_shards={shards}", "data.resampled=true",
           f"clip.path={data['clip']}", "stage.optim.warmup_steps=0"]
    if stage == "prior":
        out.append("stage.gamma_samples=8")
    return out


def run_inprocess(args: list[str]) -> dict:
    from unclip.training import compose_config, train

    cfg = compose_config(args)
    batch = cfg.batch_size
    times: list[float] = []
    import unclip.training.loop as loop

    real_tracker = loop.Tracker

    class Timer(real_tracker):  # records the wall time of every logged step
        def log(self, metrics, step):
            times.append(time.perf_counter())

    loop.Tracker = Timer
    try:
        train(cfg)
    finally:
        loop.Tracker = real_tracker
    if len(times) < 3:
        return {"samples_per_s": float("nan")}
    steps = len(times) - 1  # exclude the first (warm-up, allocator) step
    return {"samples_per_s": steps * batch / (times[-1] - times[0]), "steps_timed": steps}


def scaling(data: dict[str, str], tmp: Path, steps: int) -> dict[str, float]:
    result = {}
    for nproc in (1, 2):
        out = tmp / f"scale{nproc}.json"
        args = overrides("decoder", "tiny", "fp32", data, tmp / f"scale_run{nproc}", steps, 8)
        script = tmp / "scale_job.py"
        script.write_text(textwrap.dedent(f"""
            import json, os, sys, time, torch
            sys.path.insert(0, {str(REPO)!r})
            torch.set_num_threads(1)
            sys.argv = ["x"]
            import bench.bench_training as b
            r = b.run_inprocess({args!r})
            if os.environ.get("RANK", "0") == "0":
                json.dump(r, open({str(out)!r}, "w"))
        """))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node",
                        str(nproc), str(script)], env=env, check=True, capture_output=True, cwd=REPO)
        result[f"{nproc}proc_samples_per_s"] = json.loads(out.read_text())["samples_per_s"]
    result["speedup"] = result["2proc_samples_per_s"] / result["1proc_samples_per_s"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="clip,prior,decoder,sr256,sr1024")
    p.add_argument("--presets", default="tiny,base")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny presets, fp32 only, 4 steps")
    a = p.parse_args()
    if a.quick:
        a.presets, a.precisions, a.steps = "tiny", "fp32", 4
    import torch

    torch.set_num_threads(a.threads)
    batches = {"clip": 16, "prior": 16, "decoder": 8, "sr256": 4, "sr1024": 2}
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data = make_data(tmp / "data")
        for stage in a.stages.split(","):
            for preset in a.presets.split(","):
                if stage == "sr1024" and preset != "tiny":
                    continue  # base sr1024 on 256-px crops is minutes per step on a CPU
                for precision in a.precisions.split(","):
                    run = tmp / f"{stage}_{preset}_{precision}"
                    r = run_inprocess(overrides(stage, preset, precision, data, run, a.steps, batches[stage]))
                    rows.append({"stage": stage, "preset": preset, "precision": precision,
                                 "batch": batches[stage], **r})
                    print(f"{stage:8s} {preset:5s} {precision:5s} {r['samples_per_s']:9.2f} samples/s", flush=True)
        scale = scaling(data, tmp, a.steps + 2)
    result = {"host": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": a.threads,
              "device": "cpu", "rows": rows, "scaling_decoder_tiny_ddp_gloo": scale}
    out = REPO / "bench" / "results" / "training_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| stage | preset | precision | batch | samples/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['preset']} | {r['precision']} | {r['batch']} | {r['samples_per_s']:.2f} |")
    print(f"\nDDP (gloo) scaling, tiny decoder, batch 8: 1 proc {scale['1proc_samples_per_s']:.2f} samples/s, "
          f"2 procs {scale['2proc_samples_per_s']:.2f} samples/s (x{scale['speedup']:.2f}); {os.cpu_count()} cores")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
