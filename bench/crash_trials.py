"""Crash trials: SIGKILL a tiny training run at random moments, resume it, and compare the final weights
with an uninterrupted run's (the parameter digest in summary.json must be identical: resumes are exact).

Each trial starts `train/train.py` (decoder stage, tiny preset, `shapes` shards, checkpoints every 2
steps), kills it with SIGKILL after a random delay — mid-step, mid-checkpoint-write, during export —
`--kills` times in a row, each time resuming with checkpoint.resume=true, then lets it finish. Prints a
table and writes bench/results/crash_trials.json.

    .venv/bin/python bench/crash_trials.py --trials 6 --kills 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train" / "train.py"


def make_data(root: Path) -> dict[str, str]:
    import torch

    from unclip.clip import FrozenCLIP
    from unclip.data.write_shards import write_shards

    write_shards(root / "train", split="train", n=64, shard_size=32)
    write_shards(root / "val", split="val", n=16, shard_size=16)
    torch.manual_seed(0)
    FrozenCLIP.create("unclip-tiny").save(root / "clip")
    return {"train": str(root / "train"), "val": str(root / "val"), "clip": str(root / "clip")}


def args_for(data: dict[str, str], run_dir: Path, steps: int) -> list[str]:
    return ["stage=decoder", "logger=none", "logger.progress=false", f"run_dir={run_dir}", "batch_size=4",
            f"total_samples={4 * steps}", "sample.every_steps=-1", "checkpoint.every_steps=2",
            "stage.optim.warmup_steps=0", "stage.optim.lr=1e-3", f"clip.path={data['clip']}",
            f"data.shards={data['train']}", f"data.val_shards={data['val']}"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "WORLD_SIZE"):
        env.pop(k, None)
    return env


def run_to_end(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(TRAIN), *args], env=_env(), capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed:\n{proc.stderr[-3000:]}")


def kill_after(args: list[str], delay: float) -> bool:
    """Start a run and SIGKILL it after `delay` seconds; True when it was killed (False: it had finished)."""
    proc = subprocess.Popen([sys.executable, str(TRAIN), *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def digest(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["param_digest"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial, each followed by a resume")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_data(root / "data")
        t0 = time.perf_counter()
        run_to_end(args_for(data, root / "reference", a.steps))
        full_s = time.perf_counter() - t0
        want = digest(root / "reference")
        rows = []
        for trial in range(a.trials):
            run_dir = root / f"trial{trial}"
            delays, killed = [], 0
            for k in range(a.kills):
                delay = rng.uniform(0.5, full_s)  # anywhere from start-up to the end
                resume = ["checkpoint.resume=true"] if k else []
                killed += kill_after(args_for(data, run_dir, a.steps) + resume, delay)
                delays.append(round(delay, 2))
            run_to_end(args_for(data, run_dir, a.steps) + ["checkpoint.resume=true"])
            same = digest(run_dir) == want
            rows.append({"trial": trial, "kill_delays_s": delays, "killed": killed, "exact": same})
            print(f"trial {trial}: killed {killed}× at {delays} s -> {'identical' if same else 'DIFFERENT'} weights",
                  flush=True)
    result = {"machine": platform.processor() or platform.machine(), "date": datetime.date.today().isoformat(),
              "steps": a.steps, "uninterrupted_s": round(full_s, 1), "trials": rows,
              "kills": sum(r["killed"] for r in rows), "exact": sum(r["exact"] for r in rows)}
    out = REPO / "bench" / "results" / "crash_trials.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{result['exact']} of {len(rows)} trials resumed to identical weights after {result['kills']} SIGKILLs; "
          f"wrote {out}")
    if result["exact"] != len(rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
