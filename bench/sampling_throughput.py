"""Eval-scale sampling throughput of the generate job: images/s at 64 px for N prompts, one pipeline call
per prompt (the job's behaviour before prompts were batched) against `prompts_per_call` prompts per call,
same seeds and files. A random-weight tiny pipeline (`fast` settings): the figure is the job's overhead
and batching, not a trained model's. Prints a table and writes bench/results/sampling_throughput.json.

    .venv/bin/python bench/sampling_throughput.py --prompts 256 --per-call 1 8 32
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from unclip.cli import generate
from unclip.pipeline import build_random_pipeline

CONFIGS = str(Path(generate.__file__).resolve().parents[1] / "configs" / "sample")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--per-call", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_random_pipeline(Path(tmp) / "pipe")
        prompts = Path(tmp) / "prompts.txt"
        colours, shapes = ["red", "blue", "green", "yellow"], ["star", "circle", "square", "triangle"]
        prompts.write_text("\n".join(f"a {colours[i % 4]} {shapes[i // 4 % 4]}" for i in range(a.prompts)) + "\n")
        for per_call in a.per_call:
            with initialize_config_dir(config_dir=CONFIGS, version_base=None):
                cfg = compose(config_name="generate", overrides=[
                    f"pipeline_dir={pipe}", f"out={Path(tmp) / f'out{per_call}'}", f"prompts_file={prompts}", "n=1",
                    "size=64", "preset=fast", f"prompts_per_call={per_call}", "progress=false",
                    "contact_sheet=false"])
            t0 = time.perf_counter()
            n = len(generate.run(cfg))
            s = time.perf_counter() - t0
            rows.append({"prompts_per_call": per_call, "images": n, "seconds": round(s, 2),
                         "images_per_s": round(n / s, 2)})
            print(f"prompts_per_call={per_call:3d}: {n} images in {s:6.1f} s = {n / s:6.2f} images/s", flush=True)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = round(r["images_per_s"] / base, 2)
    out = Path(__file__).resolve().parent / "results" / "sampling_throughput.json"
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": a.threads,
                               "date": datetime.date.today().isoformat(), "prompts": a.prompts, "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
