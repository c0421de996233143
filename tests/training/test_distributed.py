"""A real 2-process torchrun run of the tiny decoder (DDP over gloo): replicas stay identical, loss falls."""
from __future__ import annotations

import json
import subprocess
import textwrap

from .conftest import REPO, TORCHRUN, overrides_for, subprocess_env


def test_torchrun_two_processes_ddp_gloo(tiny_data, tmp_path):
    run_dir = tmp_path / "ddp"
    script = tmp_path / "ddp_job.py"
    overrides = overrides_for("decoder", tiny_data, run_dir, "batch_size=8", "total_samples=96",
                              "stage.optim.lr=2e-3", "checkpoint.every_steps=100", "trainer=cpu")
    script.write_text(textwrap.dedent(f"""
        import json, os, torch
        torch.set_num_threads(1)
        from unclip.training import compose_config, train
        summary = train(compose_config({overrides!r}))
        with open(os.path.join({str(tmp_path)!r}, "rank" + os.environ["RANK"] + ".json"), "w") as f:
            json.dump(summary, f)
    """))
    proc = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--standalone", str(script)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == 2 and r0["strategy"] == "ddp" and r0["steps"] == 12 and r0["samples_seen"] == 96
    assert r0["param_digest"] == r1["param_digest"]  # identical replicas after 12 optimizer steps
    assert r0["losses"] == r1["losses"]  # the logged loss is the mean over ranks
    losses = r0["losses"]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert (run_dir / "config.yaml").is_file() and (run_dir / "export" / "decoder" / "model.safetensors").is_file()
