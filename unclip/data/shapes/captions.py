"""Shapes captions: a small grammar with paraphrases, always true of the scene."""

from __future__ import annotations

import re

import numpy as np

from .sampling import _as_rng, _pick
from .scenes import BACKGROUNDS, INVERSE_RELATION, Scene, ShapeObject

SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
POSITION_PHRASES = {
    "top left": ("in the top left corner", "at the top left", "in the upper left corner"),
    "top": ("at the top", "at the top center", "in the top middle"),
    "top right": ("in the top right corner", "at the top right", "in the upper right corner"),
    "left": ("on the left", "at the left", "in the middle of the left side"),
    "center": ("in the middle", "in the center", "at the center"),
    "right": ("on the right", "at the right", "in the middle of the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom center", "in the bottom middle"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right corner"),
}
POSITION_LABELS = {
    "top left": ("top left", "top-left", "upper left"), "top": ("top", "top center"),
    "top right": ("top right", "top-right", "upper right"), "left": ("left", "middle left"),
    "center": ("center", "middle"), "right": ("right", "middle right"),
    "bottom left": ("bottom left", "bottom-left", "lower left"), "bottom": ("bottom", "bottom center"),
    "bottom right": ("bottom right", "bottom-right", "lower right"),
}
BACKGROUND_PHRASES = {
    "plain": ("on a {} background", "on a plain {} background", "against a {} backdrop"),
    "gradient": ("on a {} background", "on a {} gradient", "against a {} gradient backdrop"),
    "texture": ("on a {} background", "on a textured {} background", "on a mottled {} surface"),
}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(rng: np.random.Generator, obj: ShapeObject, p_size: float) -> str:
    words = [obj.color, obj.shape]
    if rng.random() < p_size:
        words.insert(0, _pick(rng, SIZE_WORDS[obj.size]))
    return _article(" ".join(words))


def caption(scene: Scene, rng: np.random.Generator | int) -> str:
    """One paraphrase describing `scene`, e.g. 'a small red star in the top left corner',
    'top-left: a tiny red star on a grey background', 'a purple triangle is right of a green circle'."""
    gen, _ = _as_rng(rng)
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        np_ = _noun_phrase(gen, obj, p_size=0.85)
        form = int(gen.integers(4))
        if form == 0:
            text = f"{np_} {_pick(gen, POSITION_PHRASES[obj.position])}"
        elif form == 1:
            text = f"{_pick(gen, POSITION_LABELS[obj.position])}: {np_}"
        elif form == 2:
            text = f"there is {np_} {_pick(gen, POSITION_PHRASES[obj.position])}"
        else:
            text = f"{_pick(gen, POSITION_PHRASES[obj.position])}, {np_}"
    else:
        a, b = scene.objects
        rel = scene.relation
        if gen.random() < 0.5:  # say it the other way round: "B right of A"
            a, b, rel = b, a, INVERSE_RELATION[rel]
        np_a, np_b = _noun_phrase(gen, a, p_size=0.5), _noun_phrase(gen, b, p_size=0.5)
        verb = " is " if gen.random() < 0.4 else " "
        text = f"{np_a}{verb}{_pick(gen, RELATION_WORDS[rel])} {np_b}"
    if gen.random() < 0.35:
        bg = scene.background
        words = _pick(gen, BACKGROUND_PHRASES[bg.kind]).format(_pick(gen, BACKGROUNDS[bg.color][1]))
        text = f"{text} {words}"
    return re.sub(r"\ba (?=[aeiou])", "an ", text)
