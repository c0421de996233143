"""Moderation: the prompt filter's robust matching and the CLIP image filter on a quickly trained tiny CLIP."""
import pytest

from unclip.data.shapes import BACKGROUNDS, Background, Scene, ShapeObject, render
from unclip.moderation import ModerationError, Moderator, PromptFilter

CATS = {"violence": ["kill", "mass shooting"], "sexual": ["nude"]}


@pytest.mark.parametrize("text, category", [
    ("KILL", "violence"), ("k.i.l.l", "violence"), ("k i l l them", "violence"), ("kiiiilll", "violence"),
    ("k1ll", "violence"), ("ki||", "violence"), ("mass-shooting", "violence"), ("massshooting", "violence"),
    ("NÜDE", "sexual"), ("n_u_d_e", "sexual"), ("nudes", "sexual"),
    ("skill", None), ("killer whale", None), ("a red star", None), ("nudge", None), ("", None),
])
def test_prompt_filter_matching(text, category):
    hit = PromptFilter(CATS).check(text)
    assert (hit[0] if hit else None) == category


def test_default_lists_load_and_are_modest():
    m = Moderator.default()
    assert set(m.prompt_filter.categories) <= {"hate", "harassment", "self-harm", "sexual", "sexual/minors",
                                               "violence", "violence/graphic"}
    assert all(len(t) <= 24 for terms in m.prompt_filter.categories.values() for t in terms)
    assert m.check_prompt("a small red star at the top left") is None
    with pytest.raises(ModerationError) as info:
        m.require_prompt_ok("p0rn")
    assert info.value.category == "sexual" and info.value.source == "prompt"


def test_config_typos_fail():
    with pytest.raises(ValueError, match="unknown keys"):
        Moderator.from_config({"prompt_categorys": {}})


def _scene(shape, color, position, size="large"):
    cell = {"top left": (1 / 6, 1 / 6), "center": (0.5, 0.5), "bottom right": (5 / 6, 5 / 6),
            "top right": (5 / 6, 1 / 6)}
    bg = Background("plain", "grey", BACKGROUNDS["grey"][0])
    return render(Scene((ShapeObject(shape, color, size, position, cell[position]),), bg), 64)


def test_image_filter_flags_red_stars_not_blue_circles(trained_clip):
    positions = ["top left", "center", "bottom right", "top right"]
    stars = [_scene("star", "red", p, s) for p in positions for s in ("small", "large")]
    circles = [_scene("circle", "blue", p, s) for p in positions for s in ("small", "large")]
    concept = {"image_concepts": [{"category": "test", "text": "a red star"}]}
    probe = Moderator.from_config(concept, clip=trained_clip, thresholds={"a red star": 0.0})
    s_star = probe.image_filter.scores(trained_clip.encode_image(stars))[:, 0]
    s_circle = probe.image_filter.scores(trained_clip.encode_image(circles))[:, 0]
    assert s_star.min() > s_circle.max(), (s_star, s_circle)  # the CLIP separates them
    # Calibrate the threshold on half of the renders; check the other half.
    threshold = float((s_star[::2].min() + s_circle[::2].max()) / 2)
    m = Moderator.from_config(concept, clip=trained_clip, thresholds={"a red star": threshold})
    assert all(r is not None and r.category == "test" for r in m.check_images(stars[1::2]))
    assert all(r is None for r in m.check_images(circles[1::2]))
    with pytest.raises(ModerationError) as info:
        m.require_images_ok(trained_clip.encode_image(stars[:1]))
    assert info.value.source == "image" and info.value.param == "image" and info.value.category == "test"
