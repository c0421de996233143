"""The Hydra sampling jobs, run small: PNGs, sidecars, contact sheet, reproduction, typos, rank split."""
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from PIL import Image

from sample import edit, generate, interpolate, outpaint, vary

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs" / "sample")
STEPS = ["settings.prior.steps=3", "settings.decoder.steps=3", "settings.sr256.steps=1", "progress=false"]


def _cfg(name, overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose(config_name=name, overrides=overrides + STEPS)


def test_generate_job_writes_pngs_sidecars_sheet_and_reproduces(pipeline_dir, tmp_path, monkeypatch):
    out = tmp_path / "gen"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red star\n# comment\n\na blue circle\na green square\n")
    cfg = _cfg("generate", [f"pipeline_dir={pipeline_dir}", f"out={out}", f"prompts_file={prompts}", "n=2",
                            "prompts_per_call=2"])
    paths = generate.run(cfg)
    assert len(paths) == 6 and (out / "p000000_sheet.png").is_file()
    side = json.loads(paths[3].with_suffix(".json").read_text())
    assert side["prompt"] == "a blue circle" and side["prompt_index"] == 1 and side["pipeline_dir"]
    again = generate.run(_cfg("generate", [f"pipeline_dir={pipeline_dir}", f"out={out}",
                                           f"reproduce={paths[3].with_suffix('.json')}"]))
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in (paths[3], again[0]))
    assert np.abs(a - b).max() <= 2
    # torchrun: rank 1 of 2 takes prompts 1, 3, ... with the same seeds as the single-process run
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ranked = generate.run(_cfg("generate", [f"pipeline_dir={pipeline_dir}", f"out={tmp_path / 'r1'}",
                                            f"prompts_file={prompts}", "n=2"]))
    assert [p.name for p in ranked] == ["p000001_000.png", "p000001_001.png"]
    c = np.asarray(Image.open(ranked[1]), dtype=np.int16)
    assert np.abs(c - a).max() <= 2


def test_typos_fail():
    with pytest.raises(ConfigCompositionException):
        _cfg("generate", ["pipeline_dir=x", "promts=[a]"])
    with pytest.raises(ConfigCompositionException):
        _cfg("generate", ["pipeline_dir=x", "settings.decoder.stepz=3"])


def test_image_jobs(pipeline_dir, tmp_path):
    src = tmp_path / "src.png"
    Image.new("RGB", (64, 64), (120, 40, 40)).save(src)
    mask = tmp_path / "mask.png"
    m = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, 32, 32))
    m.save(mask)
    common = [f"pipeline_dir={pipeline_dir}", f"out={tmp_path / 'o'}", f"image={src}", "size=64"]
    assert len(vary.run(_cfg("vary", common + ["n=2"]))) == 2
    assert len(edit.run(_cfg("edit", common + [f"mask={mask}", "prompt='a red star'", "n=1"]))) == 1
    assert len(outpaint.run(_cfg("outpaint", common + ["prompt='a red star'", "right=16"]))) == 1
    assert len(interpolate.run(_cfg("interpolate", common + [f"image_b={src}", "steps=2"]))) == 2
    assert len(interpolate.run(_cfg("interpolate", common + ["caption='a red square'", "new_caption='a blue square'",
                                                              "thetas=[0.0,0.5]"]))) == 2


def test_prompts_per_call_batches_prompts_without_changing_images_or_sidecars(pipeline_dir, tmp_path):
    """Three prompts in one pipeline call or one call each: the same files, the same sidecars (seeds follow
    each prompt's line number), the same images up to batch-size rounding."""
    runs = {}
    for per_call in (1, 3):
        out = tmp_path / f"per{per_call}"
        runs[per_call] = generate.run(_cfg("generate", [f"pipeline_dir={pipeline_dir}", f"out={out}", "n=2",
                                                        "prompts=[a red star,a blue circle,a green square]",
                                                        f"prompts_per_call={per_call}"]))
    assert [p.name for p in runs[1]] == [p.name for p in runs[3]] and len(runs[1]) == 6
    for a, b in zip(runs[1], runs[3]):
        side_a, side_b = (json.loads(p.with_suffix(".json").read_text()) for p in (a, b))
        assert side_a == side_b
        diff = np.abs(np.asarray(Image.open(a), dtype=np.int16) - np.asarray(Image.open(b), dtype=np.int16))
        assert diff.max() <= 2
