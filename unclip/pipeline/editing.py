"""Edits (inpainting) and outpainting, with the OpenAI Images API mask semantics (images.py).

The hole is filled by the inpainting decoder when the pipeline has one (GLIDE's extra channels plus
pred_x0 write-back), else by RePaint resampling with the plain decoder; the upsamplers write the known
pixels back at every step, and the output keeps them exactly, blending generated content into the
hole over ``settings.seam_feather`` pixels. Outpainting pads the canvas and fills it with overlapping
tile edits, nearest the original first, each tile seeing the pixels already filled as known.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image

from unclip.diffusion import derive_seed
from unclip.errors import InputError
from unclip.models import UPSAMPLER_SIZES

from .images import check_image, composite, keep_mask, resize_keep, to_tensor
from .result import check_output_type
from .settings import resolve_settings
from .stages import run_decoder

if TYPE_CHECKING:  # the functions here are UnCLIPPipeline methods (bound in core.py)
    from .core import UnCLIPPipeline


def _inpaint(pipe: UnCLIPPipeline, known, keep, z_i, text, seeds, size, st, callback, bars) -> torch.Tensor:
    """Fill the holes of known [B, 3, size, size] (keep [B, 1, size, size], 1 = known) → [B, 3, size, size]."""
    dec = pipe.stages["decoder"]
    d = dec.model.image_size
    known_d = known if known.shape[-1] == d else F.interpolate(known, size=d, mode="area")
    x = run_decoder(dec, st.decoder, z_i, text["dec_tokens"], text["dec_mask"], seeds, known=known_d,
                    keep=resize_keep(keep, d), repaint_resample=st.repaint_resample,
                    callback=pipe._stage_cb("decoder", callback, bars.get("decoder")), text_emb=text["text_emb"])
    x = pipe._upsample(x, size, seeds, st, callback, bars, known=known, keep=keep)
    return composite(x, known, keep, st.seam_feather)


def _text_and_prior(pipe: UnCLIPPipeline, prompt: str, seeds, st, callback, bars):
    text = pipe.encode_text([prompt] * len(seeds))
    return text, pipe._prior(text, seeds, st, callback, bars.get("prior"))


def _check_upload_pixels(pipe: UnCLIPPipeline, image: Image.Image) -> None:
    if pipe.moderator is not None and pipe.moderator.image_filter.concepts:
        pipe.moderator.require_images_ok(pipe.clip.encode_image(image.convert("RGB")))


@torch.no_grad()
def edit(pipe: UnCLIPPipeline, image, mask, prompt: str, n: int = 1, size: int = 64, seed: int | None = None,
         settings=None, callback=None, progress: bool = False, sample_seeds=None, output_type: str = "pil"):
    """Repaint the fully transparent pixels of ``mask`` (or of ``image`` when mask is None) to match
    ``prompt``. Outside the hole the output equals the input resized to ``size`` (exactly: the seam
    blend lies inside the hole)."""
    check_output_type(output_type)
    image = check_image(image)
    keep_full = keep_mask(image, mask)
    prompt = pipe._check_prompts(prompt)[0]
    n, size = pipe._check_n(n), pipe._check_size(size)
    st = resolve_settings(settings, pipe.settings)
    _check_upload_pixels(pipe, image)
    seed, seeds = pipe._seeds(seed, n, sample_seeds)
    known, keep = to_tensor(image, size).to(pipe.device), resize_keep(keep_full, size).to(pipe.device)
    bars = pipe._bars(progress, ["prior", "decoder"] + [m for m, s in UPSAMPLER_SIZES.items() if s <= size], 1)
    outs = []
    for lo in range(0, n, st.batch_size):
        cs = seeds[lo:lo + st.batch_size]
        text, z = _text_and_prior(pipe, prompt, cs, st, callback, bars)
        b = len(cs)
        outs.append(_inpaint(pipe, known.expand(b, -1, -1, -1), keep.expand(b, -1, -1, -1), z, text, cs, size, st,
                                  callback, bars))
    how = "inpainting decoder" if pipe.stages["decoder"].model.inpaint else "repaint"
    recs = [pipe._record("edit", seed, i, s, size, st, prompt=prompt, method=how,
                         hole_fraction=float(1 - keep.mean())) for i, s in enumerate(seeds)]
    return pipe._finish(torch.cat(outs), recs, bars, output_type)


@torch.no_grad()
def outpaint(pipe: UnCLIPPipeline, image, prompt: str, *, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0,
             canvas: int | None = None, tile: int | None = None, overlap: float = 0.25, n: int = 1,
             seed: int | None = None, settings=None, callback=None, progress: bool = False,
             output_type: str = "pil"):
    """Extend the canvas by ``left/right/top/bottom`` pixels (or centre the image on a ``canvas``-sided
    square) and fill the new area with overlapping ``tile``-sided edits (default: the image's shorter
    side, at least 64). The original pixels are kept exactly; transparent pixels of the image are
    filled too. Returns n canvases of (W + left + right) × (H + top + bottom)."""
    check_output_type(output_type)
    image = check_image(image, square=False)
    prompt, n = pipe._check_prompts(prompt)[0], pipe._check_n(n)
    st = resolve_settings(settings, pipe.settings)
    w, h = image.size
    if canvas is not None:
        if isinstance(canvas, bool) or not isinstance(canvas, int) or canvas < max(w, h):
            raise InputError("canvas", f"canvas={canvas!r}: expected an int >= the image's longer side {max(w, h)}")
        left, top = (canvas - w) // 2, (canvas - h) // 2
        right, bottom = canvas - w - left, canvas - h - top
    margins = dict(left=left, right=right, top=top, bottom=bottom)
    for k, v in margins.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 4096:
            raise InputError(k, f"{k}={v!r}: expected an int in [0, 4096]")
    if not any(margins.values()) and image.mode not in ("RGBA", "LA", "PA", "P"):
        raise InputError("left", "nothing to outpaint: give left/right/top/bottom margins or a canvas")
    _check_upload_pixels(pipe, image)
    W, H = w + left + right, h + top + bottom
    tile = tile or min(W, H, max(64, min(w, h)))
    if isinstance(tile, bool) or not isinstance(tile, int) or not 8 <= tile <= min(W, H):
        raise InputError("tile", f"tile={tile!r}: expected an int in [8, {min(W, H)}] (the canvas is {W}x{H})")
    if not 0.0 <= overlap < 1.0:
        raise InputError("overlap", f"overlap={overlap!r}: expected a value in [0, 1)")
    out_size = next((s for s in pipe.sizes if s >= tile), pipe.sizes[-1])
    canvas_x = torch.zeros(n, 3, H, W, device=pipe.device)
    keep = torch.zeros(1, 1, H, W, device=pipe.device)
    canvas_x[..., top:top + h, left:left + w] = to_tensor(image).to(pipe.device)
    alpha = image.convert("RGBA").getchannel("A") if image.mode in ("RGBA", "LA", "PA", "P") else None
    known_px = 1.0 if alpha is None else (to_tensor(alpha.convert("RGB"))[:, :1] > -1).float()
    keep[..., top:top + h, left:left + w] = known_px
    seed, seeds = pipe._seeds(seed, n)
    bars = pipe._bars(progress, ["prior", "decoder"], 1)
    text, z = _text_and_prior(pipe, prompt, seeds, st, callback, bars)  # one z_i per canvas: tiles agree
    centre = (top + h / 2, left + w / 2)
    boxes = sorted(((y, x) for y in _starts(H, tile, overlap) for x in _starts(W, tile, overlap)),
                   key=lambda p: math.hypot(p[0] + tile / 2 - centre[0], p[1] + tile / 2 - centre[1]))
    filled_tiles = 0
    for j, (y, x) in enumerate(boxes):
        kp = keep[..., y:y + tile, x:x + tile]
        if bool(kp.all()):
            continue
        tile_seeds = [derive_seed(s, j + 1) for s in seeds]
        known = _resize(canvas_x[..., y:y + tile, x:x + tile], out_size)
        gen = _inpaint(pipe, known, resize_keep(kp, out_size).expand(n, -1, -1, -1), z, text, tile_seeds,
                            out_size, st, callback, bars)
        gen = _resize(gen, tile)
        region = canvas_x[..., y:y + tile, x:x + tile]
        canvas_x[..., y:y + tile, x:x + tile] = composite(gen, region, kp, st.seam_feather)
        keep[..., y:y + tile, x:x + tile] = 1.0
        filled_tiles += 1
    recs = [pipe._record("outpaint", seed, i, s, tile, st, prompt=prompt, tile=tile, overlap=overlap,
                         canvas=[W, H], tiles=filled_tiles, **margins) for i, s in enumerate(seeds)]
    return pipe._finish(canvas_x, recs, bars, output_type)


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile offsets covering [0, length) with stride tile·(1 − overlap), the last flush with the end."""
    stride = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bicubic"
    return F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
