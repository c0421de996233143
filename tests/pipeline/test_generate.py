"""Text → image: shapes and sizes, per-sample seeds, records that remake the image, presets, dtypes."""
import json

import numpy as np
import pytest
import torch

from unclip.pipeline import PRESETS, GenerationResult, InputError, PipelineSettings, UnCLIPPipeline

from .conftest import FAST


def _arr(im):
    return np.asarray(im, dtype=np.int16)


def test_generate_shapes_order_and_records(pipe):
    r = pipe.generate(["a red star", "a blue circle"], n=2, size=64, seed=3)
    assert isinstance(r, GenerationResult) and len(r) == 4
    assert all(im.mode == "RGB" and im.size == (64, 64) for im in r.images)
    assert [rec["prompt"] for rec in r.records] == ["a red star"] * 2 + ["a blue circle"] * 2
    rec = r.records[0]
    assert rec["mode"] == "generate" and rec["seed"] == 3 and rec["size"] == 64
    assert rec["pipeline_dir"] == pipe.pipeline_dir and rec["settings"]["decoder"]["steps"] == 4
    json.dumps(r.records)  # sidecars are JSON


@pytest.mark.parametrize("size", [256, 1024])
def test_generate_upsampled_sizes(pipe, size):
    assert pipe.sizes == (64, 256, 1024)
    r = pipe.generate("a red star", n=1, size=size, seed=0)
    assert r.images[0].size == (size, size)


def test_same_seed_same_image_whatever_the_batch(pipe):
    many = pipe.generate("a red star", n=3, seed=7, settings={"batch_size": 3})
    one = pipe.generate("a red star", n=1, seed=7)
    split = pipe.generate("a red star", n=3, seed=7, settings={"batch_size": 2})
    for a, b in [(many.images[0], one.images[0]), (many.images[2], split.images[2])]:
        assert np.abs(_arr(a) - _arr(b)).max() <= 2  # float reassociation across batch shapes only
    assert np.abs(_arr(many.images[0]) - _arr(many.images[1])).mean() > 5  # images of a call differ
    other = pipe.generate("a red star", n=1, seed=8)
    assert np.abs(_arr(other.images[0]) - _arr(one.images[0])).mean() > 5


def test_record_remakes_the_image(pipe):
    r = pipe.generate(["a red star", "a green square"], n=2, seed=11)
    again = pipe.reproduce(json.loads(json.dumps(r.records[3])))
    assert np.abs(_arr(again.images[0]) - _arr(r.images[3])).max() <= 2


def test_callback_and_progress(pipe):
    seen = []
    pipe.generate("a red star", seed=0, size=256, progress=True, callback=lambda s, i, n, x: seen.append((s, i, n)))
    stages = {s for s, _, _ in seen}
    assert stages == {"prior", "decoder", "sr256"}
    assert ("decoder", 3, 4) in seen


def test_paper_preset_uses_analytic_gamma_and_candidates(pipeline_dir):
    assert PRESETS["paper"].prior.steps == 64 and PRESETS["paper"].decoder.steps == 250
    assert PRESETS["paper"].sr256.steps == 27 and PRESETS["paper"].sr1024.steps == 15
    p = UnCLIPPipeline.load(pipeline_dir, settings="paper", moderation=False)
    st = {"prior": {"steps": 25}, "decoder": {"steps": 3, "sampler": "ddpm"}}  # Γ is stored for 25 and 64 steps
    r = p.generate("a red star", seed=0, settings={"preset": "paper", **st})
    assert (r.records[0]["settings"]["prior"]["n_candidates"] == 2
            and r.records[0]["settings"]["prior"]["variance"] == "auto")
    r2 = p.generate("a red star", seed=0,
                    settings={"preset": "paper", **st, "prior": {"steps": 25, "variance": "analytic"}})
    assert np.abs(_arr(r.images[0]) - _arr(r2.images[0])).max() <= 2  # auto = analytic when Γ is stored


