"""Decoder speed side by side with diffusers, at equal parameters and equal precision (issue 18's workload).

The two networks are the same network: a Karlo-style decoder (ADM UNet with added-KV attention, z_i and z_t
into the time embedding, 4 extra tokens) built in diffusers (UNet2DConditionModel + UnCLIPTextProjModel) and
converted to ours with ``unclip.convert`` (tests/convert prove the outputs agree), so a ratio here is
implementation alone. Workload: 64 px, ≈ 4.5M parameters, a 256-d image embedding, learned variance; a train
step is forward + loss + backward at batch 8; sampling is 25 DDIM steps × 4 images, no guidance. Rows run
interleaved (A, B, A, B …) so drift hits both alike; medians are reported, with FLOPs from
``torch.utils.flop_counter``. DALLE2-pytorch is timed too when it is importable.

    .venv/bin/python bench/decoder_speed.py --repeats 5            # writes bench/results/decoder_speed.json
    .venv/bin/python bench/decoder_speed.py --compile --out bench/results/decoder_speed_compile.json

``--compile`` adds our decoder under ``torch.compile`` (inductor, as ``trainer.compile=true`` and
``UnCLIPPipeline.load(compile=True)`` run it) as a row of its own; its compile time is reported apart.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.convert.karlo_tiny import TinyKarlo, build, save  # noqa: E402  (the diffusers modules, random)
from unclip.compile import maybe_compile  # noqa: E402
from unclip.convert.karlo import convert_karlo  # noqa: E402
from unclip.diffusion import Denoiser, GaussianDiffusion, make_betas, sample_ddim  # noqa: E402
from unclip.models import load_stage  # noqa: E402
from unclip.nn import count_parameters  # noqa: E402

WORKLOAD = TinyKarlo(clip_dim=256, clip_heads=4, clip_layers=1, decoder_widths=(32, 64, 64, 96), decoder_blocks=2,
                     decoder_head_dim=32, decoder_attention=(False, True, True, True), cross_dim=128,
                     decoder_size=64, sr_widths=(8, 16), sr_size=256, groups=8)
TRAIN_BATCH, SAMPLE_BATCH, STEPS = 8, 4, 25


class DiffusersDecoder(nn.Module):
    """diffusers' text_proj + UNet behind our decoder's call signature (no caption: z_i only)."""

    def __init__(self, text_proj, unet, embed_dim):
        super().__init__()
        self.text_proj, self.unet = text_proj, unet
        self.register_buffer("null_text", torch.zeros(1, embed_dim))

    def forward(self, x_t, t, image_emb, **_):
        b = x_t.shape[0]
        hid = torch.zeros(b, 1, self.null_text.shape[1], device=x_t.device)  # one "" token
        hs, add = self.text_proj(image_embeddings=image_emb, prompt_embeds=self.null_text.expand(b, -1),
                                 text_encoder_hidden_states=hid, do_classifier_free_guidance=False)
        return self.unet(x_t, t, encoder_hidden_states=hs, class_labels=add).sample


class OursDecoder(nn.Module):
    """Our decoder fed the same inputs (the caption absent: its "" null, one token)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, x_t, t, image_emb, **_):
        b = x_t.shape[0]
        w = self.decoder.text.clip_token_width
        tokens = torch.zeros(b, 1, w, device=x_t.device)
        emb = torch.zeros(b, self.decoder.embed_dim, device=x_t.device)
        return self.decoder(x_t, t, image_emb, tokens, None, text_emb=emb)  # no mask, as diffusers gets none


