"""EMA of the parameters: the closed form of repeated lerps, warm-up decay, buffers copied not averaged."""
import pytest
import torch
from torch import nn

from unclip.training.ema import EMA


def test_ema_follows_its_closed_form():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ema = EMA(net, decay=0.9, warmup=False)
    targets = [torch.randn(4, 3) for _ in range(3)]
    expected = start["0.weight"].clone()
    for step, w in enumerate(targets):
        with torch.no_grad():
            net[0].weight.copy_(w)
        ema.update(step)
        expected = 0.9 * expected + 0.1 * w
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    torch.testing.assert_close(ema.shadow["0.bias"], start["0.bias"])  # unchanged parameter stays put
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)
    assert torch.equal(ema.full_state_dict()["1.running_mean"], torch.full((4,), 5.0))  # buffers: current values


def test_warmup_decay_and_bad_decay():
    ema = EMA(nn.Linear(2, 2), decay=0.9999)
    assert ema.decay_at(0) == pytest.approx(1 / 10) and ema.decay_at(10**6) == 0.9999
    with pytest.raises(ValueError, match="ema.decay=1.0"):
        EMA(nn.Linear(2, 2), decay=1.0)
