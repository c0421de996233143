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
    """`n` real shapes images of `split` at `resolution` (the default reference set for realism metrics;
    `unclip.evals.reference.load_reference` also reads image folders and webdataset shards)."""
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


def _not_scored() -> dict[str, Any]:
    """What a prompt that states no shapes object gets instead of an oracle match: nothing stated,
    nothing right, no full match (so the caption judge falls through to the CLIP score)."""
    return {"attributes": {k: [0, 0] for k in MATCH_KEYS}, "n_correct": 0, "n_stated": 0, "full_match": False}


def score_items(items: Sequence[GeneratedImage], images: Sequence[Image.Image], clip=None,
                realism: Sequence[float] | None = None, heldout: Iterable[Mapping[str, str]] = ()) -> list[dict]:
    """One JSON-able record per item: what the prompt states, what the oracle read, the match, the
    CLIP score (with `clip`) and the realism score (when given). A prompt that states no shapes object
    (e.g. a real photo caption) is not read by the oracle: ``oracle_applicable`` False, n_stated 0."""
    combos = list(heldout)
    scores = clip_score(clip, images, [g.prompt for g in items]).tolist() if clip is not None else [None] * len(items)
    records = []
    for i, (g, im) in enumerate(zip(items, images)):
        spec = expected_spec(g)
        applicable = spec.n_objects > 0  # the oracle reads shapes scenes; other prompts are not scored
        detected = oracle.read_image(im) if applicable else []
        m = oracle.match(spec, detected) if applicable else _not_scored()
        records.append({
            "name": g.name, "prompt": g.prompt, "seed": g.seed, "n_objects": spec.n_objects,
            "heldout": is_heldout(g, spec, combos), "expected": spec.to_dict(),
            "detected": [{**d.attributes(), "fit_error": round(d.fit_error, 4)} for d in detected],
            "attributes": m["attributes"], "n_correct": m["n_correct"], "n_stated": m["n_stated"],
            "full_match": m["full_match"], "oracle_applicable": applicable, "clip_score": scores[i],
            "realism": None if realism is None else float(realism[i]),
        })
    return records


def _in_group(r: Mapping[str, Any], group: str) -> bool:
    return {"all": True, "1 object": r["n_objects"] == 1, "2 objects": r["n_objects"] == 2,
            "held-out combos": r["heldout"]}[group]


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group (all / 1 object / 2 objects / held-out combos): n, n_oracle (prompts the oracle scored),
    full-match rate and per-attribute accuracy (correct / stated; None where no prompt states it) over
    those, mean CLIP and realism scores over all."""
    out = {}
    for group in GROUPS:
        rs = [r for r in records if _in_group(r, group)]
        scored = [r for r in rs if r.get("oracle_applicable", True)]
        acc = {}
        for k in MATCH_KEYS:
            c, t = sum(r["attributes"][k][0] for r in scored), sum(r["attributes"][k][1] for r in scored)
            acc[k] = c / t if t else None
        clip_vals = [r["clip_score"] for r in rs if r.get("clip_score") is not None]
        real_vals = [r["realism"] for r in rs if r.get("realism") is not None]
        out[group] = {"n": len(rs), "n_oracle": len(scored),
                      "full_match": (sum(r["full_match"] for r in scored) / len(scored)) if scored else None,
                      "accuracy": acc, "clip_score": float(np.mean(clip_vals)) if clip_vals else None,
                      "realism_mean": float(np.mean(real_vals)) if real_vals else None}
    return out


def oracle_status(records: Sequence[Mapping[str, Any]]) -> str:
    """"applicable" when every prompt states shapes objects; else a sentence saying how many prompts the
    shapes-only caption oracle could not score ("not applicable: ..." when it scored none)."""
    n = len(records)
    m = sum(not r.get("oracle_applicable", True) for r in records)
    if m == 0:
        return "applicable"
    if m == n:
        return (f"not applicable: none of the {n} prompts states a shapes-dataset object (shape, colour, size, "
                "position); the caption-match oracle only reads shapes scenes, so caption accuracy is not "
                "reported for these prompts. Use the CLIP score.")
    return (f"partial: {m} of {n} prompts state no shapes-dataset object and are not scored by the oracle; "
            f"full match and accuracies are over the other {n - m}.")


def realism_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, Any]:
    """FD, k-NN precision/recall and per-sample realism of `fake` against `real` features."""
    if len(fake) <= k or len(real) <= k:
        raise ValueError(f"realism metrics need more than k={k} samples per set, got {len(real)} real and "
                         f"{len(fake)} generated")
    pr = precision_recall(real, fake, k)
    return {"fd": frechet_distance(real, fake), "precision": pr["precision"], "recall": pr["recall"], "k": k,
            "realism": realism_score(real, fake, k).tolist(), "n_real": len(real), "n_fake": len(fake)}
