"""Calibrate the image filter's thresholds for one CLIP, and store them beside it.

A concept's cosine similarity to an image's CLIP embedding means nothing until it is compared with what
the same CLIP gives harmless images: with the demo's tiny CLIP, plain black or grey uploads scored above
the fixed 0.3 of a ViT-L setting and were refused as "sexual". So the thresholds are measured per CLIP:
for each concept, the `quantile` of its similarity over a reference set of acceptable images (your
data's validation images), raised to at least the highest similarity of plain single-colour images
(uploads that are never harmful), plus `margin`. An image is flagged only when a concept fits it better
than it fits (almost) every acceptable image.

    python -m unclip.moderation_calibration --clip PIPELINE/clip --reference /data/val_shards \
        [--n 1000] [--quantile 0.999] [--margin 0.02] [--config configs/moderation/default.yaml]

writes ``PIPELINE/clip/moderation_calibration.json``, tied to the CLIP's weights by a digest: the
pipeline enables the image filter only for the CLIP the file was made with, and refuses (with a warning
saying how to calibrate) otherwise. Prompts are filtered by term lists and need no calibration.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unclip.io import atomic_write_json

log = logging.getLogger("unclip.moderation")
FORMAT = "unclip.moderation-calibration/v1"
FILE = "moderation_calibration.json"
PLAIN_COLOURS = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (64, 64, 64), (192, 192, 192), (255, 0, 0),
                 (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 200, 180), (120, 80, 60)]


def clip_digest(clip) -> str:
    """sha256 over the CLIP's parameter names, shapes and bytes: which weights a calibration belongs to."""
    h = hashlib.sha256()
    for name, p in sorted(clip.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def plain_images(size: int) -> list[Image.Image]:
    return [Image.new("RGB", (size, size), c) for c in PLAIN_COLOURS]


def calibrate(clip, concepts: Sequence[tuple[str, str]], reference: Sequence[Image.Image], *,
              quantile: float = 0.999, margin: float = 0.02, plain_floor: bool = True,
              reference_name: str = "") -> dict[str, Any]:
    """Thresholds for (category, text) ``concepts`` from ``reference`` images (see the module docstring).
    ``plain_floor=False`` drops the plain-colour floor (for a concept that is itself a colour)."""
    if not concepts:
        raise ValueError("no image concepts to calibrate (the moderation config lists none)")
    if len(reference) < 20:
        raise ValueError(f"calibration needs at least 20 reference images, got {len(reference)}")
    if not 0.5 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0.5, 1], got {quantile}")
    text = clip.encode_text([t for _, t in concepts])[0].float().cpu()  # [C, D]
    ref = (clip.encode_image(list(reference)).float().cpu() @ text.T).numpy()  # [N, C]
    plain = (clip.encode_image(plain_images(clip.input_side)).float().cpu() @ text.T).numpy()
    entries = []
    for j, (category, concept) in enumerate(concepts):
        q, top = float(np.quantile(ref[:, j], quantile)), float(plain[:, j].max())
        entries.append({"category": category, "text": concept,
                        "threshold": (max(q, top) if plain_floor else q) + margin,
                        "reference_quantile": q, "reference_max": float(ref[:, j].max()), "plain_max": top})
    return {"format": FORMAT, "clip_arch": clip.arch, "clip_digest": clip_digest(clip), "quantile": quantile,
            "margin": margin, "plain_floor": plain_floor, "n_reference": len(reference), "reference": reference_name,
            "concepts": entries}


def load_calibration(clip_dir: str | Path, clip) -> dict[str, float] | None:
    """{concept text: threshold} from ``clip_dir``'s calibration when it was made with these weights, else
    None (no file, or another CLIP's: a warning says which)."""
    path = Path(clip_dir) / FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a moderation calibration (expected format {FORMAT!r})")
    if data.get("clip_digest") != clip_digest(clip):
        log.warning("%s was made with other CLIP weights: image moderation stays off until it is recalibrated", path)
        return None
    return {c["text"]: float(c["threshold"]) for c in data["concepts"]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unclip.moderation_calibration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", required=True, help="a saved FrozenCLIP directory (a pipeline's clip/)")
    p.add_argument("--reference", required=True, nargs="+",
                   help="acceptable images: an image folder, or shards (directory of *.tar, brace pattern, glob)")
    p.add_argument("--n", type=int, default=1000, help="reference images to use (the first N)")
    p.add_argument("--quantile", type=float, default=0.999)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--no-plain-floor", action="store_true",
                   help="do not raise thresholds above plain single-colour images")
    p.add_argument("--config", default=None, help="moderation config whose image_concepts to calibrate "
                                                   "(default configs/moderation/default.yaml)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line (``unclip-calibrate-moderation``); exit status 0 once the file is written."""
    from unclip.clip import FrozenCLIP
    from unclip.evals.reference import load_reference
    from unclip.moderation import DEFAULT_CONFIG, read_concepts

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    clip = FrozenCLIP.load(args.clip)
    concepts = read_concepts(args.config or DEFAULT_CONFIG)
    source = args.reference if len(args.reference) > 1 else args.reference[0]
    ref = load_reference(source, args.n, clip.input_side, 0, 20)
    result = calibrate(clip, concepts, ref.images, quantile=args.quantile, margin=args.margin,
                       plain_floor=not args.no_plain_floor, reference_name=ref.description)
    out = atomic_write_json(Path(args.clip) / FILE, result)
    for c in result["concepts"]:
        print(f"{c['category']:18s} {c['text'][:40]:40s} threshold {c['threshold']:.3f} "
              f"(reference q{args.quantile:g} {c['reference_quantile']:.3f}, plain {c['plain_max']:.3f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
