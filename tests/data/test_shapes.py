"""Shapes: determinism, JSON round trip, multi-resolution exactness, true captions, splits, colours."""

import re

import numpy as np
import pytest

from unclip.data.shapes import (
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    Scene,
    ShapesDataset,
    caption,
    parse_heldout,
    render,
    sample_scene,
    shape_extent,
    signature,
    true_relations,
)

HELDOUT = [{"shape": "star", "color": "red"}, {"shape": "circle", "color": "blue"}]
_NP = re.compile(
    r"\ban? (?:(small|tiny|little|large|big) )?(" + "|".join(COLORS) + r") (" + "|".join(SHAPES) + r")\b"
)


def _pixels(scene, resolution):
    return np.asarray(render(scene, resolution), dtype=np.float64)


def test_sampling_and_rendering_are_deterministic_by_seed():
    a, b = sample_scene(123, "train"), sample_scene(123, "train")
    assert a == b and a.seed == 123
    assert np.array_equal(_pixels(a, 64), _pixels(b, 64))
    assert sample_scene(124, "train") != a
    d1, d2 = ShapesDataset("val", 8, seed=3), ShapesDataset("val", 8, seed=3)
    for i in range(8):
        s1, s2 = d1[i], d2[i]
        assert s1 == s2 and s1["__key__"] == f"val-3-{i:08d}" and "." not in s1["__key__"]
    assert ShapesDataset("val", 8, seed=4)[0]["json"] != d1[0]["json"]


def test_json_round_trip_rerenders_identically():
    ds = ShapesDataset("train", 20, seed=1)
    for i in range(20):
        scene = ds.scene(i)
        rebuilt = Scene.from_json(scene.to_json())
        assert rebuilt == scene
        assert np.array_equal(_pixels(rebuilt, 64), _pixels(scene, 64))
    bad = ds.scene(0).to_dict()
    bad["objects"][0]["shape"] = "blob"
    with pytest.raises(ValueError, match="blob"):
        Scene.from_dict(bad)


def test_box_downsampled_256_render_matches_64_render():
    for seed in range(30):
        scene = sample_scene(seed, "train")
        small = _pixels(scene, 64)
        down = _pixels(scene, 256).reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
        assert np.abs(small - down).mean() < 1.0  # out of 255
    for seed in range(2):
        scene = sample_scene(seed, "train")
        down = _pixels(scene, 1024).reshape(256, 4, 256, 4, 3).mean(axis=(1, 3))
        assert np.abs(_pixels(scene, 256) - down).mean() < 1.0


def _relation_words(text):
    found = set()
    for word, rel in (("left", "left of"), ("right", "right of"), ("above", "above"), ("over", "above"),
                      ("below", "below"), ("under", "below"), ("beneath", "below")):
        if re.search(rf"\b{word}\b", text):
            found.add(rel)
    return found


def _position_from_words(text):
    row = 0 if re.search(r"\b(top|upper)\b", text) else 2 if re.search(r"\b(bottom|lower)\b", text) else 1
    col = 0 if re.search(r"\bleft\b", text) else 2 if re.search(r"\bright\b", text) else 1
    return row, col


def _matches(obj, size_word, color, shape):
    sizes = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
    return obj.color == color and obj.shape == shape and (size_word is None or size_word in sizes[obj.size])


def test_captions_are_true_of_their_scenes():
    rng = np.random.default_rng(0)
    for seed in range(600):
        scene = sample_scene(seed, "train")
        text = caption(scene, rng)
        nps = list(_NP.finditer(text))
        assert len(nps) == len(scene.objects), text
        if len(scene.objects) == 1:
            assert _matches(scene.objects[0], *nps[0].groups()), text
            assert _position_from_words(text) == POSITIONS[scene.objects[0].position], text
        else:
            rels = _relation_words(text[nps[0].end():nps[1].start()])
            assert len(rels) == 1, text
            (rel,) = rels
            a, b = scene.objects
            pairs = [(x, y) for x, y in ((a, b), (b, a))
                     if _matches(x, *nps[0].groups()) and _matches(y, *nps[1].groups())]
            assert pairs, text
            assert any(rel in true_relations(x, y) for x, y in pairs), (text, scene)
        if re.search(r"background|backdrop|gradient|surface", text):
            assert any(w in text for w in BACKGROUNDS[scene.background.color][1]), text
    assert caption(scene, 5) == caption(scene, 5)


def test_train_and_val_signatures_are_disjoint():
    train = {signature(sample_scene(s, "train")) for s in range(3000)}
    val = {signature(sample_scene(s, "val")) for s in range(1000)}
    assert len(train) > 1000 and len(val) > 300
    assert not train & val
    single_val = {sig for sig in val if len(sig) == 1}
    assert single_val and not single_val & train


def test_heldout_combos_never_in_train_but_in_val_and_heldout():
    assert parse_heldout("star:red, circle:blue") == HELDOUT
    assert parse_heldout("top-left:large") == [{"position": "top left", "size": "large"}]
    with pytest.raises(ValueError, match="blob"):
        parse_heldout("blob:red")

    def hits(scene):
        return any(o.matches(c) for o in scene.objects for c in HELDOUT)

    assert not any(hits(sample_scene(s, "train", HELDOUT)) for s in range(2000))
    assert sum(hits(sample_scene(s, "val", HELDOUT)) for s in range(600)) > 5
    heldout = [sample_scene(s, "heldout", HELDOUT) for s in range(100)]
    assert all(hits(s) for s in heldout)
    assert {(o.shape, o.color) for s in heldout for o in s.objects} >= {("star", "red"), ("circle", "blue")}


def test_object_colours_are_distinguishable_at_64px():
    palette = {**COLORS, **{f"bg:{k}": v[0] for k, v in BACKGROUNDS.items()}}
    names, rgbs = list(palette), np.array(list(palette.values()), dtype=np.float64)
    centres = (np.arange(64) + 0.5) / 64
    for seed in range(200):
        scene = sample_scene(seed, "train")
        img = _pixels(scene, 64)
        for obj in scene.objects:
            cx, cy = obj.center
            near = (centres[None, :] - cx) ** 2 + (centres[:, None] - cy) ** 2 < (0.3 * obj.radius) ** 2
            mean = img[near].mean(axis=0)
            assert names[int(np.argmin(((rgbs - mean) ** 2).sum(axis=1)))] == obj.color, (seed, obj)


def test_two_objects_never_share_a_cell_and_stay_inside_it():
    for seed in range(500):
        scene = sample_scene(seed, "val")
        cells = [POSITIONS[o.position] for o in scene.objects]
        assert len(set(cells)) == len(cells)
        for obj, (row, col) in zip(scene.objects, cells):
            (x, y), e = obj.center, shape_extent(obj.shape, obj.radius)
            assert col / 3 < x - e and x + e < (col + 1) / 3
            assert row / 3 < y - e and y + e < (row + 1) / 3
