"""The 64-px decoder (§2.1): both text sources, CFG null paths, inpainting channels, masks, sampling."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unclip.diffusion import GaussianDiffusion, make_betas
from unclip.models import MASK_KINDS, get_preset, random_inpaint_mask, sample_decoder
from unclip.models.sampling import StageSettings

from .helpers import decoder_inputs, perturb


def tiny(**overrides):
    torch.manual_seed(0)
    pr = get_preset("decoder", "tiny", **overrides)
    return pr, perturb(pr.build()).eval()


@pytest.mark.parametrize("overrides", [{}, {"text_source": "ids", "text_context_length": 16}, {"inpaint": True},
                                       {"learned_sigma": False, "text_layers": 0}])
def test_decoder_shapes(overrides):
    pr, model = tiny(**overrides)
    inp = decoder_inputs(pr, size=16)
    with torch.no_grad():
        out = model(**inp)
        assert out.shape == (2, 6 if pr.learned_sigma else 3, 16, 16) and torch.isfinite(out).all()
        assert model(**{**inp, "x_t": torch.randn(2, 3, 32, 32), **_inpaint(pr, 32)}).shape[-1] == 32


def _inpaint(pr, size):
    return dict(mask=torch.ones(2, 1, size, size), masked_image=torch.zeros(2, 3, size, size)) if pr.inpaint else {}


@pytest.mark.parametrize("source", ["clip", "ids"])
def test_dropped_caption_removes_text(source):
    pr, model = tiny(text_source=source, text_context_length=16)
    a, b = decoder_inputs(pr, seed=0), decoder_inputs(pr, seed=1)
    b.update(x_t=a["x_t"], t=a["t"], image_emb=a["image_emb"])  # only the caption differs
    if "text_mask" in b:
        b["text_mask"][:, 2:] = False
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(**a, drop_text=drop), model(**b, drop_text=drop))
        assert not torch.allclose(model(**a), model(**b))
        no_caption = {k: v for k, v in a.items() if k not in ("text_tokens", "text_mask")}
        assert torch.allclose(model(**no_caption), model(**a, drop_text=drop), atol=1e-6)


def test_dropped_image_embedding_removes_it():
    pr, model = tiny()
    a = decoder_inputs(pr, seed=0)
    b = {**a, "image_emb": torch.randn_like(a["image_emb"])}
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(**a, drop_image=drop), model(**b, drop_image=drop))
        assert not torch.allclose(model(**a), model(**b))
        # dropping both is the fully unconditional model: independent of every condition
        both = dict(drop_image=drop, drop_text=drop)
        c = {**decoder_inputs(pr, seed=2), "x_t": a["x_t"], "t": a["t"]}
        assert torch.equal(model(**a, **both), model(**c, **both))


def test_inpainting_channels_are_used():
    pr, model = tiny(inpaint=True)
    inp = decoder_inputs(pr)
    with torch.no_grad():
        base = model(**inp)
        assert not torch.allclose(base, model(**{**inp, "mask": 1 - inp["mask"]}))
        assert not torch.allclose(base, model(**{**inp, "masked_image": -inp["masked_image"]}))
        # pixels outside the mask are hidden from the network
        hidden = inp["masked_image"] + 5 * (1 - inp["mask"])
        assert torch.allclose(base, model(**{**inp, "masked_image": hidden}))
    with pytest.raises(ValueError, match="masked_image"):
        model(**{k: v for k, v in inp.items() if k != "mask"})


def test_random_inpaint_masks():
    g = torch.Generator().manual_seed(0)
    for kind in MASK_KINDS:
        m = random_inpaint_mask(6, 32, 24, kinds=[kind], generator=g)
        assert m.shape == (6, 1, 32, 24) and set(m.unique().tolist()) <= {0.0, 1.0}
        holes = 1 - m.flatten(1).mean(1)
        assert ((holes > 0) & (holes < 1)).all()
    assert not torch.equal(random_inpaint_mask(4, 32, generator=g), random_inpaint_mask(4, 32, generator=g))
    with pytest.raises(ValueError, match="kinds"):
        random_inpaint_mask(1, 8, kinds=["circle"])


def test_sample_decoder_guided_and_inpainting_keeps_known_pixels():
    pr, model = tiny(inpaint=True)
    inp = decoder_inputs(pr)
    diffusion = GaussianDiffusion(make_betas("cosine", 100))
    out = sample_decoder(model, diffusion, inp["image_emb"], inp["text_tokens"], inp["text_mask"],
                         settings=StageSettings("ddpm", 3, guidance_scale=3.0), mean_type="eps",
                         known=inp["masked_image"], keep=inp["mask"], generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16)
    known = inp["mask"].expand_as(out).bool()
    assert torch.allclose(out[known], inp["masked_image"][known], atol=1e-5)


def test_unknown_text_source_is_named():
    with pytest.raises(ValueError, match="source='bert'"):
        get_preset("decoder", "tiny", text_source="bert").build()


class _ExactV(torch.nn.Module):
    """The optimal v-predictor for a single target image: v = √ᾱ·ε − √(1−ᾱ)·x* with ε read off x_t.
    One DDIM step at ᾱ ≈ 0 returns its pred_x0, which is x* only when v is read as v."""
    learned_sigma, inpaint, image_size = False, False, 8

    def __init__(self, target: torch.Tensor, alphas_cumprod):
        super().__init__()
        self.target, self.abar = target, torch.as_tensor(alphas_cumprod, dtype=torch.float64)

    def forward(self, x_t, t, image_emb, **_):
        a = self.abar[t].float().view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * self.target) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * self.target


def test_sample_decoder_reads_the_prediction_as_its_mean_type():
    diffusion = GaussianDiffusion(make_betas("cosine", 1))  # one step, ᾱ ≈ 0.001
    target = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    net = _ExactV(target, diffusion.alphas_cumprod)
    one_step = StageSettings("ddim", 1)
    out = sample_decoder(net, diffusion, torch.zeros(2, 4), settings=one_step, mean_type="v",
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1), atol=1e-4, rtol=0)
    wrong = sample_decoder(net, diffusion, torch.zeros(2, 4), settings=one_step,  # read as ε
                           mean_type="eps", generator=torch.Generator().manual_seed(0))
    assert (wrong - target).abs().mean() > 0.1


def test_patch_stem_decoder_attends_at_the_pixel_resolutions_it_names():
    from unclip.nn import ImageAttentionBlock
    pr, model = tiny(patch_size=2, channel_mult=(1, 2, 2), attention_resolutions=(16, 8))
    sizes = set()
    for m in model.modules():
        if isinstance(m, ImageAttentionBlock):
            m.register_forward_hook(lambda mod, i, o: sizes.add(i[0].shape[-1]))
    inp = decoder_inputs(pr, size=64)
    with torch.no_grad():
        out = model(**inp)
    assert out.shape == (2, 6, 64, 64) and torch.isfinite(out).all()
    assert sizes == {16, 8}  # feature maps of 16 and 8 px for a 64-px image, as with patch_size=1


class _CastCounter(TorchDispatchMode):
    """Counts float32 -> bfloat16 copies (autocast's casts) made while active."""

    def __init__(self):
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].dtype == torch.float32 \
                and kwargs.get("dtype") == torch.bfloat16:
            self.casts += 1
        return func(*args, **kwargs)


