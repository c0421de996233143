"""Linear attribute probes: features that carry an attribute are read back, features that do not are at chance."""
import pytest
import torch

from unclip.data import shapes as S
from unclip.evals.probe import attribute_probe


def _scenes(n, seed):
    ds = S.ShapesDataset("train", length=n, seed=seed)
    return [ds.scene(i) for i in range(n)]


def _one_hot_colour_features(scenes, noise, seed):
    g = torch.Generator().manual_seed(seed)
    names = list(S.COLORS)
    idx = torch.tensor([names.index(s.objects[0].color) for s in scenes])  # first object's colour
    x = torch.cat([torch.nn.functional.one_hot(idx, len(names)).float(), torch.randn(len(scenes), 8, generator=g)], 1)
    return x + noise * torch.randn(x.shape, generator=g)


def test_probe_reads_what_the_features_carry_and_nothing_else():
    train, test = _scenes(600, 0), _scenes(300, 1)
    res = attribute_probe(_one_hot_colour_features(train, 0.05, 0), train,
                          _one_hot_colour_features(test, 0.05, 1), test)
    assert res["color"]["accuracy"] > 0.95
    for attr in ("shape", "position"):  # not in the features: near chance (the most frequent label)
        assert res[attr]["accuracy"] < res[attr]["chance"] + 0.12, (attr, res[attr])
    assert res["color"]["n_test"] == sum(len(s.objects) == 1 for s in test)


def test_probe_rejects_misaligned_inputs():
    train = _scenes(50, 0)
    with pytest.raises(ValueError, match="differ in length"):
        attribute_probe(torch.zeros(49, 4), train, torch.zeros(50, 4), train)
