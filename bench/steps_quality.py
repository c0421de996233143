"""Fewer decoder steps at equal caption match (issue 18): DDIM and DPM-Solver++(2M) at k steps against
DDPM at 250, on a trained pipeline.

Each arm decodes the same held-out one-object prompts (``tools/demo_report.eval_prompts``: half val-split
attribute combinations, half a held-out combo) from the TRUE CLIP image embedding of each prompt's render
(the decoder alone, no prior) with the same per-image seeds and guidance, and the project's oracle reads
colour, shape, size and position from every 64-px image. Per arm: match rates, seconds, and the paired
difference from the 250-step reference with a 95 % interval (normal approximation over the per-prompt
differences); per sampler, the fewest steps whose colour and full-match rates are within 2 points of the
reference's (read it as colour alone when the reference's full-match rate is 0).

    .venv/bin/python bench/steps_quality.py --pipeline demo_out/pipeline [--prompts 128]
        # writes bench/results/steps_quality.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from demo import HELDOUT  # noqa: E402
from demo_report import eval_prompts  # noqa: E402

from unclip.data import shapes as S  # noqa: E402
from unclip.diffusion import derive_seed  # noqa: E402
from unclip.evals.oracle import match, read_image, spec_from_scene  # noqa: E402
from unclip.pipeline import UnCLIPPipeline  # noqa: E402

ATTRS = ("color", "shape", "size", "position")
WITHIN = 0.02  # "equal quality": within 2 points of the reference's rate


def score(images, items) -> list[dict[str, int]]:
    """Per image: 1/0 per attribute the caption states, and full match."""
    out = []
    for img, it in zip(images, items):
        m = match(spec_from_scene(S.Scene.from_dict(it["scene"]), it["prompt"]), read_image(img))
        row = {a: int(m["attributes"][a][0] == m["attributes"][a][1]) for a in ATTRS if m["attributes"][a][1]}
        out.append(row | {"full_match": int(m["full_match"])})
    return out


def paired(arm: list[dict], ref: list[dict], key: str) -> dict[str, float]:
    """Rate, and its difference from the reference's with a 95 % interval over the paired prompts."""
    pairs = [(a[key], r[key]) for a, r in zip(arm, ref) if key in a and key in r]
    n = len(pairs)
    d = [a - r for a, r in pairs]
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / max(n - 1, 1))
    half = 1.96 * sd / math.sqrt(n)
    # normal approximation: too narrow when few prompts disagree (see "discordant")
    return {"rate": sum(a for a, _ in pairs) / n, "diff": mean, "lo": mean - half, "hi": mean + half, "n": n,
            "discordant": sum(x != 0 for x in d)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="demo_out/pipeline")
    ap.add_argument("--prompts", type=int, default=128, help="one-object held-out prompts, one image each")
    ap.add_argument("--steps", default="10,15,25,50", help="step counts for DDIM and DPM-Solver++(2M)")
    ap.add_argument("--reference", type=int, default=250, help="DDPM steps of the reference")
    ap.add_argument("--guidance", type=float, default=3.0, help="decoder guidance scale (make demo's eval: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "steps_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = UnCLIPPipeline.load(args.pipeline, settings="fast", moderation=False)
    items = eval_prompts(args.prompts, 0, HELDOUT, args.seed)
    prompts = [it["prompt"] for it in items]
    seeds = [derive_seed(args.seed, 1000 + i) % 2**31 for i in range(len(items))]
    with torch.no_grad():
        z = pipe.clip.encode_image([S.render(S.Scene.from_dict(it["scene"]), 64) for it in items]).float()
    arms = [("ddpm", args.reference)] + [(s, int(k)) for s in ("ddim", "dpmpp_2m") for k in args.steps.split(",")]
    scores, rows = {}, []
    for sampler, steps in arms:
        settings = {"preset": "fast", "batch_size": 16,
                    "decoder": {"sampler": sampler, "steps": steps, "guidance_scale": args.guidance}}
        t0 = time.perf_counter()
        result = pipe.generate(prompts, n=1, size=64, settings=settings, sample_seeds=seeds, image_embeds=z,
                               progress=True)
        seconds = time.perf_counter() - t0
        name = f"{sampler} {steps}"
        scores[name] = score(result.images, items)
        ref = scores[f"ddpm {args.reference}"]
        row = {"arm": name, "sampler": sampler, "steps": steps, "seconds": seconds,
               **{k: paired(scores[name], ref, k) for k in (*ATTRS, "full_match")}}
        rows.append(row)
        print(f"{name:<14}{seconds:>8.1f} s  " + "  ".join(
            f"{k} {row[k]['rate']:.1%} ({row[k]['diff']:+.1%} [{row[k]['lo']:+.1%}, {row[k]['hi']:+.1%}])"
            for k in ("color", "shape", "position", "full_match")), flush=True)
    fewest = {}
    for sampler in ("ddim", "dpmpp_2m"):
        ok = [r["steps"] for r in rows if r["sampler"] == sampler
              and all(r[k]["diff"] >= -WITHIN for k in ("color", "full_match"))]
        fewest[sampler] = min(ok) if ok else None
    print(f"fewest steps within {WITHIN:.0%} of DDPM {args.reference} (colour and full match): {fewest}")
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "pipeline": str(args.pipeline), "prompts": len(items),
              "guidance": args.guidance, "reference": f"ddpm {args.reference}", "within": WITHIN,
              "fewest_steps": fewest, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
