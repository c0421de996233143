"""Linear probes: what a frozen embedding (CLIP z_i, z_t) knows about each `shapes` attribute.

unCLIP's decoder can only draw what its conditioning carries. Before blaming the decoder or the prior
for a wrong shape or position, check whether z_i encodes that attribute at all: fit a softmax
regression from the embedding to the attribute of one-object scenes on one split and report its
accuracy on another. An attribute near chance here cannot come through the z_i path.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from unclip.data import shapes as S

PROBED = ("shape", "color", "size", "position")


def _labels(scenes: Sequence[S.Scene], attr: str) -> list[str]:
    return [getattr(s.objects[0], attr) for s in scenes]


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, steps: int = 300, lr: float = 1e-2,
                     weight_decay: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression on standardised features (full-batch Adam from zeros, so deterministic):
    returns (W [D, C], b [C])."""
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def attribute_probe(train_features: torch.Tensor, train_scenes: Sequence[S.Scene], test_features: torch.Tensor,
                    test_scenes: Sequence[S.Scene], attributes: Sequence[str] = PROBED) -> dict[str, dict]:
    """Per attribute: probe accuracy on the test one-object scenes, chance (the most frequent test
    label) and the counts. Features [N, D] are row-aligned with their scenes; scenes with more than one
    object are left out (their attributes are not one label)."""
    if len(train_features) != len(train_scenes) or len(test_features) != len(test_scenes):
        raise ValueError(f"attribute_probe: features and scenes differ in length ({len(train_features)} vs "
                         f"{len(train_scenes)}, {len(test_features)} vs {len(test_scenes)})")
    tr = [i for i, s in enumerate(train_scenes) if len(s.objects) == 1]
    te = [i for i, s in enumerate(test_scenes) if len(s.objects) == 1]
    if not tr or not te:
        raise ValueError("attribute_probe: needs one-object scenes in both splits")
    xtr, xte = train_features[tr].float(), test_features[te].float()
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    out = {}
    for attr in attributes:
        ltr, lte = _labels([train_scenes[i] for i in tr], attr), _labels([test_scenes[i] for i in te], attr)
        vocab = sorted(set(ltr) | set(lte))
        ytr = torch.tensor([vocab.index(v) for v in ltr])
        yte = torch.tensor([vocab.index(v) for v in lte])
        w, b = fit_linear_probe(xtr, ytr, len(vocab))
        acc = ((xte @ w + b).argmax(1) == yte).float().mean().item()
        chance = torch.bincount(yte, minlength=len(vocab)).max().item() / len(yte)
        out[attr] = {"accuracy": acc, "chance": chance, "classes": len(vocab), "n_train": len(tr), "n_test": len(te)}
    return out
