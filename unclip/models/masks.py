"""Random inpainting masks for training the inpainting decoder (GLIDE, Nichol et al. 2022, §4.3 /
unCLIP §2.1): GLIDE erased random regions of training images; here each sample draws one kind:

  * "box":    1–3 axis-aligned rectangles, each side 10–60% of the image;
  * "brush":  1–4 free-form strokes: random walks of 3–8 segments, 4–20% of the image per segment,
              brush radius 2–8% of the image size;
  * "border": outpainting — keep a centred or one-sided region, erase the rest: a random margin of
              10–40% on 1 to 4 sides.

Masks are float [B, 1, H, W] with 1 = known pixel (kept), 0 = hole (to generate).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from unclip.devices import to_device

MASK_KINDS = ("box", "brush", "border")


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _box(hole: torch.Tensor, g: torch.Generator) -> None:
    h, w = hole.shape
    for _ in range(_randint(g, 1, 3)):
        bh, bw = max(1, int(_u(g, 0.1, 0.6) * h)), max(1, int(_u(g, 0.1, 0.6) * w))
        y, x = _randint(g, 0, h - bh), _randint(g, 0, w - bw)
        hole[y:y + bh, x:x + bw] = True


def _brush(hole: torch.Tensor, g: torch.Generator) -> None:
    h, w = hole.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    size = float(min(h, w))
    for _ in range(_randint(g, 1, 4)):
        radius = max(1.0, _u(g, 0.02, 0.08) * size)
        y0, x0 = _u(g, 0, h - 1), _u(g, 0, w - 1)
        for _ in range(_randint(g, 3, 8)):
            angle, length = _u(g, 0, 2 * torch.pi), _u(g, 0.04, 0.2) * size
            y1 = min(max(y0 + length * torch.sin(torch.tensor(angle)).item(), 0.0), h - 1.0)
            x1 = min(max(x0 + length * torch.cos(torch.tensor(angle)).item(), 0.0), w - 1.0)
            # distance from every pixel to the segment (y0, x0)–(y1, x1)
            dy, dx = y1 - y0, x1 - x0
            s = ((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-6)  # [H, W]
            s = s.clamp(0, 1)
            dist2 = (ys - (y0 + s * dy)) ** 2 + (xs - (x0 + s * dx)) ** 2  # [H, W]
            hole |= dist2 <= radius * radius
            y0, x0 = y1, x1


def _border(hole: torch.Tensor, g: torch.Generator) -> None:
    h, w = hole.shape
    sides = torch.randperm(4, generator=g)[: _randint(g, 1, 4)].tolist()
    for side in sides:
        m = max(1, int(_u(g, 0.1, 0.4) * (h if side < 2 else w)))
        if side == 0:
            hole[:m] = True
        elif side == 1:
            hole[h - m:] = True
        elif side == 2:
            hole[:, :m] = True
        else:
            hole[:, w - m:] = True


_DRAW = {"box": _box, "brush": _brush, "border": _border}


def random_inpaint_mask(batch: int, height: int, width: int | None = None, *,
                        kinds: Sequence[str] = MASK_KINDS, generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """[B, 1, H, W] float masks, 1 = known, 0 = hole; the kind of each sample is uniform over ``kinds``.

    Every mask has at least one hole pixel and one known pixel."""
    width = width or height
    bad = [k for k in kinds if k not in _DRAW]
    if bad or not kinds:
        raise ValueError(f"random_inpaint_mask: kinds {list(kinds)} contain {bad}; expected a subset of {MASK_KINDS}")
    g = generator or torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    masks = []
    for _ in range(batch):
        hole = torch.zeros(height, width, dtype=torch.bool)
        _DRAW[kinds[_randint(g, 0, len(kinds) - 1)]](hole, g)
        if hole.all():
            hole[height // 2, width // 2] = False
        if not hole.any():
            hole[height // 2, width // 2] = True
        masks.append(~hole)
    return to_device(torch.stack(masks)[:, None].float(), device)  # [B, 1, H, W]
