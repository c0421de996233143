"""Conditioning gain: does a trained diffusion stage use its condition?

A stage that ignores its condition predicts x0 equally well with the right condition and with another
sample's. So, teacher-forced (x_t from the real x0, one shared noise draw and t for both arms), measure
the x0 error with the right condition and with a shuffled one:

    gain(t) = E‖x̂0(x_t, t, c_shuffled) − x0‖² / E‖x̂0(x_t, t, c_right) − x0‖²

1.0 means the condition is ignored; > 1 means it is used. Inside a region (the object of a `shapes`
scene) the same ratio is taken over the region's pixels only: there the condition decides what is
drawn, while the background dominates the whole-image error. High t (500–950) is where colour and
layout are decided, so that is where a conditioned decoder must beat an unconditioned one.

Each named probe is a pair of condition dicts (right, shuffled) for the same denoiser call; for the
unCLIP decoder: z_i right vs shuffled with the caption dropped, and the caption right vs shuffled with
z_i dropped (`decoder_probes`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unclip.diffusion import GaussianDiffusion

DEFAULT_TIMESTEPS = (200, 500, 800, 950)


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of range(n) that moves every index (a random order, each taking the next's condition)."""
    if n < 2:
        raise ValueError(f"a shuffled condition needs at least 2 samples, got {n}")
    order = torch.randperm(n, generator=generator)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def _shuffle(value: Any, perm: torch.Tensor) -> Any:
    return value[perm.to(value.device)] if isinstance(value, torch.Tensor) and value.ndim >= 1 else value


def decoder_probes(image_emb: torch.Tensor, text_tokens: torch.Tensor | None, text_mask: torch.Tensor | None,
                   perm: torch.Tensor, text_emb: torch.Tensor | None = None) -> dict[str, tuple[dict, dict]]:
    """The decoder's two probes: "image" (z_i right vs shuffled, caption dropped) and "text" (caption right
    vs shuffled, z_i dropped); "text" only when a caption is given. ``text_emb`` (z_t, for decoders that read
    it) is part of the caption: shuffled with it."""
    b, dev = image_emb.shape[0], image_emb.device
    yes, no = torch.ones(b, dtype=torch.bool, device=dev), torch.zeros(b, dtype=torch.bool, device=dev)
    base = {"image_emb": image_emb}
    if text_tokens is not None:
        base.update(text_tokens=text_tokens, text_mask=text_mask)
        if text_emb is not None:
            base["text_emb"] = text_emb
    probes = {"image": ({**base, "drop_image": no, "drop_text": yes},
                        {**base, "image_emb": image_emb[perm.to(dev)], "drop_image": no, "drop_text": yes})}
    if text_tokens is not None:
        right = {**base, "drop_image": yes, "drop_text": no}
        wrong = {**right, "text_tokens": _shuffle(text_tokens, perm), "text_mask": _shuffle(text_mask, perm)}
        if text_emb is not None:
            wrong["text_emb"] = _shuffle(text_emb, perm)
        probes["text"] = (right, wrong)
    return probes