def test_bf16_runs(pipeline_dir):
    p = UnCLIPPipeline.load(pipeline_dir, dtype=torch.bfloat16, settings={"preset": "fast", **FAST})
    r = p.generate("a red star", seed=0)
    assert r.images[0].size == (64, 64) and np.asarray(r.images[0]).std() > 0


def test_settings_roundtrip_and_typos():
    s = PRESETS["fast"].replace({"decoder": {"steps": 9}})
    assert PipelineSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="stepz"):
        PRESETS["fast"].replace({"decoder": {"stepz": 9}})


def test_image_embeds_replace_the_prior(pipe):
    """§5.1 ablations: the decoder fed z_t ("text") or given image embeddings skips the prior."""
    seen = []
    r = pipe.generate(["a red star", "a blue circle"], seed=4, image_embeds="text",
                      callback=lambda s, i, n, x: seen.append(s))
    assert "prior" not in seen and "decoder" in seen and r.records[0]["image_embeds"] == "text"
    again = pipe.reproduce(r.records[1])
    assert np.abs(_arr(again.images[0]) - _arr(r.images[1])).max() <= 2
    z = torch.nn.functional.normalize(torch.randn(2, pipe.clip.embed_dim), dim=-1)
    fed = []  # the z_i the decoder network is called with (observed, not replaced)
    hook = pipe.stages["decoder"].model.register_forward_pre_hook(
        lambda mod, args, kwargs: fed.append(kwargs["image_emb"][:2].clone()), with_kwargs=True)
    try:
        a = pipe.generate(["a red star", "a red star"], seed=4, image_embeds=z,
                          settings={"decoder": {"guidance_scale": 1.0}})
    finally:
        hook.remove()
    assert a.records[0]["image_embeds"] == "given"
    assert fed and all(torch.allclose(f, z) for f in fed)
    with pytest.raises(InputError, match="image_embeds"):
        pipe.generate("a red star", image_embeds=torch.zeros(3, pipe.clip.embed_dim))


def test_image_stages_clamp_pred_x0_and_keep_known_pixels():
    """Image stages sample with pred_x0 clamped to [−1, 1]; edits then write the known pixels back."""
    from unclip.models.decoder import image_x0_transform
    x0 = torch.tensor([[[[-3.0, 0.5], [2.0, -0.25]]]])
    assert torch.equal(image_x0_transform()(x0), torch.tensor([[[[-1.0, 0.5], [1.0, -0.25]]]]))
    known, keep = torch.full_like(x0, 0.75), torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert torch.equal(image_x0_transform(known, keep)(x0), torch.tensor([[[[0.75, 0.5], [1.0, 0.75]]]]))



def test_save_mirrors_load_and_output_types(pipeline_dir, tmp_path):
    import numpy as np
    import torch

    from unclip.pipeline import UnCLIPPipeline
    pipe = UnCLIPPipeline.load(pipeline_dir, moderation=False)
    copy = UnCLIPPipeline.load(pipe.save(tmp_path / "copy"), moderation=False)
    assert sorted(copy.stages) == sorted(pipe.stages)
    a = pipe.generate("a red star", n=2, size=64, seed=3)
    b = copy.generate("a red star", n=2, size=64, seed=3)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
    arr, ten = a.images_as("np"), a.images_as("pt")
    assert arr.shape == (2, 64, 64, 3) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    assert ten.shape == (2, 3, 64, 64) and torch.equal(ten, torch.from_numpy(arr).permute(0, 3, 1, 2))
    assert np.array_equal(np.round(arr[0] * 255).astype(np.uint8), np.asarray(a.images_as("pil")[0]))
    with pytest.raises(ValueError, match="output_type"):
        a.images_as("latent")
    with pytest.raises(FileExistsError, match="not empty"):
        pipe.save(tmp_path / "copy")
    with pytest.raises(ValueError, match="float16 runs on CUDA only"):
        UnCLIPPipeline.load(pipeline_dir, dtype=torch.float16)