def networks(compiled: bool = False) -> dict[str, nn.Module]:
    modules = build(WORKLOAD)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = convert_karlo(save(modules, Path(tmp) / "src"), Path(tmp) / "pipe")
        _, decoder = load_stage(pipe / "decoder")
    nets = {"unclip": OursDecoder(decoder).eval(),
            "diffusers": DiffusersDecoder(modules["text_proj"], modules["decoder"], WORKLOAD.clip_dim).eval()}
    if compiled:
        nets["unclip+compile"] = maybe_compile(nets["unclip"], True, "cpu")
    try:  # DALLE2-pytorch, when installed (not a dependency): its Unet at the same widths
        from dalle2_pytorch import Unet

        class Dalle2(nn.Module):
            def __init__(self):
                super().__init__()
                self.unet = Unet(dim=32, image_embed_dim=WORKLOAD.clip_dim, cond_dim=128, channels=3,
                                 dim_mults=(1, 2, 2, 3), learned_sinusoidal_cond=False, lowres_cond=False,
                                 cond_on_image_embeds=True, cond_on_text_encodings=False)

            def forward(self, x_t, t, image_emb, **_):
                return self.unet(x_t, t, image_embed=image_emb)
        nets["dalle2-pytorch"] = Dalle2().eval()
    except ImportError:
        pass
    return nets


def inputs(b: int, g: torch.Generator):
    return (torch.randn(b, 3, 64, 64, generator=g), torch.randint(0, 1000, (b,), generator=g),
            F.normalize(torch.randn(b, WORKLOAD.clip_dim, generator=g), dim=-1) * 10)


def precision(name: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()


def train_step(net: nn.Module, prec: str, batch) -> float:
    x, t, z = batch
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with precision(prec):
        out = net(x, t, z)
    loss = out.float().pow(2).mean()
    loss.backward()
    return time.perf_counter() - start


@torch.no_grad()
def sample(net: nn.Module, prec: str, diffusion: GaussianDiffusion, z: torch.Tensor) -> float:
    den = Denoiser(net, diffusion.alphas_cumprod, mean_type="eps", learned_variance=True)
    start = time.perf_counter()
    with precision(prec):
        sample_ddim(den, (z.shape[0], 3, 64, 64), diffusion.respace(STEPS), cond={"image_emb": z},
                    generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def flops(net: nn.Module, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        net(*batch).float().pow(2).mean().backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time our decoder under torch.compile")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decoder_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets = networks(args.compile)
    g = torch.Generator().manual_seed(0)
    train_batch, z = inputs(TRAIN_BATCH, g), inputs(SAMPLE_BATCH, g)[2]
    diffusion = GaussianDiffusion(make_betas("cosine"))
    rows = [(kind, prec) for kind in ("train step", f"{STEPS}-step DDIM") for prec in ("fp32", "bf16")]
    times = {(name, kind, prec): [] for name in nets for kind, prec in rows}
    warmup = {}
    for name, net in nets.items():  # warm-up: allocator, oneDNN kernel selection, compilation
        start = time.perf_counter()
        for kind, prec in rows:
            train_step(net, prec, train_batch) if kind == "train step" else sample(net, prec, diffusion, z)
        warmup[name] = time.perf_counter() - start
    for _ in range(args.repeats):
        for kind, prec in rows:
            for name, net in nets.items():
                seconds = train_step(net, prec, train_batch) if kind == "train step" else \
                    sample(net, prec, diffusion, z)
                times[(name, kind, prec)].append(seconds)
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "params": {n: count_parameters(m) for n, m in nets.items()},
              "train_flops": {n: flops(m, train_batch) for n, m in nets.items() if n != "unclip+compile"},
              "warmup_s": warmup, "rows": []}
    print(f"params: { {n: f'{p / 1e6:.2f}M' for n, p in result['params'].items()} }; train-step GFLOP: "
          f"{ {n: round(f / 1e9, 2) for n, f in result['train_flops'].items()} }")
    print(f"{'row':<24}" + "".join(f"{n:>16}" for n in nets) + "   unclip / fastest peer")
    for kind, prec in rows:
        med = {n: statistics.median(times[(n, kind, prec)]) for n in nets}
        peers = [v for n, v in med.items() if not n.startswith("unclip")]
        ratio = med["unclip"] / min(peers)
        row = {"row": f"{kind} {prec}", "median_s": med, "ours_over_fastest_peer": ratio}
        if "unclip+compile" in med:
            row["compiled_over_eager"] = med["unclip+compile"] / med["unclip"]
        result["rows"].append(row)
        print(f"{kind + ' ' + prec:<24}" + "".join(f"{v:>16.3f}" for v in med.values()) + f"   {ratio:.2f}")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
