"""The conditioning-gain instrument against closed forms, and the oracle match rates it reports."""
import pytest
import torch

from unclip.data import shapes as S
from unclip.diffusion import GaussianDiffusion, Prediction, make_betas
from unclip.evals.conditioning import caption_match_rates, conditioning_gain, decoder_probes, derangement, flatten_gain


def _diffusion():
    return GaussianDiffusion(make_betas("cosine", 1000))


def test_derangement_moves_every_index():
    for n in (2, 3, 17, 64):
        perm = derangement(n, torch.Generator().manual_seed(n))
        assert sorted(perm.tolist()) == list(range(n))
        assert (perm != torch.arange(n)).all()
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, torch.Generator())


def _colour_images(b=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(b, 3, generator=g) * 2 - 1  # [B, 3]
    return colours[:, :, None, None].expand(b, 3, size, size).contiguous(), colours


def test_gain_is_one_for_a_denoiser_that_ignores_its_condition():
    x0, colours = _colour_images()
    mean = x0.mean(0, keepdim=True)

    def blind(x_t, t, image_emb, **_):  # the best unconditional guess: the data mean
        return Prediction(x0=mean.expand_as(x_t), eps=torch.zeros_like(x_t))

    perm = derangement(8, torch.Generator().manual_seed(0))
    probes = {"image": ({"image_emb": colours}, {"image_emb": colours[perm]})}
    out = conditioning_gain(blind, _diffusion(), x0, probes, timesteps=[500, 900], generator=torch.Generator())
    for t in (500, 900):
        assert out["image"][t]["gain"] == pytest.approx(1.0)
        assert out["image"][t]["err"] > 0


def test_gain_matches_the_closed_form_for_an_exact_conditional_denoiser():
    """x̂0 = (1 − λ)·c + λ·x̄ with c the conditioning colour: right error λ²‖c − x̄‖², shuffled error
    ‖(1 − λ)(c_π − c) + λ(x̄ − c)‖² — computed here by hand and compared."""
    x0, colours = _colour_images(b=6)
    mean = x0.mean(0, keepdim=True)
    lam = 0.3

    def half(x_t, t, image_emb, **_):
        return Prediction(x0=(1 - lam) * image_emb[:, :, None, None].expand_as(x_t) + lam * mean,
                          eps=torch.zeros_like(x_t))

    perm = derangement(6, torch.Generator().manual_seed(1))
    region = torch.zeros(6, 1, 8, 8)
    region[:, :, 2:5, 2:5] = 1.0
    out = conditioning_gain(half, _diffusion(), x0, {"image": ({"image_emb": colours}, {"image_emb": colours[perm]})},
                            timesteps=[800], region=region, generator=torch.Generator())
    c, m = colours, mean[:, :, 0, 0]
    right = ((lam * (m - c)) ** 2).mean()
    wrong = (((1 - lam) * (c[perm] - c) + lam * (m - c)) ** 2).mean()
    row = out["image"][800]
    assert row["err"] == pytest.approx(right.item(), rel=1e-5)
    assert row["err_shuffled"] == pytest.approx(wrong.item(), rel=1e-5)
    assert row["gain"] == pytest.approx((wrong / right).item(), rel=1e-5)
    assert row["gain_region"] == pytest.approx(row["gain"], rel=1e-5)  # constant images: same ratio inside
    flat = flatten_gain(out)
    assert set(flat) == {"gain/image/t800", "gain_region/image/t800"}


def test_region_gain_counts_only_region_pixels():
    """The denoiser is exact outside the region and uses the condition only inside it: the whole-image gain is
    diluted by the exact background, the region gain is not."""
    b, size = 4, 8
    x0 = torch.zeros(b, 3, size, size)
    region = torch.zeros(b, 1, size, size)
    region[:, :, :2, :2] = 1.0
    cond = torch.tensor([[1.0], [-1.0], [0.5], [-0.5]])
    x0 = x0 + region * cond[:, :, None, None]

    def inside(x_t, t, image_emb, **_):
        return Prediction(x0=region * 0.9 * image_emb[:, :, None, None], eps=torch.zeros_like(x_t))

    perm = torch.tensor([1, 2, 3, 0])
    out = conditioning_gain(inside, _diffusion(), x0, {"image": ({"image_emb": cond}, {"image_emb": cond[perm]})},
                            timesteps=[500], region=region, generator=torch.Generator())
    row = out["image"][500]
    inside_right = ((0.1 * cond) ** 2).mean()
    inside_wrong = ((0.9 * cond[perm] - cond) ** 2).mean()
    assert row["gain_region"] == pytest.approx((inside_wrong / inside_right).item(), rel=1e-5)
    assert row["gain"] == pytest.approx(row["gain_region"], rel=1e-5)  # zero error outside on both sides
    assert row["err_region"] == pytest.approx(row["err"] * size * size / 4, rel=1e-5)


def test_bad_inputs_fail_clearly():
    x0, colours = _colour_images(b=4)

    def d(x_t, t, **_):
        return Prediction(x0=x_t, eps=x_t)

    probes = {"image": ({"image_emb": colours}, {"image_emb": colours})}
    with pytest.raises(ValueError, match="region must be"):
        conditioning_gain(d, _diffusion(), x0, probes, region=torch.ones(4, 3, 8, 8), generator=torch.Generator())
    with pytest.raises(ValueError, match="region is empty"):
        conditioning_gain(d, _diffusion(), x0, probes, region=torch.zeros(4, 1, 8, 8), generator=torch.Generator())
    with pytest.raises(ValueError, match="timesteps"):
        conditioning_gain(d, _diffusion(), x0, probes, timesteps=[1000], generator=torch.Generator())


def test_decoder_probes_drop_the_other_condition():
    z, tokens, mask = torch.randn(3, 4), torch.randint(1, 9, (3, 5)), torch.ones(3, 5, dtype=torch.bool)
    perm = torch.tensor([2, 0, 1])
    probes = decoder_probes(z, tokens, mask, perm)
    (ri, wi), (rt, wt) = probes["image"], probes["text"]
    assert ri["drop_text"].all() and not ri["drop_image"].any() and torch.equal(wi["image_emb"], z[perm])
    assert rt["drop_image"].all() and not rt["drop_text"].any() and torch.equal(wt["text_tokens"], tokens[perm])
    assert torch.equal(rt["image_emb"], wt["image_emb"])
    assert set(decoder_probes(z, None, None, perm)) == {"image"}


def test_object_mask_covers_exactly_the_rendered_object():
    scene = S.sample_scene(3, "train")
    img = torch.tensor(list(S.render(scene, 64).getdata()), dtype=torch.float32).view(64, 64, 3)
    m = torch.from_numpy(S.object_mask(scene, 64))
    assert m.shape == (64, 64) and 0 <= m.min() and m.max() <= 1
    radius_px = sum(S.SIZES[o.size] for o in scene.objects) * 64
    assert 0.5 * radius_px ** 2 < m.sum() < 4 * radius_px ** 2 * len(scene.objects)
    for o in scene.objects:  # every object's centre pixel is covered, and shows the object's colour there
        x, y = int(o.center[0] * 64), int(o.center[1] * 64)
        assert m[y, x] == 1.0
        assert torch.allclose(img[y, x], torch.tensor(o.rgb, dtype=torch.float32), atol=1)
    assert m[0, 0] == 0.0 or any(o.position == "top left" for o in scene.objects)


def test_caption_match_rates_read_renders_as_right_and_swapped_scenes_as_wrong():
    ds = S.ShapesDataset("val", length=400, seed=5)
    scenes = [s for s in (ds.scene(i) for i in range(400)) if len(s.objects) == 1][:12]
    captions = [S.caption(s, 0) for s in scenes]
    images = [S.render(s, 64) for s in scenes]
    right = caption_match_rates(images, scenes, captions)
    assert right["match/full"] == 1.0 and right["match/color"] == 1.0 and right["match/position"] == 1.0
    wrong = caption_match_rates(images[1:] + images[:1], scenes, captions)
    assert wrong["match/full"] < 0.5
    with pytest.raises(ValueError, match="equally many"):
        caption_match_rates(images[:2], scenes, captions)
