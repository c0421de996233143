"""Choose the ``fast`` preset by measurement: sampler error vs steps with a Bayes-optimal denoiser.

No trained unCLIP weights exist here, so the samplers are compared where the exact answer is known:
data x0 ~ a mixture of K well-separated isotropic Gaussians in d dims (sharp modes, like images),
its closed-form E[x0 | x_t] as the denoiser, the cosine (decoder/prior/sr256) or linear (sr1024)
schedule of 1000 steps. Metric: sliced Wasserstein-1 between N samples and N exact draws (averaged
over random projections), beside the paper's setting (ancestral DDPM, 250 steps) as the reference.
Run: ``python -m sample.measure_samplers``.
"""
from __future__ import annotations

import numpy as np
import torch

from unclip.diffusion import GaussianDiffusion, Prediction, make_betas, sample_ddim, sample_ddpm, sample_dpmpp_2m


class MixtureDenoiser:
    def __init__(self, means: torch.Tensor, std: float, acp: np.ndarray):
        self.means, self.std, self.acp = means, std, acp

    def __call__(self, x_t, t, **_):
        a = torch.from_numpy(np.sqrt(self.acp[t.numpy()]))[:, None].to(x_t)
        s = torch.sqrt(1 - a**2)
        var = a**2 * self.std**2 + s**2  # [B, 1]
        diff = x_t[:, None] - a[:, None] * self.means  # [B, K, d]
        resp = torch.softmax(-0.5 * (diff**2).sum(-1) / var, dim=1)  # [B, K]
        x0 = (resp[..., None] * (self.means + (a * self.std**2 / var)[:, None] * diff)).sum(1)
        return Prediction(x0=x0, eps=(x_t - a * x0) / s)


def sliced_w1(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, n_proj: int = 64) -> float:
    proj = torch.nn.functional.normalize(torch.randn(x.shape[1], n_proj, generator=g, dtype=x.dtype), dim=0)
    return float((torch.sort(x @ proj, 0)[0] - torch.sort(y @ proj, 0)[0]).abs().mean())


def main(d: int = 16, k: int = 8, std: float = 0.05, n: int = 4000) -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.rand(k, d, generator=g, dtype=torch.float64) * 2 - 1
    exact = means[torch.randint(0, k, (n,), generator=g)] + std * torch.randn(n, d, generator=g, dtype=torch.float64)
    for schedule in ("cosine", "linear"):
        base = GaussianDiffusion(make_betas(schedule, 1000))
        den = MixtureDenoiser(means, std, base.alphas_cumprod)
        runs = {"ddpm": lambda c, x, den=den: sample_ddpm(den, x, c, variance="small", generator=g),
                "ddim": lambda c, x, den=den: sample_ddim(den, x, c, generator=g),
                "dpmpp_2m": lambda c, x, den=den: sample_dpmpp_2m(den, x, c)}
        print(f"schedule={schedule}  (sliced W1 to exact samples; lower is better)")
        for steps in (7, 10, 15, 25, 64, 250):
            row = []
            for name, fn in runs.items():
                x_t = torch.randn(n, d, generator=g, dtype=torch.float64)
                row.append(f"{name}={sliced_w1(fn(base.respace(steps), x_t), exact, g):.4f}")
            print(f"  steps={steps:4d}  " + "  ".join(row))


if __name__ == "__main__":
    main()
