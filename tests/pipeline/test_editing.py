"""Variations, interpolation, text diffs, edits (mask semantics, known pixels kept) and outpainting."""
import numpy as np
import pytest
from PIL import Image

from unclip.pipeline import slerp


def _source(size=64, seed=0):
    rng = np.random.default_rng(seed)
    base = np.zeros((size, size, 3), np.uint8)
    base[:] = (90, 120, 160)
    base[size // 4: size // 2, size // 4: size // 2] = (220, 30, 40)
    return Image.fromarray(np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8), "RGB")


def _mask(size=64, box=(16, 16, 48, 48)):
    """RGBA mask: opaque everywhere but a transparent box (the area to repaint)."""
    m = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), box)
    return m


def _arr(im):
    return np.asarray(im, dtype=np.int16)


@pytest.mark.parametrize("which", ["pipe", "inpaint_pipe"])
def test_edit_keeps_pixels_outside_the_mask(which, request):
    p = request.getfixturevalue(which)
    src, mask = _source(), _mask()
    r = p.edit(src, mask, "a red star", n=2, seed=0)
    keep = np.asarray(mask)[..., 3] > 0
    for im in r.images:
        out = _arr(im)
        assert np.array_equal(out[keep], _arr(src)[keep])  # exact: the seam blend lies in the hole
        assert np.abs(out[~keep] - _arr(src)[~keep]).mean() > 3  # the hole was repainted
    assert r.records[0]["method"] == ("inpainting decoder" if which == "inpaint_pipe" else "repaint")


def test_edit_uses_image_alpha_without_mask_and_upsamples(inpaint_pipe):
    src = _source().convert("RGBA")
    src.putalpha(_mask().getchannel("A"))
    r = inpaint_pipe.edit(src, None, "a red star", size=256, seed=1)
    out = _arr(r.images[0])
    assert out.shape == (256, 256, 3)
    keep = np.asarray(_mask(256, (64, 64, 192, 192)))[..., 3] > 0
    ref = _arr(src.convert("RGB").resize((256, 256), Image.BICUBIC))
    assert np.array_equal(out[keep], ref[keep])


def test_outpaint_keeps_original_and_extends(pipe):
    src = _source()
    r = pipe.outpaint(src, "a red star", right=32, bottom=16, seed=0)
    out = _arr(r.images[0])
    assert out.shape == (80, 96, 3)
    assert np.array_equal(out[:64, :64], _arr(src))
    assert r.records[0]["tiles"] >= 1
    sq = pipe.outpaint(src, "a red star", canvas=96, tile=64, overlap=0.5, seed=0)
    assert sq.images[0].size == (96, 96) and np.array_equal(_arr(sq.images[0])[16:80, 16:80], _arr(src))


def test_variations_eta_zero_reconstructs(pipe):
    src = _source()
    settings = {"decoder": {"steps": 30, "guidance_scale": 1.0}}
    rec = pipe.variations(src, n=1, eta=0.0, seed=0, settings=settings)
    var = pipe.variations(src, n=2, eta=1.0, seed=0, settings=settings)
    assert [im.size for im in var.images] == [(64, 64)] * 2
    err_rec = np.abs(_arr(rec.images[0]) - _arr(src)).mean()
    err_var = np.abs(_arr(var.images[0]) - _arr(src)).mean()
    assert err_rec < 0.5 * err_var, (err_rec, err_var)
    assert np.abs(_arr(var.images[0]) - _arr(var.images[1])).mean() > 3


@pytest.mark.parametrize("noise", ["inverted", "fixed"])
def test_interpolate_frames(pipe, noise):
    r = pipe.interpolate(_source(seed=0), _source(seed=1).rotate(90), steps=3, noise=noise, seed=0)
    assert len(r) == 3 and [rec["theta"] for rec in r.records] == [0.0, 0.5, 1.0]


def test_text_diff_frames(pipe):
    r = pipe.text_diff(_source(), "a red square", "a blue square", thetas=[0.0, 0.25, 0.5], size=256, seed=0)
    assert len(r) == 3 and r.images[0].size == (256, 256)
    assert r.records[2]["new_caption"] == "a blue square"


def test_slerp_endpoints_and_norm():
    import torch
    a, b = torch.nn.functional.normalize(torch.randn(2, 8), dim=1).chunk(2)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    assert torch.allclose(slerp(a, b, 0.3).norm(), torch.tensor(1.0), atol=1e-5)
