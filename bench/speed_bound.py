"""How fast can the decoder get at equal maths? An Amdahl bound from the kernels both codebases share.

At equal parameters and precision, our decoder and diffusers' compute the same convolutions, matrix
products and attention, and on a CPU both call PyTorch's oneDNN/MKL kernels for them. Whatever we do
around those kernels, a step cannot take less than their time, so

    best ours / peer  =  (our time in those kernels) / (the peer's step, timed)

i.e. our step with everything but those kernels made free. This script times issue 18's workload
(``bench/decoder_speed.py``: train step at batch 8, 25-step DDIM × 4 images, fp32 and bf16) interleaved,
profiles each network with torch.profiler, sums the self time of those kernels (convolution forward and
backward, mm/addmm/bmm, scaled-dot-product attention forward and backward) and prints, per row, the ratio
now, our kernels' share of our timed step, the best ratio (and its inverse, the best speed relative to the
peer) and the speed-up left on our own step (1 / share). Faster kernels for the same maths (new oneDNN
versions, compile-generated code) move it.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder_speed import SAMPLE_BATCH, TRAIN_BATCH, inputs, networks, sample, train_step  # noqa: E402

from unclip.diffusion import GaussianDiffusion, make_betas  # noqa: E402

KERNELS = {  # op-name pieces of the kernels that compute the network's maths, by kind
    "convolution": ("convolution", "conv2d", "mkldnn_conv"),
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"),
    "attention": ("scaled_dot_product", "flash_attention", "efficient_attention"),
}


def kind_of(name: str) -> str | None:
    for kind, pieces in KERNELS.items():
        if any(p in name for p in pieces):
            return kind
    return None


def profiled(fn, calls: int) -> dict[str, float]:
    """Seconds of self CPU time per kernel kind, and in all, per call of ``fn`` (mean over ``calls``)."""
    fn()  # warm-up: oneDNN primitive selection, allocator
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    out: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        seconds = ev.self_cpu_time_total / 1e6 / calls
        out["total"] += seconds
        kind = kind_of(ev.key)
        if kind is not None:
            out[kind] += seconds
    out["kernels"] = sum(out[k] for k in KERNELS)
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=3, help="profiled calls per network and row")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed calls per network and row")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed_bound.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets = networks()
    g = torch.Generator().manual_seed(0)
    train_batch, z = inputs(TRAIN_BATCH, g), inputs(SAMPLE_BATCH, g)[2]
    diffusion = GaussianDiffusion(make_betas("cosine"))
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "calls": args.calls, "repeats": args.repeats, "kernels": KERNELS, "rows": []}
    print(f"{'row':<20}{'unclip s':>9}{'peer s':>9}{'ours/peer':>11}{'our kernel share':>18}{'best ours/peer':>16}"
          f"{'left on ours':>14}")
    for kind in ("train step", "25-step DDIM"):
        for prec in ("fp32", "bf16"):
            calls = {name: (lambda net=net, prec=prec: train_step(net, prec, train_batch)) if kind == "train step"
                     else (lambda net=net, prec=prec: sample(net, prec, diffusion, z)) for name, net in nets.items()}
            row = {"row": f"{kind} {prec}", "median_s": interleaved(calls, args.repeats),
                   "profile": {name: profiled(call, args.calls) for name, call in calls.items()}}
            peer = min((n for n in nets if n != "unclip"), key=lambda n: row["median_s"][n])
            ours = row["profile"]["unclip"]
            row["fastest_peer"], row["ours_over_peer"] = peer, row["median_s"]["unclip"] / row["median_s"][peer]
            # over the timed step, not the profiled ops' sum (which leaves out time between ops)
            row["our_kernel_share"] = ours["kernels"] / row["median_s"]["unclip"]
            # our step minus everything but these kernels, over the peer's step as it is
            row["best_ours_over_peer"] = ours["kernels"] / row["median_s"][peer]
            result["rows"].append(row)
            print(f"{row['row']:<20}{row['median_s']['unclip']:>9.3f}{row['median_s'][peer]:>9.3f}"
                  f"{row['ours_over_peer']:>11.2f}{row['our_kernel_share']:>18.0%}{row['best_ours_over_peer']:>16.2f}"
                  f"{1 / row['our_kernel_share']:>13.2f}x")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def interleaved(calls: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call, timed A, B, A, B … (each call times itself, as in decoder_speed.py)."""
    times: dict[str, list[float]] = {n: [] for n in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(call())
    return {n: statistics.median(v) for n, v in times.items()}


if __name__ == "__main__":
    main()
