"""End to end: generated-image directories -> caption match, realism, judges -> JSON + one HTML report."""
import importlib.util
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from unclip.data import shapes as S
from unclip.evals.generated import align_runs, load_generated
from unclip.evals.jobs import compare_job
from unclip.evals.report import Report, lines_block, loss_curves_blocks, text_block

ROOT = Path(__file__).resolve().parents[2]
N = 8


def _write_run(directory: Path, kind: str, n: int = N) -> Path:
    """`n` items on val scenes: "real" renders, "noise" images, or "swap" (real, other scene's image)."""
    directory.mkdir(parents=True)
    ds = S.ShapesDataset("val", length=n, seed=11)
    g = np.random.default_rng(0)
    for i in range(n):
        scene = ds.scene(i)
        if kind == "real":
            im = S.render(scene, 64)
        elif kind == "swap":
            im = S.render(ds.scene((i + 1) % n), 64)
        else:
            im = Image.fromarray(g.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        im.save(directory / f"{i:03d}.png")
        meta = {"prompt": ds.caption(i), "seed": i, "size": 64, "sampler": "ddim", "steps": 27}
        if i % 2:
            meta["scene"] = scene.to_json()  # half with the scene JSON, half parsed from the prompt
        (directory / f"{i:03d}.json").write_text(json.dumps(meta))
    return directory


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h2, self.imgs, self.svgs, self._in_h2 = [], 0, 0, False

    def handle_starttag(self, tag, attrs):
        self._in_h2 = tag == "h2"
        self.imgs += tag == "img" and dict(attrs).get("src", "").startswith("data:image/png;base64,")
        self.svgs += tag == "svg"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def _load_entry(name):
    spec = importlib.util.spec_from_file_location(f"evals_{name}", ROOT / "evals" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_eval_end_to_end_report(tmp_path):
    real, noise, swap = (_write_run(tmp_path / k, k) for k in ("real", "noise", "swap"))
    out = tmp_path / "out"
    entry = _load_entry("caption_match")
    with initialize_config_dir(str(ROOT / "configs" / "eval"), version_base="1.3"):
        cfg = compose("caption_match", [f"images_dir={real}", "name=real", f"out_dir={out}", "n_reference=12",
                                        "heldout=star:red"])
        with pytest.raises(Exception, match="nope"):  # the schema rejects unknown keys
            compose("caption_match", ["clip.nope=1"])
    res = entry.run(cfg)
    assert res["summary"]["all"]["full_match"] == 1.0 and res["summary"]["all"]["n"] == N
    assert res["summary"]["1 object"]["n"] + res["summary"]["2 objects"]["n"] == N
    assert res["realism"]["precision"] >= 0 and np.isfinite(res["realism"]["fd"])
    assert json.loads((out / "caption_match-real.json").read_text())["summary"]["all"]["full_match"] == 1.0

    cmp = compare_job({"real": real, "noise": noise, "swap": swap}, out / "report.html", out / "compare.json",
                      clip=None, features=_pixel_features, n_reference=12, n_boot=50)
    cap = {(p["A"], p["B"]): p for p in cmp["pairs"] if p["judge"] == "caption"}
    assert cap[("real", "noise")]["rate"] == 1.0 and cap[("real", "noise")]["lo"] > 0.6
    bt = {r["system"]: r["score"] for r in cmp["bradley_terry"]["caption"]}
    assert bt["real"] > bt["swap"] and bt["real"] > bt["noise"]
    assert cmp["runs"]["noise"]["summary"]["all"]["full_match"] == 0.0

    report = Report(out / "report.html")
    report.add("Training", loss_curves_blocks({"prior": [(s, 1 / (s + 1)) for s in range(50)],
                                               "decoder": [(s, 2 - s / 100) for s in range(0, 100, 5)]})
               + [lines_block("empty", {"x": []}), text_block("loss curves of the run")])
    page = _Collect()
    page.feed((out / "report.html").read_text())
    for heading in ("Caption match — real", "Photorealism — real", "Samples — real",
                    "Pairwise preference — real vs noise vs swap", "Caption match — real vs noise vs swap",
                    "Photorealism — real vs noise vs swap", "Samples — real vs noise vs swap", "Training"):
        assert heading in page.h2, (heading, page.h2)
    assert page.imgs >= N + 3 * N and page.svgs >= 5
    sections = json.loads((out / "report.json").read_text())["sections"]
    assert len(sections) == len(page.h2) == 8
    entry.run(cfg)  # re-running a job replaces its sections instead of duplicating them
    assert len(json.loads((out / "report.json").read_text())["sections"]) == 8


def _pixel_features(images):
    import torch
    return torch.stack([torch.from_numpy(np.asarray(im.resize((8, 8)), np.float32).ravel() / 255) for im in images])


def test_compare_rejects_mismatched_runs(tmp_path):
    a, b = _write_run(tmp_path / "a", "real"), _write_run(tmp_path / "b", "real", n=N - 1)
    with pytest.raises(ValueError, match="do not share prompts/seeds.*1 \\(prompt, seed\\) pairs only in 'a'"):
        align_runs({"a": load_generated(a), "b": load_generated(b)})
    (b / "000.json").unlink()  # a PNG without a sidecar (the sampling jobs' contact sheets) is skipped
    assert [g.name for g in load_generated(b)] == [g.name for g in load_generated(a)][1:N - 1]
    (b / "001.json").write_text('{"prompt": "x"}')
    (b / "000.png").unlink()
    with pytest.raises(ValueError, match="lacks \\['seed', 'size'\\]"):
        load_generated(b)


def test_compare_entry_point_config(tmp_path):
    entry = _load_entry("compare")
    with initialize_config_dir(str(ROOT / "configs" / "eval"), version_base="1.3"):
        cfg = compose("compare", [f"+runs={{a: {tmp_path}/a, b: {tmp_path}/b}}", "n_boot=10"])
        assert dict(cfg.runs) == {"a": f"{tmp_path}/a", "b": f"{tmp_path}/b"} and cfg.json.endswith("compare.json")
        with pytest.raises(ValueError, match="at least two systems"):
            entry.run(compose("compare", [f"+runs={{a: {tmp_path}/a}}"]))