def test_given_latents_are_the_decoders_starting_noise(pipe):
    import numpy as np
    import torch

    from unclip.errors import InputError
    x_t = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    kw = dict(n=2, size=64, image_embeds="text", settings={"decoder": {"sampler": "ddim"}})  # no prior noise
    a = pipe.generate("a red star", seed=1, latents=x_t, **kw)
    b = pipe.generate("a red star", seed=2, latents=x_t, **kw)
    c = pipe.generate("a red star", seed=2, **kw)
    same = [np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images)]
    assert all(same)  # other seeds, same latents: the same images (DDIM, η = 0)
    assert not np.array_equal(np.asarray(b.images[0]), np.asarray(c.images[0]))  # the seeds' own noise differs
    with pytest.raises(InputError, match=r"latents must be \[2, 3, 64, 64\]"):
        pipe.generate("a red star", n=2, size=64, latents=x_t[:1])


def test_output_type_is_a_call_parameter(pipe):
    pil = pipe.generate("a red star", n=2, seed=5)
    arr = pipe.generate("a red star", n=2, seed=5, output_type="np")
    ten = pipe.generate("a red star", n=2, seed=5, output_type="pt")
    assert arr.output_type == "np" and arr.images.shape == (2, 64, 64, 3) and arr.images.dtype == np.float32
    assert np.array_equal(arr.images, pil.images_as("np")) and torch.equal(ten.images, pil.images_as("pt"))
    assert ten.part(1, 2).images.shape == (1, 3, 64, 64) and ten.part(1, 2).records[0]["index"] == 0
    with pytest.raises(ValueError, match="extend joins PIL results"):
        ten.extend(ten)
    calls = []
    with pytest.raises(ValueError, match="output_type='latent'"):  # refused before any sampling
        pipe.generate("a red star", seed=5, output_type="latent", callback=lambda *a: calls.append(a))
    assert calls == []
    var = pipe.variations(pil.images[0], n=1, seed=1, output_type="pt")
    assert var.images.shape == (1, 3, 64, 64)


def test_step_callback_may_replace_the_latents(pipe):
    """diffusers' callback_on_step_end: the decoder's last latents replaced by −1 (black) give a black 64-px
    image; replacing an earlier step's latents changes the picture; returning None changes nothing."""
    plain = pipe.generate("a red star", seed=2, settings={"decoder": {"sampler": "ddpm"}})
    same = pipe.generate("a red star", seed=2, settings={"decoder": {"sampler": "ddpm"}},
                         callback=lambda stage, i, n, x: None)
    assert np.array_equal(_arr(plain.images[0]), _arr(same.images[0]))

    def blacken(stage, i, n, x):
        return -torch.ones_like(x) if stage == "decoder" and i == n - 1 else None

    black = pipe.generate("a red star", seed=2, callback=blacken)
    assert _arr(black.images[0]).max() == 0
    swapped = pipe.generate("a red star", seed=2, settings={"decoder": {"sampler": "ddpm"}},
                            callback=lambda stage, i, n, x: (torch.zeros_like(x)
                                                             if stage == "decoder" and i == 0 else None))
    assert np.abs(_arr(swapped.images[0]) - _arr(plain.images[0])).mean() > 1


def test_compile_without_a_compiler_samples_eager_the_same_images(pipeline_dir, pipe, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("PATH", "/nonexistent")
    eager = UnCLIPPipeline.load(pipeline_dir, settings={"preset": "fast", **FAST}, moderation=False, compile=True)
    assert all(stage.net is stage.model for stage in eager.stages.values())
    a = eager.generate("a red star", n=2, seed=3, output_type="pt").images
    torch.testing.assert_close(a, pipe.generate("a red star", n=2, seed=3, output_type="pt").images, atol=0, rtol=0)
