"""Throughput of the unCLIP networks on this machine: training forward+backward (samples/s) at the
training resolution, and the latency of one sampling step at the sampling resolution, for each
stage × preset × {fp32, bf16 autocast}. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/bench_models.py --presets tiny base --budget-s 20
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from unclip.diffusion import Denoiser, classifier_free_guidance, make_betas
from unclip.models import STAGES, get_preset
from unclip.nn import count_parameters

TRAIN_BATCH = {"tiny": {"prior": 64, "decoder": 8, "sr256": 8, "sr1024": 4},
               "base": {"prior": 16, "decoder": 2, "sr256": 2, "sr1024": 1}}


def make_inputs(stage: str, pr, b: int, size: int | None, device: str) -> dict[str, torch.Tensor]:
    """Random conditioning of the right shapes: size is the image side (None: the training size)."""
    t = torch.randint(0, 1000, (b,), device=device)
    if stage == "prior":
        d, w, length = pr.clip_embed_dim, pr.clip_token_width, pr.clip_context_length
        return dict(x_t=torch.randn(b, d, device=device), t=t, text_emb=torch.randn(b, d, device=device),
                    text_tokens=torch.randn(b, length, w, device=device),
                    text_mask=torch.ones(b, length, dtype=torch.bool, device=device))
    if stage == "decoder":
        s = size or pr.image_size
        tokens = (torch.randn(b, pr.clip_context_length, pr.clip_token_width, device=device) if pr.text_source == "clip"
                  else torch.randint(1, 49408, (b, pr.text_context_length), device=device))
        return dict(x_t=torch.randn(b, 3, s, s, device=device), t=t, text_tokens=tokens,
                    image_emb=torch.randn(b, pr.clip_embed_dim, device=device))
    s = size or pr.train_crop_size
    low = s // (pr.image_size // pr.low_res_size)
    return dict(x_t=torch.randn(b, 3, s, s, device=device), t=t, low_res=torch.randn(b, 3, low, low, device=device))


def _autocast(dtype: str, device: str):
    return torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def timed(fn, max_iters: int, budget_s: float) -> tuple[float, int]:
    """One warm-up call, then up to max_iters calls within budget_s: (seconds per call, calls)."""
    fn()
    n, start = 0, time.perf_counter()
    while n < max_iters and (n == 0 or time.perf_counter() - start < budget_s):
        fn()
        n += 1
    return (time.perf_counter() - start) / n, n


def bench_train(stage, pr, model, dtype, device, args) -> dict:
    b = TRAIN_BATCH[args.preset_key][stage]
    inp = make_inputs(stage, pr, b, None, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # measures the step too, changes nothing
    model.train()

    def step():
        with _autocast(dtype, device):
            out = model(**inp)
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec, n = timed(step, args.max_iters, args.budget_s)
    return {"train_batch": b, "train_size": _size(stage, pr, train=True), "train_samples_per_s": b / sec,
            "train_iters": n}


def bench_sample_step(stage, pr, model, dtype, device, args) -> dict:
    """One denoiser call as the stage's sampler makes it: prior and decoder guided (doubled batch, the
    prior with 2 candidates), upsamplers unguided at full size."""
    b = 2 if stage == "prior" else 1  # prior: n_candidates = 2 for one caption
    inp = make_inputs(stage, pr, b, _size(stage, pr, train=False), device)
    mean_type = "x0" if stage == "prior" else "eps"
    den = Denoiser(model, make_betas("cosine"), mean_type=mean_type,
                   learned_variance=getattr(pr, "learned_sigma", False))
    x_t, t = inp.pop("x_t"), inp.pop("t")
    if stage in ("prior", "decoder"):
        keys = ("drop_text",) if stage == "prior" else ("drop_text", "drop_image")
        inp.update({k: torch.zeros(b, dtype=torch.bool, device=device) for k in keys})
        den = classifier_free_guidance(den, 3.0, {k: torch.ones(1, dtype=torch.bool, device=device) for k in keys})
    model.eval()

    @torch.no_grad()
    def step():
        with _autocast(dtype, device):
            den(x_t, t, **inp)

    sec, n = timed(step, args.max_iters, args.budget_s)
    return {"sample_batch": b, "sample_size": _size(stage, pr, train=False), "sample_step_s": sec, "sample_iters": n}


def _size(stage, pr, train: bool):
    if stage == "prior":
        return None
    return pr.image_size if stage == "decoder" or not train else pr.train_crop_size


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--max-iters", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=15.0, help="time budget per measurement (after warm-up)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for preset in args.presets:
        args.preset_key = preset
        for stage in args.stages:
            pr = get_preset(stage, preset)
            torch.manual_seed(0)
            model = pr.build().to(args.device)
            for dtype in args.dtypes:
                row = {"stage": stage, "preset": preset, "dtype": dtype, "params": count_parameters(model)}
                row |= bench_train(stage, pr, model, dtype, args.device, args)
                row |= bench_sample_step(stage, pr, model, dtype, args.device, args)
                rows.append(row)
                print(_fmt(row), flush=True)
    _write(rows, args)
    return rows


def _fmt(r: dict) -> str:
    sample = f"{r['sample_size'] or '-'}px" if r["sample_size"] else "z_i"
    return (f"{r['stage']:<8}{r['preset']:<6}{r['dtype']:<6}{r['params'] / 1e6:>8.1f}M  train b={r['train_batch']:<3}"
            f"{r['train_samples_per_s']:>9.2f} samples/s   sample step ({sample}, b={r['sample_batch']}) "
            f"{r['sample_step_s'] * 1e3:>9.1f} ms")


def _write(rows: list[dict], args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"models_{args.device}_{stamp}.json"
    meta = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "max_iters": args.max_iters, "budget_s": args.budget_s}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
