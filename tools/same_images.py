"""Same seeds, same images: record every sampling entry point's output on fixed random-weight pipelines,
or compare against a recording. A refactor that claims "behaviour unchanged" runs this before and after.

    python tools/same_images.py record BEFORE.pt
    python tools/same_images.py compare BEFORE.pt      # exit 1 and the differing entries if any differ

Covers the pipeline (generate at 64/256 px with every sampler in the decoder and the upsampler, guided
and not, the prior with its Analytic-DPM Γ, variations, interpolate, text_diff, edit at 64 and 256 px
with RePaint and with inpainting channels, outpaint) and the training-side helpers
(``sample_prior`` / ``sample_decoder`` / ``sample_upsampler`` as the training grids call them), in
float32 and bf16 autocast. Random weights make noise, but deterministic noise: any change of the maths,
of the random draws or of their order changes the bytes.
"""
from __future__ import annotations

import inspect
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

from unclip.diffusion import make_generators
from unclip.pipeline import UnCLIPPipeline, build_random_pipeline

FAST = {"prior": {"steps": 4}, "decoder": {"steps": 4}, "sr256": {"steps": 2}, "repaint_resample": 2}


def _img(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _kw(fn, **kw):
    """Only the keywords ``fn`` takes (the helpers' signatures may differ before and after a refactor):
    loose sampler keywords become one ``settings`` where ``fn`` takes that, and editing inputs are named
    ``known``/``keep`` or ``masked_image``/``mask``."""
    params = inspect.signature(fn).parameters
    if "settings" in params:
        from unclip.models.sampling import StageSettings
        loose = {k: kw.pop(k) for k in ("steps", "sampler", "variance", "guidance_scale", "n_candidates") if k in kw}
        kw["settings"] = StageSettings(**loose)
    if "known" in params and "masked_image" in kw:
        kw["known"], kw["keep"] = kw.pop("masked_image"), kw.pop("mask")
    return {k: v for k, v in kw.items() if k in params}


def _pipeline_outputs(pipe: UnCLIPPipeline, tag: str) -> dict[str, torch.Tensor]:
    out = {}
    px = lambda r: r.images  # noqa: E731  (output_type="pt": float32 [N, 3, H, W], not rounded to uint8)
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):
        for scale in (1.0, 3.0):
            st = {k: {"sampler": sampler, "guidance_scale": scale} for k in ("prior", "decoder")}
            out[f"{tag}/generate/{sampler}/{scale}"] = px(pipe.generate(["a red star", "a blue circle"], n=2,
                                                                        seed=7, settings=st, output_type="pt"))
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):  # the upsampler with each sampler
        st = {"sr256": {"sampler": sampler, "steps": 2}}
        out[f"{tag}/generate256/{sampler}"] = px(pipe.generate("a green square", n=2, size=256, seed=3, settings=st,
                                                               output_type="pt"))
    analytic = {"prior": {"sampler": "ddpm", "steps": 25, "variance": "auto"}}  # Γ stored for 25 steps
    out[f"{tag}/generate/analytic_prior"] = px(pipe.generate("a red star", n=2, seed=2, settings=analytic,
                                                             output_type="pt"))
    out[f"{tag}/variations"] = px(pipe.variations(_img(1), n=2, seed=5, output_type="pt"))
    out[f"{tag}/interpolate"] = px(pipe.interpolate(_img(2), _img(3), steps=3, seed=4, output_type="pt"))
    out[f"{tag}/text_diff"] = px(pipe.text_diff(_img(4), "a red star", "a blue star", thetas=(0.0, 0.5), seed=6,
                                                output_type="pt"))
    keep = np.full((64, 64, 4), 255, dtype=np.uint8)
    keep[16:40, 20:44, 3] = 0  # the hole: transparent pixels, as the Images API's masks
    mask = Image.fromarray(keep, "RGBA")
    out[f"{tag}/edit"] = px(pipe.edit(_img(5), mask, "a yellow triangle", n=2, seed=8, output_type="pt"))
    out[f"{tag}/edit256"] = px(pipe.edit(_img(5), mask, "a yellow triangle", size=256, seed=8, output_type="pt"))
    out[f"{tag}/outpaint"] = px(pipe.outpaint(_img(6, 48), "a red star", left=8, right=8, top=8, bottom=8, seed=9,
                                              output_type="pt"))
    return out