@torch.no_grad()
def conditioning_gain(denoiser, diffusion: GaussianDiffusion, x0: torch.Tensor,
                      probes: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]], *,
                      timesteps: Sequence[int] = DEFAULT_TIMESTEPS, region: torch.Tensor | None = None,
                      generator: torch.Generator, batch_size: int = 64) -> dict[str, dict[int, dict[str, float]]]:
    """Teacher-forced x0 error with the right vs the shuffled condition of each probe, per timestep.

    ``denoiser(x_t, t, **cond) -> Prediction``; ``x0`` [B, C, H, W]; ``region`` [B, 1, H, W] weights in [0, 1]
    (e.g. the object's coverage) or None. Returns {probe: {t: {"err", "err_shuffled", "gain"[, "err_region",
    "err_region_shuffled", "gain_region"]}}}, errors being mean squared x0 errors over the batch."""
    b = x0.shape[0]
    if region is not None and (region.shape[0] != b or region.shape[1] != 1 or region.shape[2:] != x0.shape[2:]):
        raise ValueError(f"conditioning_gain: region must be [B={b}, 1, {x0.shape[2]}, {x0.shape[3]}], "
                         f"got {tuple(region.shape)}")
    if region is not None and float(region.sum()) <= 0:
        raise ValueError("conditioning_gain: region is empty (no object pixels)")
    bad = [t for t in timesteps if not 0 <= int(t) < diffusion.num_timesteps]
    if bad:
        raise ValueError(f"conditioning_gain: timesteps {bad} outside [0, {diffusion.num_timesteps})")
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in probes}
    for t_value in timesteps:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.full((b,), int(t_value), dtype=torch.long, device=x0.device)
        x_t = diffusion.q_sample(x0, t, noise)
        for name, (right, wrong) in probes.items():
            sq = [_squared_error(denoiser, x_t, t, x0, cond, batch_size) for cond in (right, wrong)]  # [B, C, H, W]
            out[name][int(t_value)] = _summarise(sq[0], sq[1], region)
    return out


def _squared_error(denoiser, x_t, t, x0, cond: Mapping[str, Any], batch_size: int) -> torch.Tensor:
    errs = []
    for lo in range(0, x_t.shape[0], batch_size):
        sl = slice(lo, lo + batch_size)
        part = {k: (v[sl] if isinstance(v, torch.Tensor) and v.ndim >= 1 else v) for k, v in cond.items()}
        pred = denoiser(x_t[sl], t[sl], **part)
        errs.append((pred.x0.float().clamp(-1, 1) - x0[sl].float()) ** 2)
    return torch.cat(errs)  # [B, C, H, W]


def _summarise(right: torch.Tensor, wrong: torch.Tensor, region: torch.Tensor | None) -> dict[str, float]:
    err, err_s = right.mean().item(), wrong.mean().item()
    row = {"err": err, "err_shuffled": err_s, "gain": err_s / max(err, 1e-12)}
    if region is not None:
        w = region.to(right.dtype)
        total = w.sum() * right.shape[1]
        er, ers = ((right * w).sum() / total).item(), ((wrong * w).sum() / total).item()
        row.update(err_region=er, err_region_shuffled=ers, gain_region=ers / max(er, 1e-12))
    return row


def flatten_gain(result: Mapping[str, Mapping[int, Mapping[str, float]]], prefix: str = "gain") -> dict[str, float]:
    """{"gain/image/t800": 1.7, "gain_region/image/t800": 2.9, ...}: the ratios as flat metrics to log."""
    flat = {}
    for name, by_t in result.items():
        for t, row in by_t.items():
            flat[f"{prefix}/{name}/t{t}"] = row["gain"]
            if "gain_region" in row:
                flat[f"{prefix}_region/{name}/t{t}"] = row["gain_region"]
    return flat


def caption_match_rates(images: Sequence, scenes: Sequence, captions: Sequence[str]) -> dict[str, float]:
    """Oracle caption match of generated `shapes` images against the scenes their captions describe:
    per attribute (correct / stated) and full match, as flat rates {"match/color": …, "match/full": …}."""
    from unclip.evals import oracle

    if not (len(images) == len(scenes) == len(captions)) or not images:
        raise ValueError(f"caption_match_rates: need equally many images, scenes and captions (> 0), got "
                         f"{len(images)}, {len(scenes)}, {len(captions)}")
    correct: dict[str, list[int]] = {}
    full = 0
    for image, scene, caption in zip(images, scenes, captions):
        m = oracle.match(oracle.spec_from_scene(scene, caption), oracle.read_image(image))
        full += int(m["full_match"])
        for attr, (c, n) in m["attributes"].items():
            tally = correct.setdefault(attr, [0, 0])
            tally[0] += c
            tally[1] += n
    rates = {f"match/{a}": c / n for a, (c, n) in correct.items() if n}
    rates["match/full"] = full / len(images)
    return rates
