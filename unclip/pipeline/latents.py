"""Image manipulations through the bipartite latent (z_i, x_T) (Ramesh et al. 2022, §3):
variations (§3.1), interpolations (§3.2) and text diffs (§3.3). x_T is the image's DDIM-inverted
decoder noise; decoding with DDIM η = 0 from (z_i, x_T) reconstructs the image, η > 0 varies it."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from unclip.diffusion import randn
from unclip.errors import InputError
from unclip.models import UPSAMPLER_SIZES

from .images import check_image, to_tensor
from .result import check_output_type
from .settings import resolve_settings
from .stages import run_decoder, run_invert, stage_generators

if TYPE_CHECKING:  # the functions here are UnCLIPPipeline methods (bound in core.py)
    from .core import UnCLIPPipeline


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (any shape [B, ...]); lerp when nearly parallel."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (F.normalize(fa, dim=1) * F.normalize(fb, dim=1)).sum(1).clamp(-1, 1)  # [B]
    omega = torch.arccos(cos)[:, None]
    so = torch.sin(omega)
    small = so.abs() < 1e-6
    wa = torch.where(small, 1 - t, torch.sin((1 - t) * omega) / so.clamp_min(1e-12))
    wb = torch.where(small, torch.full_like(so, t), torch.sin(t * omega) / so.clamp_min(1e-12))
    return (wa * fa + wb * fb).view_as(a).to(a.dtype)


def _upload(pipe: UnCLIPPipeline, image, param: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """(64-px tensor [1, 3, S, S], z_i [1, D]) of an uploaded image; moderation applies to it."""
    image = check_image(image, param)
    z = pipe.clip.encode_image(image.convert("RGB"))
    if pipe.moderator is not None:
        pipe.moderator.require_images_ok(z)
    return to_tensor(image, pipe.stages["decoder"].model.image_size).to(pipe.device), z


def _invert(pipe: UnCLIPPipeline, x0: torch.Tensor, z: torch.Tensor, st, callback, bar=None) -> torch.Tensor:
    return run_invert(pipe.stages["decoder"], st, x0, z, callback=pipe._stage_cb("invert", callback, bar))


def _decode_latents(pipe: UnCLIPPipeline, z: torch.Tensor, x_t: torch.Tensor, seeds, size, st, eta: float, callback,
                    bars):
    dec_st = dataclasses.replace(st.decoder, sampler="ddim", eta=eta)
    outs = []
    for lo in range(0, z.shape[0], st.batch_size):
        sl = slice(lo, lo + st.batch_size)
        x = run_decoder(pipe.stages["decoder"], dec_st, z[sl], None, None, seeds[sl], x_t=x_t[sl], eta=eta,
                        callback=pipe._stage_cb("decoder", callback, bars.get("decoder")))
        outs.append(pipe._upsample(x, size, seeds[sl], st, callback, bars))
    return torch.cat(outs)


@torch.no_grad()
def variations(pipe: UnCLIPPipeline, image, n: int = 1, size: int = 64, seed: int | None = None, eta: float = 1.0,
               settings=None, callback=None, progress: bool = False,
               sample_seeds=None, output_type: str = "pil"):
    """§3.1: decode the image's (z_i, DDIM-inverted x_T) with DDIM η (> 0 varies; 0 reconstructs)."""
    check_output_type(output_type)
    n, size = pipe._check_n(n), pipe._check_size(size)
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise InputError("eta", f"eta={eta!r}: expected a number in [0, 1]")
    st = resolve_settings(settings, pipe.settings)
    x0, z = _upload(pipe, image)
    seed, seeds = pipe._seeds(seed, n, sample_seeds)
    bars = pipe._bars(progress, ["invert", "decoder"] + [nm for nm, s in UPSAMPLER_SIZES.items()
                                                          if s <= size], 1)
    x_t = _invert(pipe, x0, z, dataclasses.replace(st.decoder, sampler="ddim"), callback, bars.get("invert"))
    x = _decode_latents(pipe, z.expand(n, -1), x_t.expand(n, -1, -1, -1), seeds, size, st, float(eta),
                             callback, bars)
    recs = [pipe._record("variations", seed, i, s, size, st, eta=float(eta)) for i, s in enumerate(seeds)]
    return pipe._finish(x, recs, bars, output_type)


