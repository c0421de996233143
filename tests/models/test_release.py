"""Stage releases: config.yaml + model.safetensors round trip and clear errors."""
import pytest
import torch

from unclip.models.release import StageSpec, load_stage, save_stage


@pytest.mark.parametrize("stage", ["prior", "decoder", "sr256", "sr1024"])
def test_release_round_trip_restores_identical_weights(tmp_path, stage):
    torch.manual_seed(0)
    spec = StageSpec(stage, "tiny")
    model = spec.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # zero-initialised outputs would hide a load that did nothing
    save_stage(tmp_path / stage, spec, model)
    spec2, model2 = load_stage(tmp_path / stage)
    assert spec2.to_dict() == spec.to_dict()
    for (name, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not model2.training


def test_paper_diffusion_defaults_and_overrides(tmp_path):
    assert StageSpec("prior").mean_type == "x0" and StageSpec("sr1024").schedule == "linear"
    spec = StageSpec("decoder", "tiny", overrides={"learned_sigma": False}, mean_type="v")
    assert spec.learned_variance is False and spec.denoiser(spec.build_model()).mean_type.value == "v"
    save_stage(tmp_path / "d", spec, spec.build_model())
    assert load_stage(tmp_path / "d")[0].overrides == {"learned_sigma": False}


def test_release_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'upsampler'"):
        StageSpec("upsampler")
    with pytest.raises(ValueError, match="unknown decoder preset field"):
        StageSpec("decoder", overrides={"chanels": 3})
    with pytest.raises(FileNotFoundError, match="missing config.yaml"):
        load_stage(tmp_path)
    save_stage(tmp_path / "p", StageSpec("prior"), StageSpec("prior").build_model())
    bad = StageSpec("prior", overrides={"width": 64, "num_heads": 2})
    (tmp_path / "p" / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(bad.to_dict()))
    with pytest.raises(ValueError, match="does not match the prior network"):
        load_stage(tmp_path / "p")


def test_truncated_weights_name_the_file(tmp_path):
    from unclip.clip import FrozenCLIP

    spec = StageSpec("prior", "tiny", overrides={"clip_embed_dim": 32, "clip_token_width": 32,
                                                 "clip_context_length": 8})
    save_stage(tmp_path / "prior", spec, spec.build_model())
    weights = tmp_path / "prior" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"prior/model\.safetensors cannot be read \(truncated or corrupt\?\)"):
        load_stage(tmp_path / "prior")
    torch.manual_seed(0)
    FrozenCLIP.create("unclip-tiny").save(tmp_path / "clip")
    clip_weights = tmp_path / "clip" / "model.safetensors"
    clip_weights.write_bytes(clip_weights.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"clip/model\.safetensors cannot be read"):
        FrozenCLIP.load(tmp_path / "clip")
    with pytest.raises(ValueError, match=r"clip/model\.safetensors cannot be read"):
        FrozenCLIP.create("unclip-tiny", clip_weights)
