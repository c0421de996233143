"""The diffusion prior (§2.2): shapes, CFG null path, normaliser, candidate selection."""
import numpy as np
import pytest
import torch

from unclip.diffusion import GaussianDiffusion, make_betas
from unclip.models import EmbeddingNormalizer, build, get_preset, prior_analytic_gamma, sample_drop_mask, sample_prior
from unclip.models.sampling import StageSettings

from .helpers import prior_inputs


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return build("prior", "tiny").eval()


def test_prior_shape_and_shorter_captions(prior):
    inp = prior_inputs(get_preset("prior", "tiny"))
    assert prior(**inp).shape == (3, 128)
    short = {**inp, "text_tokens": inp["text_tokens"][:, :10], "text_mask": inp["text_mask"][:, :10]}
    assert prior(**short).shape == (3, 128)
    with pytest.raises(ValueError, match="text_tokens"):
        prior(**{**inp, "text_tokens": torch.randn(3, 33, 128)})


def test_dropped_text_removes_all_text_conditioning(prior):
    pr = get_preset("prior", "tiny")
    a, b = prior_inputs(pr, seed=0), prior_inputs(pr, seed=1)
    b.update(x_t=a["x_t"], t=a["t"])  # same noised z_i and timestep, different caption
    b["text_mask"][:, 3:] = False  # different padding pattern too
    drop = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(prior(**a, drop_text=drop), prior(**b, drop_text=drop))
        assert not torch.allclose(prior(**a), prior(**b))
        # a mixed batch: dropped rows are the null output, kept rows their conditional output
        mixed = torch.tensor([True, False, True])
        out = prior(**a, drop_text=mixed)
        assert torch.allclose(out[1], prior(**a)[1], atol=1e-6)
        assert torch.allclose(out[0], prior(**b, drop_text=drop)[0], atol=1e-6)
        # the noised z_i is never dropped
        assert not torch.allclose(prior(**a, drop_text=drop), prior(**{**a, "x_t": b["x_t"] + 1}, drop_text=drop))


def test_drop_mask_rate():
    g = torch.Generator().manual_seed(0)
    m = sample_drop_mask(20000, 0.1, g)
    assert m.dtype == torch.bool and abs(m.float().mean().item() - 0.1) < 0.01


def test_normalizer_fixed_scale_and_stats_round_trip():
    z = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    n = EmbeddingNormalizer(8, 17.2)
    assert torch.allclose(n.normalize(z), 17.2 * z)
    n.set_stats(z.mean(0), z.std(0))
    assert torch.allclose(n.normalize(z).mean(0), torch.zeros(8), atol=1e-6)
    assert torch.allclose(n.denormalize(n.normalize(z)), z, atol=1e-6)
    with pytest.raises(ValueError):
        n.set_stats(torch.zeros(8), torch.zeros(8))

    class FakeClip:  # FrozenCLIP's stats buffers
        has_stats, image_emb_mean, image_emb_std = torch.tensor(True), torch.ones(8), torch.full((8,), 2.0)

    n.use_clip_stats(FakeClip())
    assert torch.allclose(n.normalize(torch.ones(1, 8)), torch.zeros(1, 8))
    FakeClip.has_stats = torch.tensor(False)
    with pytest.raises(ValueError, match="compute_stats"):
        n.use_clip_stats(FakeClip())


def test_sample_prior_keeps_best_candidate_and_is_batch_invariant(prior):
    pr = get_preset("prior", "tiny")
    inp = prior_inputs(pr, b=2)
    diffusion = GaussianDiffusion(make_betas("cosine"))
    cond = (inp["text_emb"], inp["text_tokens"], inp["text_mask"])
    picked = []
    kw = dict(settings=StageSettings("ddim", 4, guidance_scale=3.0, n_candidates=3), mean_type="x0")
    for seeds in ([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        picked.append(sample_prior(prior, diffusion, *cond, generator=gens, **kw))
    # all candidates of caption 0, one at a time: the pick must be the argmax of z·z_t
    gens = [torch.Generator().manual_seed(s) for s in [0, 1, 2]]
    one = [sample_prior(prior, diffusion, *(c[:1] for c in cond), generator=[g],
                       **{**kw, "settings": StageSettings("ddim", 4, guidance_scale=3.0)})
           for g in gens]
    scores = torch.stack([(z[0] * inp["text_emb"][0]).sum() for z in one])
    assert torch.allclose(picked[0][0], one[int(scores.argmax())][0], atol=1e-5)
    assert picked[0].shape == (2, 128) and not torch.allclose(picked[0], picked[1])


def test_sample_prior_analytic_variance_needs_gamma(prior):
    inp = prior_inputs(get_preset("prior", "tiny"), b=2)
    diffusion = GaussianDiffusion(make_betas("cosine"))
    cond = (inp["text_emb"], inp["text_tokens"], inp["text_mask"])
    analytic = StageSettings("ddpm", 4, variance="analytic", n_candidates=2)
    with pytest.raises(ValueError, match="gamma"):
        sample_prior(prior, diffusion, *cond, settings=analytic, mean_type="x0")
    gamma = prior_analytic_gamma(prior, diffusion, torch.nn.functional.normalize(torch.randn(2, 128), dim=-1),
                                 *cond, steps=4, mean_type="x0", generator=torch.Generator().manual_seed(0))
    assert gamma.shape == (4,) and np.all(gamma > 0)
    z = sample_prior(prior, diffusion, *cond, settings=analytic, mean_type="x0", gamma=gamma,
                     generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 128) and torch.isfinite(z).all()
