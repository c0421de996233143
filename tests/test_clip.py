"""FrozenCLIP: shapes, normalisation, masks, preprocessing paths, freezing, save/load, weight files."""

import json
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from unclip.clip import FrozenCLIP, WeightsNotLocalError, resolve_model_config

CAPTIONS = ["a red star", "a small blue circle at the top left of a large green square", "a"]

# An even smaller config than unclip-tiny, given as a JSON path (exercises the path route).
MICRO_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return FrozenCLIP.create("unclip-tiny")


@pytest.fixture(scope="module")
def micro_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "micro.json"
    path.write_text(json.dumps(MICRO_CFG))
    return path


def _random_images(n, size, seed=0):
    g = np.random.default_rng(seed)
    return [Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_properties_and_config_registration(clip):
    assert (clip.embed_dim, clip.token_width, clip.context_length, clip.image_size) == (128, 128, 32, 64)
    assert "unclip-tiny" in open_clip.list_models() and "unclip-small" in open_clip.list_models()
    name, cfg = resolve_model_config("unclip-small")
    assert name == "unclip-small" and cfg["vision_cfg"]["image_size"] == 64


def test_encode_text_shapes_norm_mask(clip):
    emb, tokens, mask = clip.encode_text(CAPTIONS)
    assert emb.shape == (3, 128) and tokens.shape == (3, 32, 128) and mask.shape == (3, 32)
    assert emb.dtype == tokens.dtype == torch.float32 and mask.dtype == torch.bool
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    ids = clip.tokenize(CAPTIONS)
    lengths = mask.sum(1)
    assert torch.equal(lengths, (ids != 0).sum(1))
    assert lengths[1] > lengths[0] > lengths[2] >= 3  # SOT + word + EOT
    assert mask[:, 0].all()
    for row, n in zip(mask, lengths):  # real tokens form a prefix
        assert row[:n].all() and not row[n:].any()


def test_long_caption_truncated(clip):
    _, _, mask = clip.encode_text(["star " * 200])
    assert mask.all()  # fills the whole context, EOT kept at the end
    assert clip.tokenize(["star " * 200])[0, -1] == clip.tokenizer.eot_token_id


def test_token_features_are_ln_final_output(clip):
    """Per-token features are ln_final's output: projecting the EOT feature gives the pooled embedding."""
    emb, tokens, mask = clip.encode_text(CAPTIONS)
    eot = mask.sum(1) - 1
    pooled = tokens[torch.arange(3), eot] @ clip.model.text_projection
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1), emb, atol=1e-5, rtol=1e-5)


def test_deterministic_and_batch_independent(clip):
    a = clip.encode_text(CAPTIONS)
    b = clip.encode_text(CAPTIONS, batch_size=1)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    images = _random_images(3, 64)
    torch.testing.assert_close(clip.encode_image(images), clip.encode_image(images, batch_size=2),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(clip.encode_image(images), clip.encode_image(images))


def test_encode_image_pil_vs_tensor(clip):
    images = _random_images(4, 64)
    z_pil = clip.encode_image(images)
    assert z_pil.shape == (4, 128)
    torch.testing.assert_close(z_pil.norm(dim=-1), torch.ones(4))
    x01 = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images])
    torch.testing.assert_close(clip.encode_image(x01), z_pil, atol=1e-4, rtol=1e-4)
    # value_range (-1, 1) is the same picture as (0, 1)
    torch.testing.assert_close(clip.encode_image(x01 * 2 - 1, value_range=(-1, 1)), z_pil, atol=1e-4, rtol=1e-4)


def test_encode_image_resizes_tensors_like_pil(clip):
    """A larger smooth image: PIL's bicubic resize and torch's antialiased bicubic agree closely."""
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    arr = np.stack([xx, yy, 0.5 * (xx + yy)], -1)
    im = Image.fromarray((arr * 255).round().astype(np.uint8))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float()[None] / 255
    cos = (clip.encode_image([im]) * clip.encode_image(x)).sum()
    assert cos > 0.999
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        clip.encode_image(torch.zeros(2, 64, 64))


def test_frozen(clip):
    assert not clip.training and not clip.model.training
    assert all(not p.requires_grad for p in clip.parameters())
    parent = torch.nn.Sequential(clip)
    parent.train()
    assert not clip.training and not any(m.training for m in clip.modules())
    emb, tokens, _ = clip.encode_text(["a red star"])
    assert not emb.requires_grad and not tokens.requires_grad
    # outputs are ordinary tensors (not inference tensors): usable as inputs to a trained layer
    layer = torch.nn.Linear(128, 1)
    layer(emb).sum().backward()
    assert layer.weight.grad is not None


