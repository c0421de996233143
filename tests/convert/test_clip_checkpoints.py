"""CLIP weights from elsewhere: OpenAI's TorchScript checkpoints through open_clip's layout, with the QuickGELU /
GELU trap caught; a transformers CLIPModel folder imported into FrozenCLIP with the same embeddings."""
from __future__ import annotations

import json

import pytest
import torch

from unclip.clip import FrozenCLIP, build_open_clip, resolve_model_config
from unclip.convert.hf_clip_import import import_hf_clip


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """A TorchScript archive of a small QuickGELU CLIP, as OpenAI released theirs (modules keep class names)."""
    root = tmp_path_factory.mktemp("jit")
    _, cfg = resolve_model_config("unclip-tiny")
    quick = dict(cfg, quick_gelu=True)
    (root / "tiny-quickgelu.json").write_text(json.dumps(quick))
    (root / "tiny-gelu.json").write_text(json.dumps(dict(cfg, quick_gelu=False)))
    torch.manual_seed(0)
    model = build_open_clip("tiny-quickgelu", quick, {"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}).eval()
    torch.jit.save(torch.jit.script(model), str(root / "tiny.pt"))
    return root, model


def test_openai_torchscript_checkpoint_loads(scripted):
    root, model = scripted
    clip = FrozenCLIP.create(root / "tiny-quickgelu.json", weights=root / "tiny.pt")
    ids = clip.tokenize(["a red star", "a blue circle"])
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(clip.model.encode_text(ids), model.encode_text(ids), atol=1e-5)
        assert torch.allclose(clip.model.encode_image(pixels), model.encode_image(pixels), atol=1e-5)


def test_quickgelu_mismatch_names_the_fix(scripted):
    root, _ = scripted
    with pytest.raises(ValueError, match="trained with QuickGELU but arch 'tiny-gelu' uses GELU: set quick_gelu: true"):
        FrozenCLIP.create(root / "tiny-gelu.json", weights=root / "tiny.pt")


def test_transformers_clip_folder_imports(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    vision = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
              "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu"}
    hf = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    clip = FrozenCLIP.load(import_hf_clip(tmp_path / "hf", tmp_path / "clip"))
    assert clip.embed_dim == 24 and clip.unit_embeddings
    ids = clip.tokenize(["a red star", ""])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_t, ref_i = hf.get_text_features(input_ids=ids), hf.get_image_features(pixel_values=pixels)
        ref_t = getattr(ref_t, "pooler_output", ref_t)
        ref_i = getattr(ref_i, "pooler_output", ref_i)
        assert torch.allclose(clip.model.encode_text(ids), ref_t, atol=1e-5)
        assert torch.allclose(clip.model.encode_image(pixels), ref_i, atol=1e-5)
    assert float(clip.model.logit_scale) == pytest.approx(float(hf.logit_scale))


def test_a_whole_clip_folder_gives_only_its_vision_tower(tmp_path):
    """`--clip CLIP_DIR` for Karlo: the image tower comes from the CLIPModel folder, the text tower stays Karlo's."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModelWithProjection

    from unclip.convert.karlo import convert_clip

    text_cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "projection_dim": 24}
    torch.manual_seed(0)
    karlo_text = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg)).eval()
    karlo_text.save_pretrained(tmp_path / "text_encoder")
    torch.manual_seed(1)  # other weights for the CLIPModel's own text half
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    hf = CLIPModel(CLIPConfig(text_config=text_cfg, vision_config=vision, projection_dim=24)).eval()
    hf.save_pretrained(tmp_path / "clip")
    clip = convert_clip(tmp_path / "text_encoder", tmp_path / "clip")
    ids = clip.tokenize(["a red star"])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(clip.model.encode_text(ids), karlo_text(input_ids=ids).text_embeds, atol=1e-5)
        ref_i = hf.get_image_features(pixel_values=pixels)
        assert torch.allclose(clip.model.encode_image(pixels), getattr(ref_i, "pooler_output", ref_i), atol=1e-5)
    assert not clip.unit_embeddings
