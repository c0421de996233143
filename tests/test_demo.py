"""`make demo` end to end at a tiny budget: every stage's release, the samples, the evals and the report
exist, and a rerun skips the finished stages."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--minutes", "0.1", "--set", "decoder_samples=64", "--set", "prior_samples=256", "--set", "grid_1024=0",
        "--set", "grid_256=2", "--set", "eval_one=4", "--set", "eval_two=2", "--set", "gain_n=8", "--set", "match_n=4",
        "--decoder-steps", "4"]


def _demo():
    spec = importlib.util.spec_from_file_location("unclip_demo", REPO / "tools" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_end_to_end_and_resume(tmp_path, capsys):
    demo = _demo()
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), *TINY]) == 0
    for stage in ("clip", "prior", "decoder", "sr256", "sr1024"):
        assert (out / "pipeline" / stage / "model.safetensors").is_file(), stage
        assert (out / "pipeline" / stage / "config.yaml").is_file(), stage
    from unclip.clip import FrozenCLIP
    from unclip.moderation_calibration import load_calibration
    thresholds = load_calibration(out / "pipeline" / "clip", FrozenCLIP.load(out / "pipeline" / "clip"))
    assert thresholds and len(thresholds) == 4  # the served pipeline's image filter is calibrated, so on
    for system in ("a_cascade", "b_text_emb", "c_true_image_emb"):
        pngs = sorted((out / "samples" / system).glob("*.png"))
        assert len(pngs) == 6, system
        side = json.loads(pngs[0].with_suffix(".json").read_text())
        assert {"prompt", "seed", "size", "scene"} <= set(side) and side["size"] == 64
    assert len(list((out / "samples" / "grid256").glob("*.png"))) == 2
    metrics = json.loads((out / "evals" / "demo_metrics.json").read_text())
    assert {"a_cascade", "b_text_emb", "c_true_image_emb", "a_vs_b_caption", "targets"} <= set(metrics)
    assert 0.0 <= metrics["a_vs_b_caption"]["lo"] <= metrics["a_vs_b_caption"]["hi"] <= 1.0
    assert (out / "evals" / "compare.json").is_file()
    html = (out / "report.html").read_text()
    assert "Summary" in html and "Training" in html and "<svg" in html and "data:image/png;base64" in html
    assert "z_i linear probe" in html  # what the image embedding carries, per attribute
    probe = json.loads((out / "demo_state.json").read_text())["stages"]["embed"]["z_i_probe"]
    assert set(probe) == {"shape", "color", "size", "position"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_test"] > 0 for r in probe.values())
    evals = json.loads((out / "demo_state.json").read_text())["stages"]["decoder"]["evals"]  # the instrument ran
    assert len(evals) == 1 and {"gain_region/image/t800", "gain_region/text/t500", "match/full"} <= set(evals[0])
    assert "decoder conditioning gain" in html and "gain_region/image/t800" in metrics["targets"]
    first = capsys.readouterr().out
    assert "report:" in first

    t0 = time.perf_counter()
    assert demo.main(["--out", str(out), *TINY]) == 0
    second = capsys.readouterr().out
    for stage in ("clip", "embed", "prior", "decoder", "sr256", "sr1024", "sample"):
        assert f"{stage}: done already, skipped" in second, stage
    assert time.perf_counter() - t0 < 30
    state = json.loads((out / "demo_state.json").read_text())
    assert state["last_run"]["stages"]["decoder"] == "skipped"
