"""Every config group composes and instantiates; typos fail naming the key; small loop pieces."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from unclip.diffusion import derive_seed
from unclip.models import PIPELINE_STAGES
from unclip.training import batch_arithmetic, lr_factor

from .conftest import REPO, compose_cfg


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml"))


@pytest.mark.parametrize("stage", PIPELINE_STAGES)
def test_every_stage_composes_and_builds_its_network(stage):
    from unclip.models import StageSpec

    cfg = compose_cfg([f"stage={stage}", "experiment=shapes_tiny"])
    assert cfg.stage.name == stage and cfg.data.shards
    if stage != "clip":
        for preset in _choices("model"):
            spec = StageSpec(stage=stage, preset=compose_cfg([f"stage={stage}", f"model={preset}"]).model.preset)
            assert spec.fields  # the preset exists for the stage
        import torch

        with torch.device("meta"):
            StageSpec(stage=stage, preset="tiny").build_model()


@pytest.mark.parametrize("group", ["trainer", "logger", "model", "data", "experiment"])
def test_every_group_choice_composes(group):
    for choice in _choices(group):
        cfg = compose_cfg([f"{group}={choice}"])
        assert cfg.run_dir.startswith("runs/")


def test_paper_hyperparameters_are_the_stage_defaults():
    prior, decoder = compose_cfg(["stage=prior"]).stage, compose_cfg(["stage=decoder"]).stage
    assert ((prior.optim.lr, prior.optim.betas[1], prior.optim.eps, prior.optim.weight_decay)
            == (1.1e-4, 0.96, 1e-6, 6e-2))
    assert ((decoder.optim.lr, decoder.optim.betas[1], decoder.optim.eps, decoder.optim.weight_decay)
            == (1.2e-4, 0.999, 1e-8, 0))
    assert decoder.loss == "hybrid" and prior.loss == "mse"
    assert compose_cfg(["stage=sr256"]).stage.corruption == "blur"
    assert compose_cfg(["stage=sr1024"]).stage.corruption == "bsr"


def test_every_stage_yaml_sets_the_recipe_fields_the_schema_requires():
    from omegaconf import OmegaConf

    for stage in PIPELINE_STAGES:  # optimizer and EMA numbers have no schema default: the stage YAML is their one place
        assert OmegaConf.missing_keys(compose_cfg([f"stage={stage}"]).stage) == set(), stage


@pytest.mark.parametrize("override,key", [("trainer.micro_bach=2", "micro_bach"), ("stage.optim.lrr=1", "lrr"),
                                          ("batchsize=4", "batchsize")])
def test_a_typo_fails_naming_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg([override])
    text = str(err.value) + str(err.value.__cause__)
    assert key in text


def test_a_forced_unknown_key_fails_before_training():
    from unclip.training.config import validate_config

    with pytest.raises(ValueError, match="projct"):
        validate_config(compose_cfg(["+logger.projct=x"]))


def test_unknown_group_choice_fails():
    with pytest.raises(Exception, match="stage"):
        compose_cfg(["stage=decodr"])


def test_batch_arithmetic_and_schedule():
    assert batch_arithmetic(32, 2, 4) == (4, 4)
    assert batch_arithmetic(32, 2, None) == (16, 1)
    with pytest.raises(ValueError, match="micro_batch"):
        batch_arithmetic(30, 4, None)
    with pytest.raises(ValueError, match="micro_batch"):
        batch_arithmetic(32, 2, 5)
    assert lr_factor(0, 100, 10, "constant") == pytest.approx(0.1) and lr_factor(50, 100, 10, "constant") == 1
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert derive_seed(0, 0, 5) == derive_seed(0, 0, 5) != derive_seed(0, 1, 5) != derive_seed(0, 0, 6)


@pytest.mark.parametrize("override, message", [
    ("stage.optim.schedule=linear", "stage.optim.schedule='linear': expected one of"),
    ("checkpoint.every_steps=-5", "checkpoint.every_steps=-5: expected ≥ 0"),
    ("sample.every_steps=-2", "sample.every_steps=-2: expected ≥ -1"),
    ("batch_size=0", "batch_size=0: expected > 0"),
])
def test_values_the_run_would_trip_on_later_fail_at_start(override, message):
    from unclip.training.config import validate_config

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_config(compose_cfg(["stage=decoder", override]))


def test_an_all_garbage_prior_data_set_names_the_data(tmp_path):
    import webdataset as wds

    from unclip.training import train

    with wds.TarWriter(str(tmp_path / "junk-000000.tar")) as sink:
        for i in range(4):
            sink.write({"__key__": f"{i:04d}", "text_emb.npy": b"not npy", "txt": "x"})
    with pytest.raises(ValueError, match=r"no readable embedding sample \(4 bad samples skipped\)"):
        train(compose_cfg(["stage=prior", "logger=none", f"run_dir={tmp_path / 'run'}",
                           f"data.shards={tmp_path}", f"data.val_shards={tmp_path}"]))
