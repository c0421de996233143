"""The measurements behind ``unclip/nn/kernels.py`` and the fused AdamW: per op, and on the whole train step
of `make demo`'s decoder (configs/experiment/shapes_demo_decoder.yaml, batch 16, bf16 autocast).

Per op (forward only, and forward + backward), in one interleaved run: attention through
``F.scaled_dot_product_attention`` on bfloat16 inputs vs the same call in float32 rounded back, and GroupNorm
on channels-last bfloat16 maps the same two ways, with the kernel the rule picks for training and for
sampling; AdamW's for-loop, foreach and fused kernels on the demo decoder's parameters. Then the whole
step: kernel_policy("native") + for-loop AdamW (the code before) against kernel_policy("auto") + fused AdamW
(now), interleaved. (The decoder-NLL-at-t=0 saving is in both arms.)

    .venv/bin/python bench/cpu_kernels.py [--repeats 15]     # writes bench/results/cpu_kernels.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unclip.nn import kernel_policy  # noqa: E402
from unclip.nn.kernels import attention_in_float32, group_norm_in_float32  # noqa: E402

BF16 = torch.bfloat16
# (batch, heads, queries, keys, head dim): the demo decoder's 16- and 8-px blocks (image + 36 caption tokens),
# the prior-sized token attention, and issue 18's 32x32 workload
ATTENTION = [(16, 2, 256, 292, 32), (16, 2, 64, 100, 32), (16, 8, 64, 77, 64), (8, 2, 1024, 1029, 32)]
GROUPNORM = [(16, 64, 32, 32), (16, 128, 16, 16), (16, 128, 8, 8), (8, 64, 64, 64)]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed A, B, A, B … after one warm call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def op_rows(repeats: int) -> list[dict]:
    """Each op in its bfloat16 kernel vs in float32 rounded back, forward only and forward + backward, and
    which one the rule (kernels.py) picks for training and for sampling."""
    rows = []
    for b, h, lq, lk, d in ATTENTION:
        q, k, v = (torch.randn(b, h, n, d, dtype=BF16, requires_grad=True) for n in (lq, lk, lk))
        mask = torch.ones(b, 1, 1, lk, dtype=torch.bool)
        mask[..., -3:] = False  # padding tokens, as captions have
        gy = torch.randn(b, h, lq, d, dtype=BF16)
        native = lambda q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        f32 = lambda q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=m).to(BF16)
        rows.append(_op_row("attention", (b, h, lq, lk, d), native, f32, gy, repeats,
                            train=attention_in_float32(q, k), sample=_no_grad(attention_in_float32, q, k)))
    for shape in GROUPNORM:
        x = torch.randn(shape, dtype=BF16).contiguous(memory_format=torch.channels_last).requires_grad_()
        gy = torch.randn(shape, dtype=BF16).contiguous(memory_format=torch.channels_last)
        gn = torch.nn.GroupNorm(32, shape[1])
        native = lambda gn=gn, x=x: F.group_norm(x, 32, gn.weight, gn.bias, gn.eps)
        f32 = lambda gn=gn, x=x: gn(x.float()).to(BF16)
        rows.append(_op_row("group_norm NHWC", shape, native, f32, gy, repeats,
                            train=group_norm_in_float32(x), sample=_no_grad(group_norm_in_float32, x)))
    return rows


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _op_row(op: str, shape, native: Callable[[], torch.Tensor], f32: Callable[[], torch.Tensor], gy: torch.Tensor,
            repeats: int, *, train: bool, sample: bool) -> dict:
    def fwd(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    def fwd_bwd(fn):
        return lambda: fn().backward(gy)

    f = interleaved({"bf16": fwd(native), "float32": fwd(f32)}, repeats)
    fb = interleaved({"bf16": fwd_bwd(native), "float32": fwd_bwd(f32)}, repeats)
    return {"op": op, "shape": list(shape), "forward_ms": {k: v * 1e3 for k, v in f.items()},
            "forward_backward_ms": {k: v * 1e3 for k, v in fb.items()},
            "forward_bf16_over_float32": f["bf16"] / f["float32"],
            "forward_backward_bf16_over_float32": fb["bf16"] / fb["float32"],
            "rule_picks": {"training": "float32" if train else "bf16", "sampling": "float32" if sample else "bf16"}}


def adam_rows(repeats: int) -> dict:
    model = demo_decoder()
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for name, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        ps = [p.detach().clone().requires_grad_() for p in params]
        for p in ps:
            p.grad = torch.randn_like(p)
        opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, **kw)
        out[name] = opt.step
    ms = {k: v * 1e3 for k, v in interleaved(out, repeats).items()}
    return {"params": sum(p.numel() for p in params), "tensors": len(params), "step_ms": ms,
            "for_loop_over_fused": ms["for-loop"] / ms["fused"]}


def demo_decoder():
    from unclip.training import compose_config
    from unclip.training.stages.common import stage_spec

    cfg = compose_config(["stage=decoder", "experiment=shapes_demo_decoder"])
    return stage_spec(cfg).build_model()


def step_rows(repeats: int) -> dict:
    """The demo decoder's train step, before (native kernels, for-loop AdamW) vs now, interleaved."""
    from unclip.training import compose_config
    from unclip.training.loop import make_optimizer
    from unclip.training.stages.common import DiffusionObjective, stage_spec

    cfg = compose_config(["stage=decoder", "experiment=shapes_demo_decoder"])
    spec = stage_spec(cfg)
    torch.manual_seed(0)
    model = spec.build_model().train()
    objective = DiffusionObjective(spec, cfg.stage.loss, cfg.stage.min_snr_gamma)
    f, b = spec.fields, cfg.batch_size
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(b, 3, f["image_size"], f["image_size"], generator=g) * 2 - 1
    tokens = torch.randint(1, 100, (b, f["clip_context_length"]), generator=g)
    tokens[:, 12:] = 0
    cond = {"image_emb": torch.randn(b, f["clip_embed_dim"], generator=g), "text_tokens": tokens,
            "text_mask": tokens != 0, "drop_image": torch.zeros(b, dtype=torch.bool),
            "drop_text": torch.zeros(b, dtype=torch.bool)}
    fused = make_optimizer(model, cfg.stage.optim)
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in fused.param_groups]
    loop = torch.optim.AdamW(groups, foreach=False)  # its own group dicts: the fused flag must not carry over
    assert not loop.defaults["fused"] and not any(g.get("fused") for g in loop.param_groups)

    def step(policy, opt):
        def run():
            with kernel_policy(policy):  # backward inside too: the policy is read when ops run
                with torch.autocast("cpu", dtype=BF16):
                    loss = objective(model, x0, cond, torch.Generator().manual_seed(1)).float().mean()
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    s = interleaved({"before": step("native", loop), "now": step("auto", fused)}, repeats)
    return {"batch": b, "params": sum(p.numel() for p in model.parameters()), "step_s": s,
            "before_over_now": s["before"] / s["now"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_kernels.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"machine": platform.machine(), "processor": platform.processor() or "", "threads": args.threads,
              "torch": torch.__version__, "ops": op_rows(args.repeats), "adamw": adam_rows(args.repeats),
              "demo_decoder_step": step_rows(args.repeats)}
    for r in result["ops"]:
        picks = r["rule_picks"]
        print(f"{r['op']:16s} {str(tuple(r['shape'])):24s} bf16/float32: fwd+bwd "
              f"{r['forward_backward_bf16_over_float32']:.2f}, fwd {r['forward_bf16_over_float32']:.2f}; "
              f"rule: train {picks['training']}, sample {picks['sampling']}")
    a = result["adamw"]
    print("AdamW ms: " + ", ".join(f"{k} {v:.1f}" for k, v in a["step_ms"].items()))
    s = result["demo_decoder_step"]
    print(f"demo decoder step: before {s['step_s']['before']:.3f} s, now {s['step_s']['now']:.3f} s "
          f"({s['before_over_now']:.2f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
