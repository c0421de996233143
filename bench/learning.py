"""The learning instrument: train the decoder under one or more recipes ("arms") and record, along the way,
whether it uses its conditioning — the numbers every recipe decision in docs/training.md is taken with.

For each arm this runs the real entry point (``train/train.py stage=decoder``) on a `make demo` output folder
(its data shards and its CLIP) and evaluates the EMA weights K times along training. Each evaluation records
(unclip.evals.conditioning, wired into the decoder stage's eval):

  * conditioning gain — teacher-forced x0 error with a shuffled vs the right z_i (caption dropped) and with a
    shuffled vs the right caption (z_i dropped), at t = 200/500/800/950, over the whole image and inside the
    objects' pixels (``gain/…``, ``gain_region/…``);
  * oracle caption match of 64-px samples from the true z_i + caption of one-object val scenes (``match/…``);
  * training wall time and samples seen.

Writes ``bench/results/learning_<name>.json`` (every arm's curve) and ``learning_<name>_plot.html`` beside it, and
prints a table of the last evaluation per arm. Arms run one after another (two torch jobs on 2 cores slow each other).

    python bench/learning.py --demo-out demo_out --samples 12000 --evals 4 --arms eps,v,v_coords
    python bench/learning.py --demo-out demo_out --arm 'mine=stage.mean_type=v +model.overrides.coord_channels=true'
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Named arms: Hydra overrides on top of the demo's decoder recipe (configs/experiment/shapes_demo_decoder.yaml
# without its recipe choices, which the arms make explicitly).
ARMS: dict[str, list[str]] = {
    "eps": ["stage.mean_type=eps"],
    "v": ["stage.mean_type=v"],
    "v_coords": ["stage.mean_type=v", "+model.overrides.coord_channels=true"],
    "v_coords_minsnr": ["stage.mean_type=v", "+model.overrides.coord_channels=true", "stage.min_snr_gamma=5"],
    "v_coords_ids": ["stage.mean_type=v", "+model.overrides.coord_channels=true", "+model.overrides.text_source=ids"],
}
HEADLINE = ("gain_region/image/t500", "gain_region/image/t800", "gain_region/text/t500", "gain_region/text/t800",
            "match/color", "match/shape", "match/position", "match/full")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-out", type=Path, required=True,
                   help="a `make demo` output folder (needs data/train, data/val and pipeline/clip)")
    p.add_argument("--arms", default="eps,v", help=f"named arms, comma-separated (known: {', '.join(ARMS)})")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="an extra arm: a name and space-separated Hydra overrides")
    p.add_argument("--base", default=None, help="overrides every arm shares (default: the demo's decoder recipe)")
    p.add_argument("--samples", type=int, default=12000, help="training samples per arm")
    p.add_argument("--evals", type=int, default=4, help="evaluations along training (the last at the end)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--name", default="cpu", help="results name: bench/results/learning_<name>.json")
    p.add_argument("--runs", type=Path, default=None, help="run folders (default: <demo-out>/learning)")
    return p.parse_args(argv)


def base_overrides(args) -> list[str]:
    """The experiment every arm starts from: the demo's decoder recipe with its choices of prediction target and
    coordinate channels undone (the arms make them; batch size is --batch-size), or --base on experiment=shapes_demo."""
    if args.base is not None:
        return ["experiment=shapes_demo", *shlex.split(args.base)]
    return ["experiment=shapes_demo_decoder", "stage.mean_type=null", "~model.overrides.coord_channels"]


def run_arm(name: str, overrides: list[str], args) -> dict:
    """Train one arm (fresh run folder) and return its eval curve with wall times."""
    out = args.demo_out.resolve()
    run_dir = (args.runs or out / "learning") / name
    steps = -(-args.samples // args.batch_size)
    every = max(1, -(-steps // args.evals))  # the last eval is the final one at the end
    cmd = [sys.executable, str(REPO / "train" / "train.py"), "stage=decoder",
           f"run_dir={run_dir}", "export_dir=null", f"clip.path={out / 'pipeline' / 'clip'}",
           f"data.shards={out / 'data' / 'train'}", f"data.val_shards={out / 'data' / 'val'}",
           f"total_samples={args.samples}", f"batch_size={args.batch_size}", f"sample.every_steps={every}",
           "checkpoint.every_steps=-1", *base_overrides(args), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HYDRA_FULL_ERROR="1")
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"arm {name!r} failed (exit {proc.returncode}); its run folder is {run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"overrides": overrides, "wall_seconds": round(time.perf_counter() - t0, 1),
            "train_seconds": summary["train_seconds"], "steps": summary["steps"],
            "samples_seen": summary["samples_seen"], "final_loss": summary["losses"][-1], "evals": summary["evals"]}


def table(results: dict[str, dict]) -> str:
    cols = ["arm", "samples", "train s", *HEADLINE]
    rows = [cols]
    for name, r in results.items():
        last = r["evals"][-1] if r["evals"] else {}
        rows.append([name, str(r["samples_seen"]), f"{r['train_seconds']:.0f}",
                     *(f"{last[k]:.2f}" if k in last else "-" for k in HEADLINE)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def plot(results: dict[str, dict], path: Path) -> None:
    """An HTML page of curves (gain in the object region at t=800 for z_i and caption; oracle match)."""
    from unclip.evals.report import Report, lines_block, text_block

    def series(key: str) -> dict[str, list[tuple[float, float]]]:
        return {name: [(e["samples_seen"], e[key]) for e in r["evals"] if key in e] for name, r in results.items()}

    report = Report(path, title="unclip learning instrument")
    report.sections = []
    blocks = [text_block("Decoder arms trained on the same data and CLIP; every point is one evaluation of the "
                         "EMA weights. Gain = x0 error with a shuffled condition / with the right one (1 = unused).")]
    for key in ("gain_region/image/t800", "gain_region/text/t800", "gain_region/image/t500", "gain_region/text/t500",
                "match/color", "match/shape", "match/position", "match/full"):
        blocks.append(lines_block(key, series(key), xlabel="samples seen", ylabel=key.split("/")[0]))
    report.add("Curves", blocks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for need in ("data/train", "data/val", "pipeline/clip"):
        if not (args.demo_out / need).exists():
            raise SystemExit(f"--demo-out {args.demo_out}: missing {need}; run `make demo` (or its data/clip "
                             f"stages) first")
    arms = {n: ARMS[n] for n in filter(None, args.arms.split(","))} if args.arms else {}
    if unknown := [n for n in filter(None, args.arms.split(",")) if n not in ARMS]:
        raise SystemExit(f"--arms: unknown {unknown}; known: {sorted(ARMS)}")
    for item in args.arm:
        name, sep, ov = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--arm {item!r}: expected NAME=OVERRIDES")
        arms[name] = shlex.split(ov)
    path = REPO / "bench" / "results" / f"learning_{args.name}.json"
    results = json.loads(path.read_text())["arms"] if path.is_file() else {}
    for name, overrides in arms.items():
        results[name] = run_arm(name, overrides, args)
        record = {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {args.threads}",
                  "samples": args.samples, "batch_size": args.batch_size, "base": base_overrides(args),
                  "arms": results}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        plot(results, path.with_name(f"learning_{args.name}_plot.html"))
        print(table(results), flush=True)
    print(f"wrote {path} and {path.with_name(f'learning_{args.name}_plot.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
