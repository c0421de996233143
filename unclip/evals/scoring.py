"""Score generated images: oracle caption match, CLIP score and k-NN realism, per item and per group."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from unclip.data import shapes as S
from unclip.evals import oracle
from unclip.evals.generated import GeneratedImage
from unclip.metrics import clip_score, frechet_distance, precision_recall, realism_score

FeatureFn = Callable[[Sequence[Image.Image]], torch.Tensor]  # images -> [N, D]
GROUPS = ("all", "1 object", "2 objects", "held-out combos")
MATCH_KEYS = (*oracle.ATTRIBUTES, "relation", "count")


def clip_image_features(clip) -> FeatureFn:
    """The default feature extractor: FrozenCLIP image embeddings (FD_CLIP, Kynkäänniemi et al. 2023).
    Any callable images -> [N, D] works in its place (e.g. Inception or DINOv2 from local weights)."""
    def features(images: Sequence[Image.Image]) -> torch.Tensor:
        return clip.encode_image(list(images)).float().cpu()
    return features


def reference_images(n: int, resolution: int, seed: int = 0, split: str = "val") -> list[Image.Image]:
    """`n` real shapes images of `split` at `resolution` (the reference set for realism metrics)."""
    ds = S.ShapesDataset(split, length=n, seed=seed, resolution=resolution)
    return [ds.image(i) for i in range(n)]


def expected_spec(item: GeneratedImage) -> oracle.PromptSpec:
    """What the item's prompt asks for: from the sidecar's scene (restricted to the attributes the prompt
    states) when present and readable, else by parsing the prompt."""
    scene = item.meta.get("scene")
    if scene is not None:
        try:
            scene = S.Scene.from_json(scene) if isinstance(scene, (str, bytes)) else S.Scene.from_dict(scene)
            return oracle.spec_from_scene(scene, item.prompt)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            pass  # a foreign "scene" field: fall back to the prompt
    return oracle.parse_caption(item.prompt)


def is_heldout(item: GeneratedImage, spec: oracle.PromptSpec, combos: Iterable[Mapping[str, str]]) -> bool:
    """Held-out when the sidecar says split "heldout" or a stated object matches a held-out combo."""
    if item.meta.get("split") == "heldout":
        return True
    return any(all(o.get(k) == v for k, v in c.items()) for o in spec.objects for c in combos)


def score_items(items: Sequence[GeneratedImage], images: Sequence[Image.Image], clip=None,
                realism: Sequence[float] | None = None, heldout: Iterable[Mapping[str, str]] = ()) -> list[dict]:
    """One JSON-able record per item: what the prompt states, what the oracle read, the match, the
    CLIP score (with `clip`) and the realism score (when given)."""
    combos = list(heldout)
    scores = clip_score(clip, images, [g.prompt for g in items]).tolist() if clip is not None else [None] * len(items)
    records = []
    for i, (g, im) in enumerate(zip(items, images)):
        spec = expected_spec(g)
        detected = oracle.read_image(im)
        m = oracle.match(spec, detected)
        records.append({
            "name": g.name, "prompt": g.prompt, "seed": g.seed, "n_objects": spec.n_objects,
            "heldout": is_heldout(g, spec, combos), "expected": spec.to_dict(),
            "detected": [{**d.attributes(), "fit_error": round(d.fit_error, 4)} for d in detected],
            "attributes": m["attributes"], "n_correct": m["n_correct"], "n_stated": m["n_stated"],
            "full_match": m["full_match"], "clip_score": scores[i],
            "realism": None if realism is None else float(realism[i]),
        })
    return records


def _in_group(r: Mapping[str, Any], group: str) -> bool:
    return {"all": True, "1 object": r["n_objects"] == 1, "2 objects": r["n_objects"] == 2,
            "held-out combos": r["heldout"]}[group]


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group (all / 1 object / 2 objects / held-out combos): n, full-match rate, per-attribute
    accuracy (correct / stated; None where no prompt states it), mean CLIP and realism scores."""
    out = {}
    for group in GROUPS:
        rs = [r for r in records if _in_group(r, group)]
        acc = {}
        for k in MATCH_KEYS:
            c, t = sum(r["attributes"][k][0] for r in rs), sum(r["attributes"][k][1] for r in rs)
            acc[k] = c / t if t else None
        clip_vals = [r["clip_score"] for r in rs if r.get("clip_score") is not None]
        real_vals = [r["realism"] for r in rs if r.get("realism") is not None]
        out[group] = {"n": len(rs), "full_match": (sum(r["full_match"] for r in rs) / len(rs)) if rs else None,
                      "accuracy": acc, "clip_score": float(np.mean(clip_vals)) if clip_vals else None,
                      "realism_mean": float(np.mean(real_vals)) if real_vals else None}
    return out


def realism_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, Any]:
    """FD, k-NN precision/recall and per-sample realism of `fake` against `real` features."""
    if len(fake) <= k or len(real) <= k:
        raise ValueError(f"realism metrics need more than k={k} samples per set, got {len(real)} real and "
                         f"{len(fake)} generated")
    pr = precision_recall(real, fake, k)
    return {"fd": frechet_distance(real, fake), "precision": pr["precision"], "recall": pr["recall"], "k": k,
            "realism": realism_score(real, fake, k).tolist(), "n_real": len(real), "n_fake": len(fake)}
