"""Eval jobs over directories of generated images; the Hydra entry points in evals/ only wire these.

`evaluate_run` scores one directory (oracle caption match, CLIP score, FD / precision / recall /
realism and, with `fid_weights`, Inception FID against a reference set: shapes renders by default,
or real photos from a folder or webdataset shards, see `unclip.evals.reference`);
`caption_match_job` writes its JSON and appends report sections; `compare_job` scores two or more
directories on the same prompts and seeds, runs the pairwise judges, and reports win rates (Wilson
intervals) and, for more than two systems, a Bradley–Terry ranking with bootstrap intervals over prompts.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unclip.data.shapes import parse_heldout
from unclip.evals import judges, scoring
from unclip.evals.generated import align_runs, load_generated
from unclip.evals.reference import ReferenceSet, load_reference
from unclip.evals.report import Report, bars_block, image_grid_block, table_block, text_block
from unclip.io import atomic_write_json
from unclip.metrics import bradley_terry_bootstrap, win_rate

log = logging.getLogger(__name__)
TIE_NOTE = "Win rate of A = (wins + ½·ties) / prompts; 95% Wilson score interval; ties count as half a win."


@dataclasses.dataclass
class RealismSetup:
    """What every run of a job is scored against, prepared once: the reference set, the feature
    extractor with the reference features, and the Inception FID with the reference statistics."""
    reference: ReferenceSet
    features: scoring.FeatureFn | None = None
    reference_features: torch.Tensor | None = None
    fid: Any = None  # unclip.evals.fid.InceptionFID


def _common_size(images: Sequence[Image.Image]) -> tuple[int, int]:
    return Counter(im.size for im in images).most_common(1)[0][0]


def prepare_realism(size: tuple[int, int], clip=None, features: scoring.FeatureFn | None = None,
                    n_reference: int = 200, reference_seed: int = 0, reference: Any = None,
                    fid_weights: str | None = None, k: int = 3) -> RealismSetup | None:
    """Load the reference set at the generated `size` (w, h) and compute its features / FID statistics;
    None when there is nothing to compute (no feature extractor and no `fid_weights`)."""
    features = features or (scoring.clip_image_features(clip) if clip is not None else None)
    if features is None and not fid_weights:
        return None
    ref = load_reference(reference, n_reference, size, reference_seed, min_images=k + 1)
    log.info("realism reference set: %s", ref.description)
    setup = RealismSetup(ref, features, features(ref.images) if features is not None else None)
    if fid_weights:
        from unclip.evals.fid import InceptionFID

        setup.fid = InceptionFID(fid_weights)
        setup.fid.set_reference(ref.images)
    return setup


def realism_of(images: Sequence[Image.Image], setup: RealismSetup, k: int = 3) -> dict[str, Any]:
    """FD / precision / recall / per-image realism over the features (when there is an extractor),
    Inception FID (when set up) and the reference set's description, of `images` against it."""
    out: dict[str, Any] = {"fd": None, "precision": None, "recall": None, "k": k, "realism": None,
                           "n_real": len(setup.reference.images), "n_fake": len(images)}
    if setup.features is not None:
        out.update(scoring.realism_metrics(setup.reference_features, setup.features(images), k))
    if setup.fid is not None:
        out["fid_inception"] = setup.fid(images)
    out["reference"] = setup.reference.description
    return out


def _check_fid(fid_weights: str | None) -> None:
    if fid_weights:
        from unclip.evals.fid import check_fid_weights

        check_fid_weights(fid_weights)


def evaluate_run(directory: str | Path, clip=None, features: scoring.FeatureFn | None = None,
                 n_reference: int = 200, reference_seed: int = 0, heldout: Any = None, k: int = 3,
                 reference: Any = None, fid_weights: str | None = None,
                 setup: RealismSetup | None = None) -> dict[str, Any]:
    """Score every image of `directory`. Realism metrics need a feature extractor (default: CLIP image
    features when `clip` is given) or `fid_weights`, and more than k images; they are skipped (None)
    otherwise. `setup` (from `prepare_realism`) reuses a reference set prepared for several runs."""
    _check_fid(fid_weights)
    items = load_generated(directory)
    images = [g.image() for g in items]
    realism = None
    if len(items) > k:
        setup = setup or prepare_realism(_common_size(images), clip, features, n_reference, reference_seed,
                                         reference, fid_weights, k)
        realism = realism_of(images, setup, k) if setup is not None else None
    records = scoring.score_items(items, images, clip, realism and realism["realism"], parse_heldout(heldout))
    status = scoring.oracle_status(records)
    if status != "applicable":
        log.warning("caption-match oracle on %s: %s", directory, status)
    return {"directory": str(directory), "records": records, "summary": scoring.summarize(records),
            "oracle": status,
            "realism": None if realism is None else {k_: v for k_, v in realism.items() if k_ != "realism"},
            "items": items, "images": images}


def _json_part(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("items", "images")}


