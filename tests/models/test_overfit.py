"""Each tiny network memorises one fixed (x0, t, ε) batch under its real diffusion loss: the
loss must fall by a large factor within a bounded number of Adam steps (a few seconds each)."""
import torch
import torch.nn.functional as F

from unclip.diffusion import GaussianDiffusion, HybridLoss, MSELoss, make_betas
from unclip.models import build, get_preset

from .helpers import cosine_diffusion, decoder_inputs, overfit, prior_inputs


def test_prior_overfits_with_x0_mse():
    torch.manual_seed(0)
    pr, diffusion = get_preset("prior", "tiny"), cosine_diffusion()
    model = pr.build()
    inp = prior_inputs(pr, b=4)
    x0 = model.normalizer.normalize(F.normalize(torch.randn(4, pr.clip_embed_dim), dim=-1))  # z_i × 17.2
    cond = {k: inp[k] for k in ("text_emb", "text_tokens", "text_mask")}
    first, last = overfit(model, MSELoss(diffusion, "x0"), diffusion, x0, cond, mean_type="x0", steps=40, lr=1e-3)
    print(f"prior x0-MSE {first:.4f} -> {last:.6f}")
    assert last < first / 50


def test_decoder_overfits_with_hybrid_loss():
    torch.manual_seed(0)
    pr, diffusion = get_preset("decoder", "tiny"), cosine_diffusion()
    model = pr.build()
    inp = decoder_inputs(pr, b=4, size=16)
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    cond = {k: inp[k] for k in ("image_emb", "text_tokens", "text_mask")}
    first, last = overfit(model, HybridLoss(diffusion), diffusion, x0, cond, mean_type="eps",
                          learned_variance=True, steps=50)
    print(f"decoder hybrid {first:.4f} -> {last:.6f}")
    assert last < first / 20


def test_upsamplers_overfit_with_eps_mse():
    for stage, schedule in (("sr256", "cosine"), ("sr1024", "linear")):
        torch.manual_seed(0)
        model, diffusion = build(stage, "tiny"), GaussianDiffusion(make_betas(schedule))
        x0 = torch.rand(4, 3, 16, 16) * 2 - 1
        cond = {"low_res": F.avg_pool2d(x0, 4)}
        first, last = overfit(model, MSELoss(diffusion), diffusion, x0, cond, mean_type="eps", steps=50)
        print(f"{stage} eps-MSE {first:.4f} -> {last:.6f}")
        assert last < first / 20
