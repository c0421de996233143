"""Sampling, evals and the HTML report of `make demo` (tools/demo.py).

Systems compared on the same held-out prompts and the same per-image seeds (so the decoder noise is
shared and the comparison is paired):
  a_cascade         the full cascade: prior → decoder                   (pipe.generate)
  b_text_emb        the decoder fed the CLIP text embedding z_t         (image_embeds="text", §5.1)
  c_true_image_emb  the decoder fed the CLIP image embedding of a real render of the prompt's scene
                    (an upper bound for the prior)                      (image_embeds=clip.encode_image)
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from unclip.data import shapes as S
from unclip.diffusion import derive_seed
from unclip.evals import jobs
from unclip.evals.report import Report, image_grid_block, lines_block, loss_curves_blocks, table_block, text_block
from unclip.io import atomic_write_json
from unclip.metrics import wilson_interval
from unclip.models import PIPELINE_STAGES
from unclip.pipeline import UnCLIPPipeline

SYSTEMS = {
    "a_cascade": "(a) cascade: prior → decoder",
    "b_text_emb": "(b) decoder on the CLIP text embedding (no prior)",
    "c_true_image_emb": "(c) decoder on the true image embedding (upper bound for the prior)",
}
# The targets for (a) on the held-out one-object prompts.
TARGETS = {"color": 0.90, "shape": 0.80, "position": 0.80, "full_match": 0.60}
GAIN_TARGET = 2.0  # the conditioning-gain target in the object region, z_i and caption, t = 500 and 800
GAIN_KEYS = ("gain_region/image/t500", "gain_region/image/t800", "gain_region/text/t500", "gain_region/text/t800")
MATCH_KEYS = ("match/color", "match/shape", "match/position", "match/full")


def eval_prompts(n_one: int, n_two: int, heldout: str, seed: int) -> list[dict[str, Any]]:
    """Unseen prompts with their scenes: one-object scenes, half from the val split (attribute
    combinations absent from train) and half forcing a held-out combo; two-object val scenes.
    Captions are unique (the evals key images by (prompt, seed))."""
    items, seen = [], set()

    def take(split: str, n_objects: int, quota: int, **kw) -> None:
        ds = S.ShapesDataset(split, length=10**6, seed=seed + 7919, **kw)
        got, i = 0, 0
        while got < quota and i < 20000:
            scene = ds.scene(i)
            if len(scene.objects) == n_objects:
                cap = ds.caption(i, scene)
                if cap not in seen:
                    seen.add(cap)
                    items.append({"prompt": cap, "scene": scene.to_dict(), "split": split, "n_objects": n_objects})
                    got += 1
            i += 1

    take("heldout", 1, n_one // 2, heldout=heldout)
    take("val", 1, n_one - n_one // 2, heldout=heldout)
    take("val", 2, n_two, heldout=heldout)
    return items


def _settings(cfg: dict) -> dict:
    return {"preset": "fast", "decoder": {"steps": cfg["decoder_steps"], "guidance_scale": cfg["guidance"]},
            "batch_size": 16}


def _marker(out: Path, cfg: dict) -> dict:
    stamps = {s: (out / "pipeline" / s / "model.safetensors").stat().st_mtime
              for s in PIPELINE_STAGES
              if (out / "pipeline" / s / "model.safetensors").is_file()}
    return {"cfg": cfg, "weights": stamps}


def samples_done(out: Path, cfg: dict) -> bool:
    path = out / "samples" / "done.json"
    return path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(_marker(out, cfg)))


def _write(folder: Path, result, items, seeds, size: int, system: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    for i, (im, rec) in enumerate(zip(result.images, result.records)):
        it = items[i]
        im.save(folder / f"p{i:03d}.png")
        side = {**rec, "prompt": it["prompt"], "seed": int(seeds[i]), "size": size, "scene": it["scene"],
                "split": it["split"], "system": system}
        (folder / f"p{i:03d}.json").write_text(json.dumps(side, indent=1))


def sample_all(out: Path, cfg: dict, threads: int) -> dict:
    torch.set_num_threads(threads)
    b = cfg["budget"]
    items = eval_prompts(b["eval_one"], b["eval_two"], cfg["heldout"], cfg["seed"])
    atomic_write_json(out / "samples" / "prompts.json", items)
    pipe = UnCLIPPipeline.load(out / "pipeline", settings="fast", moderation=False)
    st = _settings(cfg)
    prompts = [it["prompt"] for it in items]
    seeds = [derive_seed(cfg["seed"], 1000 + i) % 2**31 for i in range(len(items))]
    real = [S.render(S.Scene.from_dict(it["scene"]), 64) for it in items]
    with torch.no_grad():
        z_real = pipe.clip.encode_image(real).float()
    times = {}
    for system, kw in (("a_cascade", {}), ("b_text_emb", {"image_embeds": "text"}),
                       ("c_true_image_emb", {"image_embeds": z_real})):
        t0 = time.perf_counter()
        print(f"  sampling {len(prompts)} held-out prompts at 64 px: {SYSTEMS[system]}", flush=True)
        r = pipe.generate(prompts, n=1, size=64, settings=st, sample_seeds=seeds, progress=True, **kw)
        _write(out / "samples" / system, r, items, seeds, 64, system)
        times[system] = round(time.perf_counter() - t0, 1)
    for size, n in ((256, b["grid_256"]), (1024, b["grid_1024"])):
        if size not in pipe.sizes or n <= 0:
            continue
        t0 = time.perf_counter()
        sub = items[:n]
        print(f"  sampling {len(sub)} cascade images at {size} px", flush=True)
        r = pipe.generate([it["prompt"] for it in sub], n=1, size=size, settings=st, sample_seeds=seeds[:n],
                          progress=True)
        _write(out / "samples" / f"grid{size}", r, sub, seeds[:n], size, "a_cascade")
        times[f"grid{size}"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "samples" / "done.json", _marker(out, cfg))
    return {"prompts": len(items), "sampling_seconds": times}


# ------------------------------------------------------------------------------------------ evals + report


def _loss_curves(state: dict) -> dict[str, list[tuple[float, float]]]:
    curves = {}
    for stage in PIPELINE_STAGES:
        run_dir = state["stages"].get(stage, {}).get("run_dir")
        if run_dir and (Path(run_dir) / "summary.json").is_file():
            curves[stage] = _smooth(json.loads((Path(run_dir) / "summary.json").read_text())["losses"])
    return curves


def _smooth(losses: list[float], points: int = 60) -> list[tuple[float, float]]:
    """Mean loss over windows of steps (at most `points` points), as (step, loss)."""
    losses = [x for x in losses if x == x]
    if not losses:
        return []
    w = max(1, len(losses) // points)
    return [(i + w, sum(losses[i:i + w]) / len(losses[i:i + w])) for i in range(0, len(losses), w)]


def _images(folder: Path) -> list[tuple[str, Any]]:
    from PIL import Image
    rows = []
    for png in sorted(folder.glob("*.png")):
        side = json.loads(png.with_suffix(".json").read_text())
        with Image.open(png) as im:
            rows.append((side["prompt"], im.convert("RGB")))
    return rows


def _target_text(key: str, target: float) -> str:
    return "> 50%" if key == "a_beats_b_lo" else f"≥ {target:.1f}×" if key in GAIN_KEYS else f"≥ {_pct(target)}"


def _pct(x):
    return "—" if x is None else f"{100 * x:.1f}%"


def headline(compare: dict, decoder_evals: list[dict] | None = None) -> dict[str, Any]:
    """The figures the issue sets targets for, with 95% Wilson intervals; with the decoder's last
    instrument reading, its conditioning-gain targets too."""
    out: dict[str, Any] = {}
    for name in SYSTEMS:
        recs = [r for r in compare["runs"][name]["records"] if r["n_objects"] == 1]
        fig = {"n": len(recs)}
        for attr in ("color", "shape", "size", "position"):
            c = sum(r["attributes"][attr][0] for r in recs)
            t = sum(r["attributes"][attr][1] for r in recs)
            fig[attr] = {"rate": c / t if t else None, "interval": list(wilson_interval(c, t)) if t else None, "n": t}
        full = sum(bool(r["full_match"]) for r in recs)
        fig["full_match"] = {"rate": full / len(recs) if recs else None,
                             "interval": list(wilson_interval(full, len(recs))) if recs else None, "n": len(recs)}
        groups = compare["runs"][name]["summary"]
        fig["groups"] = {g: {"n": s["n"], "full_match": s["full_match"], "accuracy": s["accuracy"],
                             "clip_score": s["clip_score"]} for g, s in groups.items()}
        out[name] = fig
    for p in compare["pairs"]:
        if p["judge"] == "caption" and {p["A"], p["B"]} == {"a_cascade", "b_text_emb"}:
            flip = p["A"] != "a_cascade"
            rate, lo, hi = (1 - p["rate"], 1 - p["hi"], 1 - p["lo"]) if flip else (p["rate"], p["lo"], p["hi"])
            out["a_vs_b_caption"] = {"rate": rate, "lo": lo, "hi": hi, "n": p["n"],
                                     "wins": p["losses"] if flip else p["wins"],
                                     "losses": p["wins"] if flip else p["losses"], "ties": p["ties"]}
    a = out["a_cascade"]
    out["targets"] = {k: {"target": v, "measured": a[k]["rate"], "met": a[k]["rate"] is not None and a[k]["rate"] >= v}
                      for k, v in TARGETS.items()}
    wr = out.get("a_vs_b_caption", {})
    out["targets"]["a_beats_b_lo"] = {"target": 0.5, "measured": wr.get("lo"), "met": (wr.get("lo") or 0) > 0.5}
    last = (decoder_evals or [{}])[-1]
    for key in GAIN_KEYS:
        if key in last:
            out["targets"][key] = {"target": GAIN_TARGET, "measured": last[key], "met": last[key] >= GAIN_TARGET}
    return out


def evaluate_all(out: Path, cfg: dict, state: dict) -> dict:
    from unclip.clip import FrozenCLIP
    report_path = out / "report.html"
    for old in (report_path, out / "report.json"):
        old.unlink(missing_ok=True)
    report = Report(report_path, title="unclip demo — unCLIP on shapes, trained on this CPU")
    report.add("Summary", [text_block("(filled in below)")])
    curves = _loss_curves(state)
    rows = []
    for stage in ("clip", "embed", "prior", "decoder", "sr256", "sr1024", "sample"):
        s = state["stages"].get(stage, {})
        rows.append([stage, s.get("steps", ""), s.get("samples_seen", ""), s.get("final_loss", s.get("loss_last", "")),
                     s.get("seconds", "")])
    clip_r = state["stages"].get("clip", {}).get("val_retrieval", {})
    probe = state["stages"].get("embed", {}).get("z_i_probe", {})
    probe_blocks = [table_block(
        ["attribute", "z_i linear probe (val, one object)", "chance", "classes"],
        [[a, _pct(r["accuracy"]), _pct(r["chance"]), r["classes"]] for a, r in probe.items()],
        note="What the image embedding z_i carries: a softmax regression from z_i to each attribute, fit on "
                "train one-object scenes and scored on val. An attribute near chance cannot reach the decoder "
                "through z_i (only through the caption tokens), whatever the prior does.")] if probe else []
    report.add("Training", [
        table_block(["stage", "steps", "samples", "final loss", "wall s (last run that did it)"], rows),
        *learning_blocks(state["stages"].get("decoder", {}).get("evals", [])),
        text_block(f"CLIP val top-1 retrieval: image→text {_pct(clip_r.get('image_to_text'))}, text→image "
                   f"{_pct(clip_r.get('text_to_image'))} (chance {_pct(clip_r.get('chance'))})."),
        *probe_blocks,
        *loss_curves_blocks(curves),
    ])
    for size in (256, 1024):
        imgs = _images(out / "samples" / f"grid{size}") if (out / "samples" / f"grid{size}").is_dir() else []
        if imgs:
            report.add(f"Cascade samples at {size} px", [image_grid_block(
                [f"{size} px"], [(p, [[im]]) for p, im in imgs], max_size=min(size, 512),
                caption="prior → decoder → sr256" + (" → sr1024" if size == 1024 else "") + "; held-out prompts")])
    clip = FrozenCLIP.load(out / "pipeline" / "clip")
    compare = jobs.compare_job({n: out / "samples" / n for n in SYSTEMS}, report_path, out / "evals" / "compare.json",
                               grid_prompts=16, n_boot=500, clip=clip, n_reference=200, heldout=cfg["heldout"])
    h = headline(compare, state["stages"].get("decoder", {}).get("evals"))
    h["eval_settings"] = _settings(cfg)
    atomic_write_json(out / "evals" / "demo_metrics.json", h)
    t = h["targets"]
    trows = [[k, _target_text(k, v["target"]), f"{v['measured']:.2f}×" if k in GAIN_KEYS else _pct(v["measured"]),
              "yes" if v["met"] else "NO"] for k, v in t.items()]
    wr = h.get("a_vs_b_caption", {})
    report.add("Summary", [
        text_block("Systems, all on the same held-out prompts and per-image seeds: "
                   + "; ".join(f"{k} = {v}" for k, v in SYSTEMS.items())
                   + f". Eval prompts: {h['a_cascade']['groups']['all']['n']} (one-object: half val-split "
                   f"attribute combinations, half forcing a held-out combo {cfg['heldout']!r} never rendered in train; "
                   f"plus two-object val scenes). Decoder: DPM-Solver++(2M) {cfg['decoder_steps']} steps, guidance "
                   f"{cfg['guidance']}; prior: fast preset."),
        table_block(["target (cascade, one-object held-out prompts)", "target", "measured", "met"], trows,
                    note=f"caption-judge win rate of (a) over (b): {_pct(wr.get('rate'))} "
                         f"[{_pct(wr.get('lo'))}, {_pct(wr.get('hi'))}] (95% Wilson; ties ½) "
                         f"over {wr.get('n')} prompts."),
        table_block(["system", "one-object n", "colour", "shape", "size", "position", "full match"],
                    [[SYSTEMS[n], h[n]["n"], *(_pct(h[n][a]["rate"]) for a in ("color", "shape", "size", "position",
                                                                                "full_match"))] for n in SYSTEMS]),
    ])
    return {"headline": h, "report": str(report_path)}




def learning_blocks(evals: list[dict]) -> list[dict]:
    """The decoder's learning instrument along training (unclip.evals.conditioning): conditioning gain in the
    object region and oracle match of samples from the true z_i + caption, against samples seen."""
    if not evals:
        return []
    last = evals[-1]
    return [
        text_block("Does the decoder use its conditioning? Conditioning gain = teacher-forced x0 error with a "
                   "shuffled condition / with the right one, inside the objects' pixels (1 = ignored): z_i with "
                   "the caption dropped, the caption with z_i dropped. Match = oracle reading of decoder samples "
                   "from the true z_i + caption of one-object val scenes."),
        table_block(["after samples", *GAIN_KEYS, *MATCH_KEYS],
                    [[e["samples_seen"], *(f"{e[k]:.2f}" if k in e else "" for k in GAIN_KEYS),
                      *(_pct(e.get(k)) for k in MATCH_KEYS)] for e in evals]),
        lines_block("decoder conditioning gain (object region)", {k.split("/", 1)[1]: [(e["samples_seen"], e[k])
                    for e in evals if k in e] for k in GAIN_KEYS}, xlabel="samples seen", ylabel="gain"),
        lines_block("decoder oracle match (true z_i + caption)", {k.split("/")[1]: [(e["samples_seen"], e[k])
                    for e in evals if k in e] for k in MATCH_KEYS}, xlabel="samples seen", ylabel="rate"),
    ] if any(k in last for k in GAIN_KEYS + MATCH_KEYS) else []


def print_summary(out: Path, metrics: dict | None, wall: float, ran: dict) -> None:
    print(f"\nunclip demo finished in {wall:.0f} s  (stages: " + ", ".join(f"{k} {v}" for k, v in ran.items()) + ")")
    if metrics:
        h = metrics["headline"]
        print(f"{'system (one-object held-out prompts)':<58} {'colour':>7} {'shape':>7} {'pos':>7} {'full':>7}")
        for n, label in SYSTEMS.items():
            print(f"{label[:58]:<58} " + " ".join(f"{_pct(h[n][a]['rate']):>7}"
                                                  for a in ("color", "shape", "position", "full_match")))
        wr = h.get("a_vs_b_caption", {})
        print(f"win rate (a) over (b), caption judge: {_pct(wr.get('rate'))} "
              f"[{_pct(wr.get('lo'))}, {_pct(wr.get('hi'))}]")
        print("targets: " + ", ".join(f"{k} {'met' if v['met'] else 'NOT met'}" for k, v in h["targets"].items()))
        print(f"report: {metrics['report']}")
    else:
        print(f"report: {out / 'report.html'}")


def write_bench(path: Path, out: Path, state: dict, metrics: dict, wall: float, args) -> None:
    import os
    h = metrics["headline"]
    doc = {"host": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": args.threads,
           "minutes_budget": args.minutes, "wall_seconds": wall,
           "last_run_stages": state.get("last_run", {}).get("stages"),
           "stage_seconds": {k: v.get("seconds") for k, v in state["stages"].items()},
           "budget": state.get("budget"), "targets": h["targets"], "a_vs_b_caption": h.get("a_vs_b_caption"),
           "one_object": {n: {a: h[n][a] for a in ("n", "color", "shape", "size", "position", "full_match")}
                          for n in SYSTEMS},
           "groups": {n: h[n]["groups"] for n in SYSTEMS}, "eval_settings": h.get("eval_settings"),
           "clip_val_retrieval": state["stages"].get("clip", {}).get("val_retrieval"),
           "z_i_probe": state["stages"].get("embed", {}).get("z_i_probe")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc)
