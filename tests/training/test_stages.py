"""Each stage trains a few steps from its config (Hydra compose API) and exports a loadable release;
the train.py entry point runs as a subprocess; wandb writes an offline run directory."""
from __future__ import annotations

import subprocess

import pytest
from omegaconf import OmegaConf

from unclip.clip import FrozenCLIP
from unclip.models import load_stage
from unclip.training import assemble_pipeline, train

from .conftest import PYTHON, REPO, TRAIN, compose_cfg, overrides_for, subprocess_env


@pytest.mark.parametrize("stage", ["clip", "prior", "decoder", "sr256", "sr1024"])
def test_stage_trains_and_exports(stage, tiny_data, tmp_path):
    export_dir = tmp_path / "pipeline"
    extra = (["sample.every_steps=0", "sample.n=2", "sample.steps=2"]
             if stage in ("clip", "prior", "sr256", "decoder") else [])
    summary = train(compose_cfg(overrides_for(stage, tiny_data, tmp_path / "run", f"export_dir={export_dir}", *extra)))
    assert summary["steps"] >= 2 and all(map(lambda x: x == x, summary["losses"]))  # finite
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.stage.name == stage and "${" not in OmegaConf.to_yaml(saved)  # resolved
    release = export_dir / stage
    if stage == "clip":
        FrozenCLIP.load(release)
        assert "clip/val_image_to_text" in summary["eval"]
    else:
        spec, _ = load_stage(release)
        assert spec.stage == stage
    if stage == "prior":
        assert len(spec.extra["analytic_gamma"]["64"]) == 64 and spec.extra["normalizer"] == "stats"
        assert "prior/cos_to_true_zi" in summary["eval"]
    if stage in ("decoder", "sr256"):
        assert (tmp_path / "run" / "samples").is_dir() and summary["eval"]["grid"].endswith(".png")


def test_assemble_pipeline(tiny_data, tmp_path):
    releases = {}
    for stage in ("prior", "decoder"):
        s = train(compose_cfg(overrides_for(stage, tiny_data, tmp_path / stage, "total_samples=8")))
        releases[stage] = s["exports"][0]
    releases["clip"] = tiny_data["clip"]
    out = assemble_pipeline(tmp_path / "pipe", releases)
    assert sorted(p.name for p in out.iterdir()) == ["clip", "decoder", "prior"]
    with pytest.raises(ValueError, match="missing"):
        assemble_pipeline(tmp_path / "other", {"prior": releases["prior"]})


def test_entry_point_subprocess_with_wandb_offline(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    args = overrides_for("prior", tiny_data, run_dir, "logger=wandb", "logger.every_steps=1")
    proc = subprocess.run([PYTHON, TRAIN, *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), list((run_dir / "wandb").iterdir())
    records = next(runs[0].glob("run-*.wandb")).read_bytes()  # the log `wandb sync` uploads
    for key in (b"train/loss", b"train/samples_per_s", b"train/lr", b"mem/cpu_peak_rss_gib"):
        assert key in records, key


def test_typo_in_entry_point_fails_at_start(tmp_path):
    proc = subprocess.run([PYTHON, TRAIN, "stage=decoder", "trainer.precison=bf16", f"run_dir={tmp_path}"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "precison" in proc.stderr
