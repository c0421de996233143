"""Karlo -> unclip: our converted networks give the diffusers modules' outputs on the same inputs (fp32), for
several widths / depths / heads, and one sampling run through the whole cascade gives the same images."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unclip.clip import FrozenCLIP
from unclip.convert.components import ConversionError
from unclip.convert.karlo import convert_karlo
from unclip.models import load_stage

from .karlo_tiny import TinyKarlo, build, save

CONFIGS = {
    "karlo-like": TinyKarlo(),
    "wider-deeper": TinyKarlo(clip_dim=48, clip_heads=3, prior_heads=4, prior_head_dim=8, prior_layers=3,
                              decoder_widths=(16, 32, 48), decoder_blocks=2, decoder_head_dim=8,
                              decoder_attention=(False, True, True), cross_dim=40, sr_widths=(16, 16, 32), sr_blocks=2,
                              learned_sigma=False),
}
CAPTIONS = ["a red star at the top left", "two blue circles", ""]


def close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> float:
    """max |ours − ref| relative to the reference's scale; asserts it is within ``rel``."""
    assert ours.shape == ref.shape
    err = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    assert err <= rel, f"max abs difference is {err:.2e} of the output scale (allowed {rel:.0e})"
    return err


@pytest.fixture(scope="module", params=list(CONFIGS))
def karlo(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"karlo-{request.param}")
    modules = build(CONFIGS[request.param])
    save(modules, root / "src")
    pipe = convert_karlo(root / "src", root / "pipe")
    return modules, pipe


def _text(modules, clip: FrozenCLIP, captions):
    """Our CLIP's encoding and the transformers text encoder's, on the same token ids."""
    emb, tokens, mask = clip.encode_text(captions)
    ids = clip.tokenize(captions)
    with torch.no_grad():
        ref = modules["text_encoder"](input_ids=ids)
    return (emb, tokens, mask), (ref.text_embeds, ref.last_hidden_state, ids != 0)


def test_clip_towers_match(karlo):
    modules, pipe = karlo
    clip = FrozenCLIP.load(pipe / "clip")
    (emb, tokens, mask), (ref_emb, ref_tokens, ref_mask) = _text(modules, clip, CAPTIONS)
    assert torch.equal(mask.cpu(), ref_mask)
    close(emb, ref_emb)
    close(tokens[mask], ref_tokens[ref_mask])  # real tokens (padding differs: open_clip pads with 0, HF with EOT)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        close(clip.model.encode_image(pixels), modules["image_encoder"](pixel_values=pixels).image_embeds)


def _stage(karlo, name):
    """The diffusers modules, our CLIP and converted ``name`` network, and two captions encoded by both CLIPs."""
    modules, pipe = karlo
    clip = FrozenCLIP.load(pipe / "clip")
    _, net = load_stage(pipe / name)
    return modules, clip, net, _text(modules, clip, CAPTIONS[:2])


def test_prior_matches(karlo):
    modules, clip, prior, ((emb, tokens, mask), (ref_emb, ref_tokens, _)) = _stage(karlo, "prior")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, clip.embed_dim, generator=g)
    t = torch.tensor([999, 17])
    ref_prior = modules["prior"]
    with torch.no_grad():
        ours = prior(x, t, emb, tokens, mask)
        ref = ref_prior(x, t, proj_embedding=ref_emb, encoder_hidden_states=ref_tokens,
                        attention_mask=mask).predicted_image_embedding
        close(ours, ref)
        # guidance's unconditional half: ours drops the caption; Karlo runs the prior on ""
        (e0, t0, m0), (r0, h0, _) = _text(modules, clip, ["", ""])
        dropped = prior(x, t, emb, tokens, mask, drop_text=torch.ones(2, dtype=torch.bool))
        close(dropped, ref_prior(x, t, proj_embedding=r0, encoder_hidden_states=h0,
                                 attention_mask=m0).predicted_image_embedding)
        close(prior.normalizer.denormalize(x), ref_prior.post_process_latents(x))


def _decoder_ref(modules, x, t, z, zt, hid, mask, uncond=None):
    """Karlo's decoder call (text_proj then the UNet with the 4 extra tokens' mask), optionally its CFG half."""
    text_proj, unet = modules["text_proj"], modules["decoder"]
    if uncond is None:
        hs, add = text_proj(image_embeddings=z, prompt_embeds=zt, text_encoder_hidden_states=hid,
                            do_classifier_free_guidance=False)
    else:  # text_proj's CFG branch: rows [0, B) are the unconditional ones (learned z_i null, "" caption)
        zt0, hid0, mask0 = uncond
        hs, add = text_proj(image_embeddings=z, prompt_embeds=torch.cat([zt0, zt]),
                            text_encoder_hidden_states=torch.cat([hid0, hid]), do_classifier_free_guidance=True)
        b = z.shape[0]
        hs, add, mask = hs[:b], add[:b], mask0
    full_mask = F.pad(mask, (4, 0), value=True)
    return unet(sample=x, timestep=t, encoder_hidden_states=hs, class_labels=add, attention_mask=full_mask).sample


def test_decoder_matches(karlo):
    modules, clip, decoder, ((emb, tokens, mask), (ref_emb, ref_tokens, _)) = _stage(karlo, "decoder")
    g = torch.Generator().manual_seed(2)
    s = decoder.image_size
    x = torch.randn(2, 3, s, s, generator=g)
    z = F.normalize(torch.randn(2, clip.embed_dim, generator=g), dim=-1)
    t = torch.tensor([999, 3])
    with torch.no_grad():
        ours = decoder(x, t, z, tokens, mask, text_emb=emb)
        close(ours, _decoder_ref(modules, x, t, z, ref_emb, ref_tokens, mask))
        (_, _, m0), (r0, h0, _) = _text(modules, clip, ["", ""])
        both = torch.ones(2, dtype=torch.bool)
        dropped = decoder(x, t, z, tokens, mask, drop_image=both, drop_text=both, text_emb=emb)
        close(dropped, _decoder_ref(modules, x, t, z, ref_emb, ref_tokens, mask, uncond=(r0, h0, m0)))


def test_super_resolution_matches_both_networks(karlo):
    modules, pipe = karlo
    spec, sr = load_stage(pipe / "sr256")
    g = torch.Generator().manual_seed(3)
    low = torch.rand(3, 3, sr.low_res_size, sr.low_res_size, generator=g) * 2 - 1
    x = torch.randn(3, 3, sr.image_size, sr.image_size, generator=g)
    t = torch.tensor([500, 0, 40])  # the row at t = 0 is the last step's: super_res_last
    up = F.interpolate(low, size=(sr.image_size,) * 2, mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        ours = sr(x, t, low)
        first = modules["super_res_first"](torch.cat([x, up], 1), t).sample
        last = modules["super_res_last"](torch.cat([x, up], 1), t).sample
    close(ours[[0, 2]], first[[0, 2]])
    close(ours[1:2], last[1:2])
    assert (first[1] - last[1]).abs().max() > 1e-3  # the two networks differ, so the choice was tested
    assert spec.mean_type == "eps" and spec.schedule == "cosine"


def test_errors_name_what_is_missing(karlo, tmp_path):
    modules, _ = karlo
    src = save(modules, tmp_path / "no-vision", image_encoder=False)
    with pytest.raises(ConversionError, match="has no image_encoder/.*ViT-L-14.pt"):
        convert_karlo(src, tmp_path / "out")
    with pytest.raises(ConversionError, match=r"not a Karlo .* lacks \['text_encoder', 'prior'"):
        convert_karlo(tmp_path, tmp_path / "out2")