def _helper_outputs(pipe: UnCLIPPipeline, tag: str) -> dict[str, torch.Tensor]:
    """The model-level helpers, called as the training stages' sample grids call them."""
    from unclip.models import sample_decoder, sample_prior, sample_upsampler

    out = {}
    prior, dec, sr = pipe.stages["prior"], pipe.stages["decoder"], pipe.stages["sr256"]
    text = pipe.encode_text(["a red star", "a blue circle"])
    te, tt, tm = text["text_emb"], text["text_tokens"], text.get("text_mask")
    for sampler in ("ddpm", "ddim"):
        kw = dict(steps=4, sampler=sampler, variance="small", guidance_scale=2.0, n_candidates=2,
                  generator=make_generators([11, 12, 13, 14]), mean_type=prior.spec.mean_type)
        out[f"{tag}/sample_prior/{sampler}"] = sample_prior(prior.model, prior.diffusion, te, tt, tm,
                                                            **_kw(sample_prior, **kw))
        z = out[f"{tag}/sample_prior/{sampler}"]
        kw = dict(steps=4, sampler=sampler, guidance_scale=3.0, generator=torch.Generator().manual_seed(1),
                  mean_type=dec.spec.mean_type, text_emb=te)
        if dec.model.inpaint:  # an inpainting decoder's grid: half of each image known
            keep = torch.zeros(2, 1, 64, 64)
            keep[..., :32] = 1
            kw.update(masked_image=torch.linspace(-1, 1, 2 * 3 * 64 * 64).view(2, 3, 64, 64) * keep, mask=keep)
        low = sample_decoder(dec.model, dec.diffusion, z, tt, tm, **_kw(sample_decoder, **kw))
        out[f"{tag}/sample_decoder/{sampler}"] = low
        kw = dict(steps=2, sampler=sampler, generator=torch.Generator().manual_seed(2), mean_type=sr.spec.mean_type)
        out[f"{tag}/sample_upsampler/{sampler}"] = sample_upsampler(sr.model, sr.diffusion, low,
                                                                    **_kw(sample_upsampler, **kw))
    return out


def outputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = build_random_pipeline(f"{tmp}/plain", seed=0)
        inpaint = build_random_pipeline(f"{tmp}/inpaint", inpaint=True, seed=1)
        for name, d in (("plain", plain), ("inpaint", inpaint)):
            for dtype in (torch.float32, torch.bfloat16):
                pipe = UnCLIPPipeline.load(d, settings={"preset": "fast", **FAST}, dtype=dtype,
                                         moderation=False)
                out |= _pipeline_outputs(pipe, f"{name}/{str(dtype)[6:]}")
                if dtype == torch.float32:
                    out |= _helper_outputs(pipe, f"{name}/{str(dtype)[6:]}")
    return {k: v.detach().cpu().float() for k, v in out.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__)
        return 2
    mode, path = argv
    torch.set_num_threads(1)  # same kernels' reduction order in both runs
    got = outputs()
    if mode == "record":
        torch.save(got, path)
        print(f"recorded {len(got)} outputs to {path}")
        return 0
    ref = torch.load(path)
    bad = [k for k in sorted(ref.keys() | got.keys())
           if k not in ref or k not in got or ref[k].shape != got[k].shape or not torch.equal(ref[k], got[k])]
    for k in bad:
        a, b = ref.get(k), got.get(k)
        diff = "missing" if a is None or b is None else (
            f"shapes {tuple(a.shape)} vs {tuple(b.shape)}" if a.shape != b.shape else
            f"max |diff| {float((a - b).abs().max()):.3g}")
        print(f"DIFFERENT {k}: {diff}")
    print(f"{len(got) - len(bad)} of {len(ref.keys() | got.keys())} outputs identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
