"""Bad inputs end in an InputError naming the parameter."""
import numpy as np
import pytest
from PIL import Image

from unclip.moderation import ModerationError
from unclip.pipeline import InputError


def _rgb(size=64):
    return Image.new("RGB", (size, size), (100, 100, 100))


def _mask(size=64):
    m = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, size // 2, size // 2))
    return m


@pytest.mark.parametrize("call, param", [
    (lambda p: p.generate(""), "prompt"),
    (lambda p: p.generate(["ok", "   "]), "prompt"),
    (lambda p: p.generate([]), "prompt"),
    (lambda p: p.generate("a star", size=128), "size"),
    (lambda p: p.generate("a star", n=0), "n"),
    (lambda p: p.generate("a star", settings="slow"), "settings"),
    (lambda p: p.variations(b"not an image"), "image"),
    (lambda p: p.variations(Image.new("CMYK", (64, 64))), "image"),
    (lambda p: p.variations(_rgb().resize((64, 32))), "image"),
    (lambda p: p.edit(_rgb(), _mask(32), "a star"), "mask"),
    (lambda p: p.edit(_rgb(), _rgb(), "a star"), "mask"),  # a mask without alpha
    (lambda p: p.edit(_rgb(), None, "a star"), "mask"),  # neither has transparency
    (lambda p: p.edit(_rgb(), Image.new("RGBA", (64, 64), (0, 0, 0, 255)), "a star"), "mask"),  # nothing to edit
    (lambda p: p.edit(_rgb(), _mask(), ""), "prompt"),
    (lambda p: p.outpaint(_rgb(), "a star"), "left"),
    (lambda p: p.outpaint(_rgb(), "a star", left=-3), "left"),
    (lambda p: p.interpolate(_rgb(), "x.png"), "image_b"),
])
def test_bad_inputs(pipe, call, param):
    with pytest.raises(InputError) as info:
        call(pipe)
    assert info.value.param == param and str(info.value).startswith(param)


def test_moderation_hits_name_the_category(pipe):
    with pytest.raises(ModerationError) as info:
        pipe.generate("a n.u.d.e figure")
    assert info.value.category == "sexual" and info.value.source == "prompt" and info.value.param == "prompt"
    with pytest.raises(ModerationError) as info:
        pipe.edit(_rgb(), _mask(), "some G0RE")
    assert info.value.category == "violence/graphic"
    with pytest.raises(ModerationError):
        pipe.text_diff(_rgb(), "a cat", "a naked cat")


def test_moderation_switch_off(pipeline_dir):
    from unclip.pipeline import UnCLIPPipeline

    from .conftest import FAST
    p = UnCLIPPipeline.load(pipeline_dir, settings={"preset": "fast", **FAST}, moderation=False)
    assert p.moderator is None and len(p.generate("a nude figure", seed=0)) == 1


def test_missing_stage_dir(tmp_path):
    from unclip.pipeline import UnCLIPPipeline
    with pytest.raises(FileNotFoundError, match="clip/"):
        UnCLIPPipeline.load(tmp_path)
    assert np  # keep import
