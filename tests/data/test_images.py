"""Fitting images of any size to a stage's square: short side resized, centre or seeded random crop."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unclip.data.images import ImageTooSmall, MissingImage, crop_offset, fit_square, image_member


def _bands(w: int, h: int) -> Image.Image:
    """Three vertical bands, red | green | blue, each a third of the width."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3, 0] = 255
    a[:, w // 3: 2 * w // 3, 1] = 255
    a[:, 2 * w // 3:, 2] = 255
    return Image.fromarray(a)


def test_centre_crop_of_a_wide_image_keeps_the_middle_band():
    out = fit_square(_bands(300, 100), 64)  # short side 100 -> 64, width 192; centre 64 columns = green
    a = np.asarray(out)
    assert out.size == (64, 64)
    assert a[:, 8:56, 1].min() > 200 and a[:, 8:56, 0].max() < 60 and a[:, 8:56, 2].max() < 60


def test_random_crop_lands_where_its_offset_says():
    left = np.asarray(fit_square(_bands(300, 100), 64, crop="random", offset_fn=lambda span: 0))
    right = np.asarray(fit_square(_bands(300, 100), 64, crop="random", offset_fn=lambda span: span))
    assert left[:, :40, 0].min() > 200 and right[:, -40:, 2].min() > 200


def test_tall_images_and_exact_squares():
    assert fit_square(_bands(90, 200), 64).size == (64, 64)
    square = _bands(64, 64)
    assert fit_square(square, 64) is square  # nothing to do


def test_minimum_size_refuses_upscaling_unless_lowered():
    with pytest.raises(ImageTooSmall, match="60x48, under the minimum short side 64"):
        fit_square(_bands(60, 48), 64)
    assert fit_square(_bands(60, 48), 64, min_size=32).size == (64, 64)
    with pytest.raises(ValueError, match="crop must be"):
        fit_square(_bands(90, 90), 64, crop="middle")


def test_crop_offsets_are_seeded_by_seed_epoch_and_key():
    draws = {crop_offset(0, e, k, 100) for e in range(5) for k in ("a", "b", "c")}
    assert crop_offset(0, 1, "a", 100) == crop_offset(0, 1, "a", 100)
    assert len(draws) > 5 and all(0 <= d <= 100 for d in draws)
    assert crop_offset(3, 1, "a", 0) == 0


def test_image_member_takes_the_first_known_format():
    assert image_member({"txt": b"x", "webp": b"w", "jpg": b"j"}) == ("jpg", b"j")
    assert image_member({"png": b"p", "json": b"{}"}) == ("png", b"p")
    with pytest.raises(MissingImage, match=r"found members \['gif', 'txt'\]"):
        image_member({"__key__": "k", "gif": b"g", "txt": b"t"})
