"""Shared helpers for the network tests: fake conditioning, weight perturbation, the overfit loop."""
from __future__ import annotations

import torch

from unclip.diffusion import Denoiser, GaussianDiffusion, make_betas


def perturb(model: torch.nn.Module, std: float = 0.05, seed: int = 3) -> torch.nn.Module:
    """Move every weight off its init so zero-initialised branches (UNet output conv) carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def prior_inputs(pr, b: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, w, length = pr.clip_embed_dim, pr.clip_token_width, pr.clip_context_length
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[:, length // 2:] = False
    return dict(x_t=torch.randn(b, d, generator=g), t=torch.randint(0, 1000, (b,), generator=g),
                text_emb=torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1),
                text_tokens=torch.randn(b, length, w, generator=g), text_mask=mask)


def decoder_inputs(pr, b: int = 2, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if pr.text_source == "clip":
        tokens = torch.randn(b, pr.clip_context_length, pr.clip_token_width, generator=g)
        mask = torch.ones(b, pr.clip_context_length, dtype=torch.bool)
        mask[:, pr.clip_context_length // 2:] = False
    else:
        tokens = torch.randint(1, 49408, (b, pr.text_context_length), generator=g)
        tokens[:, 8:] = 0  # end padding
        mask = None
    out = dict(x_t=torch.randn(b, 3, size, size, generator=g), t=torch.randint(0, 1000, (b,), generator=g),
               image_emb=torch.randn(b, pr.clip_embed_dim, generator=g), text_tokens=tokens)
    if mask is not None:
        out["text_mask"] = mask
    if pr.inpaint:
        out["mask"] = (torch.rand(b, 1, size, size, generator=g) > 0.5).float()
        out["masked_image"] = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    return out


def overfit(net: torch.nn.Module, loss_fn, diffusion: GaussianDiffusion, x0: torch.Tensor, cond: dict, *,
            mean_type: str, learned_variance: bool = False, steps: int = 100, lr: float = 3e-3,
            seed: int = 0) -> tuple[float, float]:
    """Adam on ONE fixed (x0, t, ε) batch with the real diffusion loss; returns (first, last) loss."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(100, 900, (x0.shape[0],), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = diffusion.q_sample(x0, t, noise)
    denoiser = Denoiser(net, diffusion.alphas_cumprod, mean_type=mean_type, learned_variance=learned_variance)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn(denoiser(x_t, t, **cond), x0, x_t, t, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], min(losses[-5:])


def cosine_diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(make_betas("cosine"))
