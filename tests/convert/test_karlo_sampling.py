"""One full sampling run (prior → decoder → sr256) of a converted Karlo gives the images the diffusers modules
give with the same sampler, steps and noise: the pipeline runs twice, once on our networks and once with
each stage's network swapped for a thin wrapper that calls the diffusers modules the way Karlo's pipeline does.

The prior (x0-predicting) is compared in the float32 run. The ε-predicting decoder and upsampler are run again
in float64 on the same inputs: their first step, at t = T on the cosine schedule, divides ε by sqrt(ᾱ_T) ≈ 1e-4
before clipping x0, so float32 rounding differences between any two implementations (other convolution
algorithms, or the 1e-4 an input carries) become up to 0.1 at the pixels near the clip (measured: 0.11 for
the upsampler, 7e-3 for the decoder at 5 steps); in float64 they agree to 1e-6 and 3e-6 (the decoder's
unconditional half reads "" as encoded by two float32 CLIPs)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unclip.diffusion import randn
from unclip.models import sample_upsampler
from unclip.pipeline import UnCLIPPipeline
from unclip.pipeline.stages import run_decoder, run_upsampler, stage_generators

from .karlo_tiny import TinyKarlo, build, save


class _Ref(nn.Module):
    """A stage network's stand-in: the diffusers modules do the math; attributes the pipeline reads (sizes,
    flags) come from our converted network."""

    def __init__(self, ours: nn.Module, modules: dict, empty):
        super().__init__()
        self.ours, self.m, self.empty = ours, modules, empty  # empty: the HF text encoder's (z_t, tokens, mask) of ""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.ours, name)

    def _text(self, b, drop, emb, tokens, mask):
        e0, t0, m0 = (x.expand(b, *x.shape[1:]) for x in self.empty)
        if tokens is None:
            return e0, t0, m0
        d = drop.view(-1, 1)
        return torch.where(d, e0, emb), torch.where(d[..., None], t0, tokens), torch.where(d, m0, mask)


class RefPrior(_Ref):
    def forward(self, x_t, t, text_emb, text_tokens, text_mask=None, drop_text=None):
        emb, tokens, mask = self._text(x_t.shape[0], drop_text, text_emb, text_tokens, text_mask)
        return self.m["prior"](x_t, t, proj_embedding=emb, encoder_hidden_states=tokens,
                               attention_mask=mask).predicted_image_embedding


class RefDecoder(_Ref):
    def forward(self, x_t, t, image_emb, text_tokens=None, text_mask=None, drop_image=None, drop_text=None,
                masked_image=None, mask=None, text_emb=None):
        b = x_t.shape[0]
        null = self.m["text_proj"].learned_classifier_free_guidance_embeddings
        z = torch.where(drop_image.view(-1, 1), null.expand(b, -1), image_emb)
        emb, tokens, m = self._text(b, drop_text if drop_text is not None else drop_image, text_emb, text_tokens,
                                    text_mask)
        hs, add = self.m["text_proj"](image_embeddings=z, prompt_embeds=emb, text_encoder_hidden_states=tokens,
                                      do_classifier_free_guidance=False)
        return self.m["decoder"](x_t, t, encoder_hidden_states=hs, class_labels=add,
                                 attention_mask=F.pad(m, (4, 0), value=True)).sample


class RefSuperRes(_Ref):
    def forward(self, x_t, t, low_res):
        up = F.interpolate(low_res, size=x_t.shape[-2:], mode="bicubic", align_corners=False, antialias=True)
        net = self.m["super_res_last"] if bool((t == 0).all()) else self.m["super_res_first"]
        return net(torch.cat([x_t, up], 1), t).sample


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    modules = build(TinyKarlo(sr_widths=(8, 16)), seed=5)
    return modules, save(modules, tmp_path_factory.mktemp("karlo") / "src")


def test_command_line_converts_and_says_what_is_wrong(source, tmp_path, capsys):
    _, src = source
    run = [sys.executable, "-m", "unclip.convert", "karlo"]
    ok = subprocess.run(run + [str(src), str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "wrote" in ok.stdout, ok.stderr
    assert sorted(p.name for p in (tmp_path / "pipe").iterdir()) == ["clip", "decoder", "prior", "sr256"]
    from unclip.convert.__main__ import main  # the console command's function, in this process
    assert main(["karlo", str(src), str(tmp_path / "pipe")]) == 2
    assert "is not empty; pass overwrite=True (--overwrite)" in capsys.readouterr().err


def test_cascade_samples_match_the_diffusers_modules(source, tmp_path):
    from unclip.convert.karlo import convert_karlo

    modules, src = source
    pipe_dir = convert_karlo(src, tmp_path / "pipe")
    settings = {"prior": {"sampler": "ddpm", "steps": 6, "n_candidates": 1, "guidance_scale": 4.0},
                "decoder": {"sampler": "ddpm", "steps": 6, "guidance_scale": 5.0},
                "sr256": {"sampler": "ddim", "steps": 2}}
    prompts = ["a red star", "two green squares"]

    def run(pipe):
        finals = {}

        def keep(stage, i, n, x):
            if i == n - 1:
                finals[stage] = x.clone()
        result = pipe.generate(prompts, n=1, size=256, seed=11, settings=settings, callback=keep, output_type="pt")
        return finals, result.images

    ours = UnCLIPPipeline.load(pipe_dir, moderation=False)
    mine, mine_images = run(ours)
    ref = UnCLIPPipeline.load(pipe_dir, moderation=False)
    with torch.no_grad():
        hf = modules["text_encoder"](input_ids=ref.clip.tokenize([""]))
    empty = (hf.text_embeds, hf.last_hidden_state, ref.clip.tokenize([""]) != 0)
    for name, cls in (("prior", RefPrior), ("decoder", RefDecoder), ("sr256", RefSuperRes)):
        ref.stages[name].model = cls(ref.stages[name].model, modules, empty)
    theirs, _ = run(ref)
    assert set(mine) == {"prior", "decoder", "sr256"}
    err = float((mine["prior"] - theirs["prior"]).abs().max() / theirs["prior"].abs().max())
    assert err < 1e-4, f"prior: the samples differ by {err:.1e} of their scale"  # x0-predicting: well conditioned
    seeds = [r["sample_seed"] for r in ours.generate(prompts, n=1, size=64, seed=11, settings=settings).records]
    st = ours.settings.replace(settings)
    text = ours.encode_text(prompts)
    z_i = ours.stages["prior"].model.normalizer.denormalize(mine["prior"])  # one candidate: the prior's z_i
    low = mine["decoder"].clamp(-1, 1)
    with torch.no_grad():
        assert torch.equal(run_upsampler(ours.stages["sr256"], st.sr256, low, seeds, 2), mine["sr256"])
        for name in ("text_proj", "decoder", "super_res_first", "super_res_last"):  # the reference's (a plain dict)
            modules[name].double()
        ref.stages["decoder"].model.empty = tuple(e.double() if e.is_floating_point() else e for e in empty)
        decoded, upsampled = [], []
        for pipe in (ours, ref):  # the decoder and the upsampler again in float64, on the same inputs
            dec, sr = pipe.stages["decoder"], pipe.stages["sr256"]
            dec.model.double()
            sr.model.double()
            x_t = randn((2, 3, 64, 64), stage_generators(seeds, 1), None, torch.float32).double()
            decoded.append(run_decoder(dec, st.decoder, z_i.double(), text["dec_tokens"].double(), text["dec_mask"],
                                       seeds, x_t=x_t, text_emb=text["text_emb"].double()))
            gens = stage_generators(seeds, 2)
            x_t = randn((len(seeds), 3, 256, 256), gens, None, torch.float32).double()
            upsampled.append(sample_upsampler(sr.model, sr.diffusion, low.double(), settings=st.sr256,
                                              mean_type=sr.spec.mean_type, generator=gens, x_T=x_t))
    assert float((decoded[0] - decoded[1]).abs().max()) < 1e-5  # the "" encodings come from two float32 CLIPs
    assert float(decoded[0].std()) > 0.1  # a real sample, not a constant
    assert float((upsampled[0] - upsampled[1]).abs().max()) < 1e-6
    assert float(mine_images.std()) > 0.05  # real pictures, not a constant
