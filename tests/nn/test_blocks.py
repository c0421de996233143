"""Shapes, zero-init and validation of the embedding, resampling and residual blocks."""
import math

import pytest
import torch

from unclip.nn import Downsample, ResBlock, TimestepEmbedding, Upsample, group_norm, timestep_embedding


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 3.0, 999.0])
    emb = timestep_embedding(t, 8)  # [3, 8]
    freqs = torch.tensor([10000 ** (-i / 4) for i in range(4)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(emb, expected)
    assert timestep_embedding(t, 7).shape == (3, 7)
    assert timestep_embedding(t, 7)[:, -1].abs().sum() == 0  # odd width: zero pad
    assert math.isclose(emb[0, 0].item(), 1.0)


def test_timestep_embedding_mlp_shape():
    m = TimestepEmbedding(16, 64)
    assert m(torch.arange(5)).shape == (5, 64)


def test_resample_shapes():
    x = torch.randn(2, 8, 6, 10)
    assert Upsample(8)(x).shape == (2, 8, 12, 20)
    assert Upsample(8, use_conv=False)(x).shape == (2, 8, 12, 20)
    assert Upsample(8, out_channels=4)(x).shape == (2, 4, 12, 20)
    assert Downsample(8)(x).shape == (2, 8, 3, 5)
    assert Downsample(8, use_conv=False)(x).shape == (2, 8, 3, 5)
    torch.testing.assert_close(Downsample(8, use_conv=False)(x)[0, 0, 0, 0], x[0, 0, :2, :2].mean())


@pytest.mark.parametrize("scale_shift", [True, False])
@pytest.mark.parametrize("cin,cout,kw,size", [
    (8, 8, {}, 8), (8, 16, {}, 8), (8, 16, {"up": True}, 16), (16, 8, {"down": True}, 4),
])
def test_resblock_shape_and_zero_init_identity(scale_shift, cin, cout, kw, size):
    torch.manual_seed(0)
    block = ResBlock(cin, 12, cout, use_scale_shift_norm=scale_shift, norm_groups=4, dropout=0.1, **kw).eval()
    x, emb = torch.randn(2, cin, 8, 8), torch.randn(2, 12)
    out = block(x, emb)
    assert out.shape == (2, cout, size, size)
    # fresh block: residual branch is zero, output = skip(resampled x)
    torch.testing.assert_close(out, block.skip(block.x_resample(x)))
    assert isinstance(block.skip, torch.nn.Identity) == (cin == cout)


def test_resblock_uses_embedding_once_trained():
    torch.manual_seed(0)
    block = ResBlock(8, 12, norm_groups=4)
    torch.nn.init.normal_(block.out_rest[-1].weight)
    x = torch.randn(1, 8, 4, 4)
    assert not torch.allclose(block(x, torch.zeros(1, 12)), block(x, torch.ones(1, 12)))


def test_group_norm_validates_divisibility():
    with pytest.raises(ValueError, match="channels=48 is not divisible by norm_groups=32"):
        group_norm(48, 32)
    with pytest.raises(ValueError, match="norm_groups"):
        ResBlock(12, 8, 20, norm_groups=8)
    assert group_norm(48, 16).num_groups == 16


def test_resblock_rejects_up_and_down():
    with pytest.raises(ValueError):
        ResBlock(8, 8, up=True, down=True, norm_groups=4)


def test_group_norm_bf16_native_path_equals_the_float32_one():
    """bf16 on the CPU skips the upcast copies; the kernel computes in float32, so the values are those of
    normalising in float32 and rounding once."""
    gn = group_norm(64, 8)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(2, 64, 16, 16) * 3 + 1).bfloat16()
    fast = gn(x)
    slow = torch.nn.GroupNorm.forward(gn, x.float()).bfloat16()
    assert fast.dtype == torch.bfloat16
    assert (fast.float() - slow.float()).abs().max() <= 2 ** -7 * slow.float().abs().max()  # ≤ one bf16 ulp
    assert torch.equal(gn(x.float()), torch.nn.GroupNorm.forward(gn, x.float()))  # float32 untouched
