"""Images in and out of the pipeline: validation, PIL ↔ tensor, edit masks and seam blending.

Mask semantics follow the OpenAI Images API: the fully transparent pixels (alpha = 0) of the mask —
or of the image itself when no mask is given — are the region to repaint; everything else is kept.
Tensors are [B, 3, H, W] in [−1, 1]; keep masks are [B, 1, H, W] with 1 = known pixel.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unclip.errors import InputError

ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA")
MIN_SIDE = 8


def check_image(image, param: str = "image", square: bool = True) -> Image.Image:
    """The PIL image, validated: a known mode, at least 8 px, square when ``square``."""
    if not isinstance(image, Image.Image):
        raise InputError(param, f"expected a PIL.Image.Image, got {type(image).__name__}")
    if image.mode not in ACCEPTED_MODES:
        raise InputError(param, f"unsupported image mode {image.mode!r}: expected one of {ACCEPTED_MODES}")
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise InputError(param, f"image is {w}x{h}: expected at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if square and w != h:
        raise InputError(param, f"image is {w}x{h}: expected a square image")
    return image


def to_tensor(image: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """RGB [1, 3, H, W] in [−1, 1], optionally resized (bicubic; exact when the size is unchanged)."""
    rgb = image.convert("RGB")
    if size is not None:
        wh = (size, size) if isinstance(size, int) else (size[1], size[0])
        if rgb.size != wh:
            rgb = rgb.resize(wh, Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy())  # [H, W, 3]
    return (arr.permute(2, 0, 1)[None] / 127.5 - 1.0)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [−1, 1] → RGB images (rounded to 8 bits)."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def alpha_of(image: Image.Image) -> np.ndarray | None:
    """The alpha channel [H, W] uint8, or None when the image has no transparency."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        return np.asarray(image.getchannel("A"))
    return None


def keep_mask(image: Image.Image, mask: Image.Image | None) -> torch.Tensor:
    """[1, 1, H, W] float, 1 = keep, 0 = repaint (alpha = 0 of ``mask``, else of ``image``)."""
    if mask is not None:
        mask = check_image(mask, "mask", square=False)
        if mask.size != image.size:
            raise InputError("mask", f"mask is {mask.size[0]}x{mask.size[1]} but the image is "
                                     f"{image.size[0]}x{image.size[1]}: expected the same size")
        alpha = alpha_of(mask)
        if alpha is None:
            raise InputError("mask", f"mask has mode {mask.mode!r} without transparency: expected an image with an "
                                     "alpha channel whose fully transparent pixels mark the area to edit")
        source = "mask"
    else:
        alpha = alpha_of(image)
        if alpha is None:
            raise InputError("mask", "no mask given and the image has no alpha channel: pass a mask, or an image "
                                     "whose fully transparent pixels mark the area to edit")
        source = "image"
    hole = alpha == 0
    if not hole.any():
        raise InputError("mask", f"the {source} has no fully transparent pixels (alpha = 0): nothing to edit")
    return torch.from_numpy((~hole).astype(np.float32))[None, None]


def resize_keep(keep: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a keep mask; a pixel is known only if all of its source area was (holes only grow)."""
    size = (size, size) if isinstance(size, int) else size
    if tuple(keep.shape[-2:]) == tuple(size):
        return keep
    hole = F.interpolate(1 - keep, size=size, mode="area" if keep.shape[-1] >= size[-1] else "nearest")
    return (hole <= 1e-6).float()


def feather(keep: torch.Tensor, width: int) -> torch.Tensor:
    """Blend weight of the known image: exactly 1 on known pixels, falling linearly to 0 over ``width``
    pixels into the hole, so the seam is blended on the hole's side and known pixels stay exact."""
    soft = keep.clone()
    for k in range(1, width + 1):
        grown = F.max_pool2d(keep, 2 * k + 1, stride=1, padding=k)
        soft = torch.maximum(soft, grown * (1 - k / (width + 1)))
    return soft


def composite(generated: torch.Tensor, known: torch.Tensor, keep: torch.Tensor, width: int) -> torch.Tensor:
    """The edit's output: known pixels exactly, generated ones in the hole, blended at the seam."""
    w = feather(keep, width).to(generated)
    return w * known.to(generated) + (1 - w) * generated