@torch.no_grad()
def interpolate(pipe: UnCLIPPipeline, image_a, image_b, steps: int = 5, size: int = 64, seed: int | None = None,
                noise: str = "inverted", settings=None, callback=None, progress: bool = False,
                output_type: str = "pil"):
    """§3.2: frames decoded from slerp(z_a, z_b, θ), θ = 0 … 1 over ``steps`` frames, with DDIM η = 0 and
    the noise either slerped between the two inverted latents ("inverted") or one seeded x_T ("fixed")."""
    check_output_type(output_type)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= 64:
        raise InputError("steps", f"steps={steps!r}: expected an int in [2, 64]")
    if noise not in ("inverted", "fixed"):
        raise InputError("noise", f"noise={noise!r}: expected 'inverted' or 'fixed'")
    size, st = pipe._check_size(size), resolve_settings(settings, pipe.settings)
    (xa, za), (xb, zb) = _upload(pipe, image_a, "image_a"), _upload(pipe, image_b, "image_b")
    seed, one = pipe._seeds(seed, 1)
    seeds = one * steps  # the same noise for every frame
    thetas = [i / (steps - 1) for i in range(steps)]
    bars = pipe._bars(progress, ["invert", "decoder"], 1)
    if noise == "inverted":
        inv_st = dataclasses.replace(st.decoder, sampler="ddim")
        na, nb = _invert(pipe, xa, za, inv_st, callback, bars.get("invert")), _invert(pipe, xb, zb, inv_st, callback)
        x_t = torch.cat([slerp(na, nb, th) for th in thetas])
    else:
        d = pipe.stages["decoder"].model.image_size
        x_t = randn((1, 3, d, d), stage_generators(one, 1), pipe.device, torch.float32).expand(steps, -1, -1, -1)
    z = torch.cat([slerp(za, zb, th) for th in thetas])
    x = _decode_latents(pipe, z, x_t, seeds, size, st, 0.0, callback, bars)
    recs = [pipe._record("interpolate", seed, i, seeds[i], size, st, theta=th, noise=noise)
            for i, th in enumerate(thetas)]
    return pipe._finish(x, recs, bars, output_type)


@torch.no_grad()
def text_diff(pipe: UnCLIPPipeline, image, caption: str, new_caption: str,
              thetas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), size: int = 64, seed: int | None = None,
              settings=None, callback=None, progress: bool = False, output_type: str = "pil"):
    """§3.3: z_d = normalize(z_t(new) − z_t(caption)); frames from slerp(z_i, z_d, θ) with the image's
    inverted x_T fixed (DDIM η = 0)."""
    check_output_type(output_type)
    caption = pipe._check_prompts(caption, "caption")[0]
    new_caption = pipe._check_prompts(new_caption, "new_caption")[0]
    thetas = [float(t) for t in thetas]
    if not thetas or not all(0.0 <= t <= 1.0 for t in thetas):
        raise InputError("thetas", f"thetas={thetas}: expected a non-empty list of values in [0, 1]")
    size, st = pipe._check_size(size), resolve_settings(settings, pipe.settings)
    x0, z = _upload(pipe, image)
    emb = pipe.clip.encode_text([caption, new_caption])[0]
    z_d = F.normalize(emb[1:2] - emb[0:1], dim=-1)
    seed, one = pipe._seeds(seed, 1)
    bars = pipe._bars(progress, ["invert", "decoder"], 1)
    x_t = _invert(pipe, x0, z, dataclasses.replace(st.decoder, sampler="ddim"), callback, bars.get("invert"))
    zs = torch.cat([slerp(z, z_d, th) for th in thetas])
    x = _decode_latents(pipe, zs, x_t.expand(len(thetas), -1, -1, -1), one * len(thetas), size, st, 0.0,
                             callback, bars)
    recs = [pipe._record("text_diff", seed, i, one[0], size, st, caption=caption, new_caption=new_caption, theta=th)
            for i, th in enumerate(thetas)]
    return pipe._finish(x, recs, bars, output_type)