def test_autocast_bf16_outputs_float32(micro_json):
    clip = FrozenCLIP.create(micro_json, autocast_dtype=torch.bfloat16)
    emb, tokens, mask = clip.encode_text(["a red star"])
    assert emb.dtype == tokens.dtype == torch.float32
    assert clip.encode_image(torch.rand(1, 3, 32, 32)).dtype == torch.float32


def test_stats_and_save_load_roundtrip(clip, tmp_path):
    images = _random_images(6, 64, seed=1)
    z = clip.encode_image(images)
    assert not bool(clip.has_stats)
    with pytest.raises(RuntimeError, match="statistics"):
        clip.normalize_image_emb(z)
    mean, std = clip.compute_stats(z)
    torch.testing.assert_close(mean, z.mean(0))
    torch.testing.assert_close(std, z.std(0))
    torch.testing.assert_close(clip.denormalize_image_emb(clip.normalize_image_emb(z)), z)
    try:
        clip.save(tmp_path / "clip")
        assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == ["config.yaml", "model.safetensors"]
        loaded = FrozenCLIP.load(tmp_path / "clip")
        assert loaded.arch == "unclip-tiny" and bool(loaded.has_stats)
        assert torch.equal(loaded.image_emb_mean, clip.image_emb_mean)
        assert torch.equal(loaded.image_emb_std, clip.image_emb_std)
        assert torch.equal(loaded.encode_image(images), z)
        for x, y in zip(loaded.encode_text(CAPTIONS), clip.encode_text(CAPTIONS)):
            assert torch.equal(x, y)
        # our model.safetensors is also accepted as a weights file
        again = FrozenCLIP.create("unclip-tiny", weights=tmp_path / "clip" / "model.safetensors")
        assert torch.equal(again.encode_image(images), z) and bool(again.has_stats)
    finally:  # the fixture is shared: leave it without stats
        clip.has_stats.fill_(False)


def test_load_without_configs_folder(micro_json, tmp_path):
    """config.yaml carries the full model config: a JSON arch that is gone still loads."""
    clip = FrozenCLIP.create(micro_json)
    clip.save(tmp_path / "saved")
    micro_json.rename(micro_json.with_suffix(".moved"))
    try:
        loaded = FrozenCLIP.load(tmp_path / "saved")
    finally:
        micro_json.with_suffix(".moved").rename(micro_json)
    assert (loaded.embed_dim, loaded.token_width, loaded.context_length, loaded.image_size) == (32, 48, 16, 32)
    assert torch.equal(loaded.encode_text(["a"])[1], clip.encode_text(["a"])[1])


def test_open_clip_state_dict_file(micro_json, tmp_path):
    src = FrozenCLIP.create(micro_json)
    torch.save(src.model.state_dict(), tmp_path / "open_clip.pt")
    dst = FrozenCLIP.create(micro_json, weights=tmp_path / "open_clip.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(dst.encode_image(x), src.encode_image(x))
    assert torch.equal(dst.encode_text(["a red star"])[0], src.encode_text(["a red star"])[0])
    with pytest.raises(RuntimeError, match="do not match arch 'unclip-tiny'"):
        FrozenCLIP.create("unclip-tiny", weights=tmp_path / "open_clip.pt")


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope" / "clip.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        FrozenCLIP.create("unclip-tiny", weights=missing)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        FrozenCLIP.load(tmp_path)


def test_pretrained_tag_fails_fast_without_network():
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotLocalError) as err:
        FrozenCLIP.create("ViT-B-32", weights="laion2b_s34b_b79k")
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "laion2b_s34b_b79k" in msg and "ViT-B-32" in msg
    assert "does not download" in msg and "local file path" in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(WeightsNotLocalError, match="does not download"):
        FrozenCLIP.create("hf-hub:timm/ViT-B-16-SigLIP")


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown CLIP arch 'unclip-nonexistent'"):
        FrozenCLIP.create("unclip-nonexistent")


def test_open_clip_routine_info_lines_stay_out_of_the_logs(caplog):
    import logging

    caplog.set_level(logging.INFO)
    torch.manual_seed(0)
    FrozenCLIP.create("unclip-tiny").tokenize(["a red star"])
    assert not [r for r in caplog.records if "open_clip" in r.pathname and r.levelno < logging.WARNING]
    logging.warning("a root warning still shows")
    assert "a root warning still shows" in caplog.text
