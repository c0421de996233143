"""Fine-tuning from a release (model.init_from): a decoder and an upsampler converted from a (tiny) Karlo
train on our shards, starting from exactly the released weights."""
from __future__ import annotations

import pytest
import torch

from unclip.convert.karlo import convert_karlo
from unclip.models import load_stage
from unclip.training import train

from ..convert.karlo_tiny import TinyKarlo, build, save
from .conftest import compose_cfg, overrides_for


@pytest.fixture(scope="module")
def karlo_pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("karlo-ft")
    save(build(TinyKarlo()), root / "src")
    return convert_karlo(root / "src", root / "pipe")


@pytest.mark.parametrize("stage", ["decoder", "sr256"])
def test_fine_tune_starts_from_the_release(tiny_data, karlo_pipe, tmp_path, stage):
    release = karlo_pipe / stage
    base = overrides_for(stage, tiny_data, tmp_path / "run", f"model.init_from={release}",
                         f"clip.path={karlo_pipe / 'clip'}", "total_samples=8", "stage.ema.decay=0",
                         "sample.every_steps=0", "sample.steps=2", "sample.n=2", "sample.gain_n=4", "sample.match_n=2")
    frozen = train(compose_cfg(base + ["stage.optim.lr=0", f"run_dir={tmp_path / 'frozen'}"]))
    _, released = load_stage(release)
    _, exported = load_stage(frozen["exports"][0])
    assert frozen["steps"] == 2 and all(torch.isfinite(torch.tensor(frozen["losses"])))
    for key, value in released.state_dict().items():  # lr 0: the run kept exactly the released weights
        assert torch.equal(exported.state_dict()[key], value), key
    tuned = train(compose_cfg(base + [f"run_dir={tmp_path / 'tuned'}"]))
    _, moved = load_stage(tuned["exports"][0])
    assert any(not torch.equal(moved.state_dict()[k], v) for k, v in released.state_dict().items())
    with pytest.raises(ValueError, match="holds a .* release, this run trains"):
        train(compose_cfg(overrides_for("sr256" if stage == "decoder" else "decoder", tiny_data, tmp_path / "x",
                                        f"model.init_from={release}", f"clip.path={karlo_pipe / 'clip'}")))