def _caption_table(name: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    cols = ["group", "n", "oracle-scored", "full match", *scoring.MATCH_KEYS, "CLIP score"]
    rows = [[g, s["n"], s.get("n_oracle", s["n"]), _num(s["full_match"]),
             *(_num(s["accuracy"][k]) for k in scoring.MATCH_KEYS), _num(s["clip_score"])] for g, s in summary.items()]
    return table_block(cols, rows, note=f"{name}: accuracy = correct / stated over the attributes each prompt "
                       "states; count = exactly as many objects as asked; full match = every stated attribute "
                       "of every object right and the count right; '—' where no prompt states it. Oracle-scored: "
                       "prompts that name shapes-dataset objects (the oracle reads only those); CLIP score over all.")


def _num(v: Any) -> Any:
    return float("nan") if v is None else v


def _grid(names: Sequence[str], results: Sequence[Mapping[str, Any]], max_prompts: int) -> dict[str, Any]:
    by_prompt: dict[str, list[list]] = {}
    for j, res in enumerate(results):
        for g, im, _r in zip(res["items"], res["images"], res["records"]):
            cells = by_prompt.setdefault(g.prompt, [[] for _ in names])
            cells[j].append(im)
    rows = [(p, cells) for p, cells in itertools.islice(by_prompt.items(), max_prompts)]
    return image_grid_block(names, rows, caption="One row per prompt; each cell holds that system's seeds.")


def _realism_rows(names: Sequence[str], results: Sequence[Mapping[str, Any]], fid: bool) -> list[list[Any]]:
    rows = []
    for n, res in zip(names, results):
        r, s = res["realism"], res["summary"]["all"]
        rows.append([n, s["n"], *([_num(r and r.get("fid_inception"))] if fid else []), _num(r and r["fd"]),
                     _num(r and r["precision"]), _num(r and r["recall"]), _num(s["realism_mean"])])
    return rows


def _realism_table(names, results, k: int) -> dict[str, Any]:
    """One row per system; the note names the reference set the numbers are against."""
    fid = any(r["realism"] and r["realism"].get("fid_inception") is not None for r in results)
    note = (f"Against {_reference_names(results)}; k-NN manifolds with k={k} (Kynkäänniemi et al. "
            "2019); FD over the extractor's features (FD_CLIP with CLIP image features).")
    if fid:
        note += (" FID (Inception): torchmetrics FrechetInceptionDistance, torch-fidelity InceptionV3 pool "
                 "features (2048), from the local fid_weights file.")
    return table_block(["system", "images", *(["FID (Inception)"] if fid else []), "FD (features)", "precision",
                        "recall", "mean realism"], _realism_rows(names, results, fid), note=note)


def _reference_names(results: Sequence[Mapping[str, Any]]) -> str:
    refs = sorted({r["realism"]["reference"] for r in results if r["realism"] and r["realism"].get("reference")})
    return "; ".join(refs) or "the reference set"


def _oracle_blocks(names: Sequence[str], results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A note per run whose prompts the shapes-only caption oracle could not (all) score."""
    return [text_block(f"{n}: caption-match oracle {r['oracle']}") for n, r in zip(names, results)
            if r["oracle"] != "applicable"]


def caption_match_job(directory: str | Path, name: str, report_path: str | Path, out_json: str | Path,
                      grid_prompts: int = 8, **kwargs) -> dict[str, Any]:
    """Evaluate one directory, write `out_json`, and append caption-match and realism sections."""
    res = evaluate_run(directory, **kwargs)
    atomic_write_json(out_json, {"name": name, **_json_part(res)})
    s = res["summary"]
    report = Report(report_path)
    attrs = [k for k in scoring.MATCH_KEYS if any(s[g]["accuracy"][k] is not None for g in s)]
    report.add(f"Caption match — {name}", [
        text_block(f"{len(res['records'])} images from {directory}; oracle read-back of shape, colour, size and "
                   "position (unclip.evals.oracle)."),
        *_oracle_blocks([name], [res]),
        _caption_table(name, s),
        *([bars_block(f"caption match per attribute — {name}", attrs,
                      {g: [_num(s[g]["accuracy"][a]) for a in attrs] for g in s if s[g]["n"]}, ylabel="accuracy")]
          if attrs else []),
    ])
    report.add(f"Photorealism — {name}", [_realism_table([name], [res], kwargs.get("k", 3))]
               if res["realism"] else [text_block("Skipped: no feature extractor (nor fid_weights) or too few "
                                                  "images.")])
    report.add(f"Samples — {name}", [_grid([name], [res], grid_prompts)])
    return _json_part(res)


def compare_job(directories: Mapping[str, str | Path], report_path: str | Path, out_json: str | Path,
                grid_prompts: int = 8, n_boot: int = 1000, **kwargs) -> dict[str, Any]:
    """Compare systems {name: directory} on the same prompts and seeds with the caption and realism judges."""
    names = list(directories)
    runs = {n: load_generated(d) for n, d in directories.items()}
    keys = align_runs(runs)  # fails early, naming the mismatch
    _check_fid(kwargs.get("fid_weights"))
    prep = {a: kwargs[a] for a in ("clip", "features", "n_reference", "reference_seed", "reference", "fid_weights",
                                   "k") if a in kwargs}
    setup = prepare_realism(runs[names[0]][0].image().size, **prep)  # one reference set for every system
    results = [evaluate_run(directories[n], setup=setup, **kwargs) for n in names]
    recs = [{(r["prompt"], r["seed"]): r for r in res["records"]} for res in results]
    pairs, verdicts_by_judge = [], {}
    for judge_name, judge in judges.JUDGES.items():
        per_prompt_wins = None
        for i, j in itertools.combinations(range(len(names)), 2):
            prompts, v = judges.per_prompt(keys, [judge(recs[i][key], recs[j][key]) for key in keys])
            wr = win_rate(v)
            pairs.append({"judge": judge_name, "A": names[i], "B": names[j], **wr})
            if per_prompt_wins is None:
                per_prompt_wins = np.zeros((len(prompts), len(names), len(names)))
            for p, verdict in enumerate(v):
                a, b = {"A": (1, 0), "B": (0, 1), "tie": (0.5, 0.5)}[verdict]
                per_prompt_wins[p, i, j] += a
                per_prompt_wins[p, j, i] += b
        verdicts_by_judge[judge_name] = per_prompt_wins
    ranking = {}
    if len(names) > 2:
        for judge_name, w in verdicts_by_judge.items():
            bt = bradley_terry_bootstrap(w, n_boot=n_boot)
            ranking[judge_name] = [{"system": n, "score": float(bt["score"][s]), "lo": float(bt["lo"][s]),
                                    "hi": float(bt["hi"][s]), "rank_first": float(bt["rank_first"][s])}
                                   for s, n in enumerate(names)]
    out = {"systems": names, "directories": {n: str(d) for n, d in directories.items()}, "pairs": pairs,
           "bradley_terry": ranking, "runs": {n: _json_part(r) for n, r in zip(names, results)}}
    atomic_write_json(out_json, out)
    _report_compare(Report(report_path), names, results, pairs, ranking, grid_prompts, kwargs.get("k", 3))
    return out


def _report_compare(report: Report, names, results, pairs, ranking, grid_prompts: int, k: int) -> None:
    title = " vs ".join(names)
    rows = [[p["judge"], p["A"], p["B"], p["wins"], p["losses"], p["ties"], p["n"], p["rate"], p["lo"], p["hi"]]
            for p in pairs]
    labels = [f"{p['A']} vs {p['B']}" for p in pairs if p["judge"] == "caption"]
    blocks = [
        table_block(["judge", "A", "B", "A wins", "B wins", "ties", "prompts", "win rate A", "95% lo", "95% hi"],
                    rows, note=TIE_NOTE + " Caption judge: oracle full match, then attributes right, then CLIP "
                    "score (CLIP score only where the oracle does not apply). Photorealism judge: realism score "
                    f"against {_reference_names(results)}."),
        bars_block("win rate of A", labels,
                   {j: [p["rate"] for p in pairs if p["judge"] == j] for j in judges.JUDGES},
                   {j: [(p["lo"], p["hi"]) for p in pairs if p["judge"] == j] for j in judges.JUDGES},
                   reference=0.5, ylabel="win rate (ties = ½)"),
    ]
    for judge_name, rank in ranking.items():
        blocks.append(table_block(["system", "BT log-strength", "95% lo", "95% hi", "P(ranked first)"],
                                  [[r["system"], r["score"], r["lo"], r["hi"], r["rank_first"]]
                                   for r in sorted(rank, key=lambda r: -r["score"])],
                                  note=f"Bradley–Terry ({judge_name} judge), MM algorithm (Hunter 2004); "
                                       "percentile bootstrap over prompts."))
    report.add(f"Pairwise preference — {title}", blocks)
    attrs = list(scoring.MATCH_KEYS)
    report.add(f"Caption match — {title}", [
        *_oracle_blocks(names, results),
        table_block(["system", "images", "full match", *attrs, "CLIP score"],
                    [[n, r["summary"]["all"]["n"], _num(r["summary"]["all"]["full_match"]),
                      *(_num(r["summary"]["all"]["accuracy"][a]) for a in attrs),
                      _num(r["summary"]["all"]["clip_score"])]
                     for n, r in zip(names, results)]),
        bars_block("caption match per attribute", attrs,
                   {n: [_num(r["summary"]["all"]["accuracy"][a]) for a in attrs] for n, r in zip(names, results)},
                   ylabel="accuracy"),
        *[_caption_table(n, r["summary"]) for n, r in zip(names, results)],
    ])
    report.add(f"Photorealism — {title}", [_realism_table(names, results, k)])
    report.add(f"Samples — {title}", [_grid(names, results, grid_prompts)])
