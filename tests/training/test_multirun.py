"""A Hydra multirun (sweep) gives every job its own run directory, so no job resumes or overwrites another's."""
from __future__ import annotations

import json
import subprocess

from .conftest import PYTHON, REPO, TRAIN, overrides_for, subprocess_env


def test_each_multirun_job_gets_its_own_run_dir(tiny_data, tmp_path):
    args = [a for a in overrides_for("prior", tiny_data, tmp_path / "sweep", "total_samples=8",
                                     "checkpoint.resume=true") if not a.startswith("stage.gamma")]
    proc = subprocess.run([PYTHON, TRAIN, "-m", *args, "seed=0,1", "stage.gamma_samples=8",
                           f"hydra.sweep.dir={tmp_path / 'hydra'}"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((tmp_path / "sweep" / str(n) / "summary.json").read_text()) for n in (0, 1)]
    assert [s["steps"] for s in summaries] == [2, 2]  # each trained its own steps: none adopted the other
    assert summaries[0]["param_digest"] != summaries[1]["param_digest"]  # seeds 0 and 1