def test_bf16_sampling_casts_each_weight_once_per_call_with_the_same_images():
    """Under bf16 the weights' bf16 copies are made once per sampling call, not at every step
    (weight_casts_kept); autocast only keeps casts of weights that require grad, so freezing the weights is
    the per-step arm. Both arms must give the same bytes."""
    pr, model = tiny()
    perturb(model)
    inp = decoder_inputs(pr)
    diffusion = GaussianDiffusion(make_betas("cosine", 100))
    out, per_step = {}, {}
    for arm in ("kept", "per step"):
        model.requires_grad_(arm == "kept")
        counts = []
        for steps in (2, 6):
            with _CastCounter() as counter, torch.no_grad():
                out[arm, steps] = sample_decoder(model, diffusion, inp["image_emb"], inp["text_tokens"],
                                                 inp["text_mask"], settings=StageSettings("ddim", steps),
                                                 mean_type="eps", generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.bfloat16)
            counts.append(counter.casts)
        per_step[arm] = (counts[1] - counts[0]) / 4
    n_weights = sum(1 for p in model.parameters() if p.ndim >= 2)
    assert per_step["per step"] >= n_weights  # every matmul / conv weight re-cast at every step
    assert per_step["kept"] < per_step["per step"] - n_weights / 2  # ... but not when kept
    for steps in (2, 6):
        assert torch.equal(out["kept", steps], out["per step", steps])
