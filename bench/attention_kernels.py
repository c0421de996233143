"""Matmul attention against PyTorch's SDPA on the CPU (issue 18: "matmul attention where it wins").

DALLE2-pytorch computes attention as two matrix products with a softmax between; we call
``F.scaled_dot_product_attention``, with ``unclip/nn/kernels.py`` running it in float32 where the bf16
kernel is the slower one. For each shape of ``bench/cpu_kernels.py`` and issue 18's sampling batch, in
bf16 and float32, forward only and forward + backward, this times in one interleaved run: SDPA as the rule
runs it, SDPA in the input dtype, and matmul attention (scores in the input dtype, softmax in float32).

    .venv/bin/python bench/attention_kernels.py [--repeats 9]   # writes bench/results/attention_kernels.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_kernels import ATTENTION, interleaved  # noqa: E402
from unclip.nn.kernels import attention  # noqa: E402

SHAPES = ATTENTION + [(4, 2, 1024, 1029, 32)]  # + issue 18's sampling batch at 32x32


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # [B, H, Lq, Lk]
    return torch.matmul(scores.softmax(-1, dtype=torch.float32).to(q.dtype), v)


def timed(fn, q, k, v, train: bool):
    def run():
        if train:
            fn(q, k, v).float().sum().backward()
        else:
            with torch.no_grad():
                fn(q, k, v)
    return run


def rows(repeats: int) -> list[dict]:
    out = []
    for shape in SHAPES:
        b, h, lq, lk, d = shape
        for dtype in (torch.bfloat16, torch.float32):
            for train in (False, True):
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(b, h, n, d, generator=g).to(dtype).requires_grad_(train) for n in (lq, lk, lk))
                fns = {"sdpa_rule": timed(attention, q, k, v, train),
                       "sdpa": timed(F.scaled_dot_product_attention, q, k, v, train),
                       "matmul": timed(matmul_attention, q, k, v, train)}
                ms = {n: s * 1e3 for n, s in interleaved(fns, repeats).items()}
                row = {"shape": shape, "dtype": str(dtype).removeprefix("torch."),
                       "pass": "fwd+bwd" if train else "fwd", "ms": ms,
                       "matmul_over_rule": ms["matmul"] / ms["sdpa_rule"]}
                out.append(row)
                times = "".join(f"{n} {t:7.2f}  " for n, t in ms.items())
                print(f"{'x'.join(map(str, shape)):<20}{row['dtype']:<10}{row['pass']:<9}{times}"
                      f"matmul/rule {row['matmul_over_rule']:.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "attention_kernels.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "rows": rows(args.repeats)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
