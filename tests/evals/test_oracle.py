"""The shapes oracle reads rendered scenes back (≥ 98 % per attribute) and parses captions back."""
import numpy as np
import pytest
from PIL import Image

from unclip.data import shapes as S
from unclip.evals import oracle


def _accuracy(n: int, resolution: int, split: str = "val", seed: int = 0, heldout=None):
    ds = S.ShapesDataset(split, length=n, seed=seed, heldout=heldout)
    correct = dict.fromkeys((*oracle.ATTRIBUTES, "count", "full"), 0)
    objects = 0
    for i in range(n):
        scene = ds.scene(i)
        m = oracle.match(oracle.spec_from_scene(scene), oracle.read_image(S.render(scene, resolution)))
        for a in oracle.ATTRIBUTES:
            correct[a] += m["attributes"][a][0]
        correct["count"] += m["attributes"]["count"][0]
        correct["full"] += m["full_match"]
        objects += len(scene.objects)
    return {a: correct[a] / (n if a in ("count", "full") else objects) for a in correct}


def test_oracle_reads_1000_val_scenes_at_64px():
    acc = _accuracy(1000, 64)
    print("oracle accuracy at 64 px:", acc)
    assert all(v >= 0.98 for v in acc.values()), acc


@pytest.mark.parametrize("resolution,n", [(256, 30), (1024, 3)])
def test_oracle_reads_larger_renders(resolution, n):
    acc = _accuracy(n, resolution, seed=3)
    assert all(v >= 0.98 for v in acc.values()), acc


def test_oracle_reads_heldout_combos():
    acc = _accuracy(60, 64, split="heldout", heldout="star:red,circle:blue")
    assert all(v >= 0.98 for v in acc.values()), acc


def test_oracle_degrades_gracefully():
    g = np.random.default_rng(0)
    odd = [np.zeros((64, 64, 3), np.uint8), np.full((256, 256), 255, np.uint8),
           g.integers(0, 256, (64, 64, 3), dtype=np.uint8), g.random((128, 96, 3)).astype(np.float32),
           np.zeros((2, 2, 3), np.uint8),
           Image.new("RGBA", (64, 64), (220, 30, 40, 128)), Image.new("L", (64, 64), 7)]
    for im in odd:
        found = oracle.read_image(im)
        assert isinstance(found, list) and len(found) <= 4
        oracle.match(oracle.PromptSpec(({"shape": "star", "color": "red"},)), found)
    assert oracle.read_image(np.zeros((64, 64, 3), np.uint8)) == []
    # a perturbed render is still read (noise + blur-ish box resample)
    scene = S.ShapesDataset("val", length=1).scene(0)
    arr = np.asarray(S.render(scene, 64), np.float32) + g.normal(0, 8, (64, 64, 3))
    m = oracle.match(oracle.spec_from_scene(scene), oracle.read_image(np.clip(arr, 0, 255).astype(np.uint8)))
    assert m["attributes"]["color"][0] == m["attributes"]["color"][1]


def test_match_counts_missing_and_extra_objects():
    spec = oracle.PromptSpec(({"shape": "star", "color": "red"}, {"shape": "circle", "color": "blue"}), "left of")
    star = oracle.DetectedObject("star", "red", "small", "left", (0.2, 0.5), 0.09, 0.01, 0.0, 0.0)
    circle = oracle.DetectedObject("circle", "blue", "large", "right", (0.8, 0.5), 0.13, 0.02, 0.0, 0.0)
    assert oracle.match(spec, [circle, star])["full_match"]
    one = oracle.match(spec, [star])
    assert not one["full_match"] and one["attributes"]["shape"] == [1, 2] and one["attributes"]["relation"] == [0, 1]
    wrong_rel = oracle.match(oracle.PromptSpec(spec.objects, "right of"), [star, circle])
    assert wrong_rel["attributes"]["relation"] == [0, 1] and wrong_rel["n_correct"] == wrong_rel["n_stated"] - 1


def test_caption_parsing_round_trips():
    ds = S.ShapesDataset("train", length=400, seed=5)
    for i in range(len(ds)):
        scene = ds.scene(i)
        for k in range(3):
            text = S.caption(scene, np.random.default_rng([i, k]))
            parsed = oracle.parse_caption(text)
            assert parsed.n_objects == len(scene.objects), text
            assert all({"shape", "color"} <= set(o) for o in parsed.objects), text
            orientations = [(list(scene.objects), scene.relation)]
            if len(scene.objects) == 2:  # the caption may say "B right of A"
                orientations.append((list(scene.objects)[::-1], S.INVERSE_RELATION[scene.relation]))
            assert any(all(oracle._agree(p, o) for p, o in zip(parsed.objects, objs)) and parsed.relation == rel
                       for objs, rel in orientations), (text, parsed)
            if len(scene.objects) == 1:
                assert parsed.objects[0]["position"] == scene.objects[0].position, text
            assert oracle.spec_from_scene(scene, text) == parsed, text


def test_parse_free_text():
    p = oracle.parse_caption("A big blue hexagon at the top-left and a tiny pink cross in the lower right corner!")
    assert p.objects == ({"size": "large", "color": "blue", "shape": "hexagon", "position": "top left"},
                         {"size": "small", "color": "pink", "shape": "cross", "position": "bottom right"})
    assert oracle.parse_caption("a photo of a cat").objects == ()
