"""The ADM UNet backbone: shapes, zero-init, conditioning, checkpointing, memory format, autocast, meta."""
import pytest
import torch

import unclip.nn.checkpointing as ckpt
from unclip.nn import ImageAttentionBlock, ResBlock, UNet, attention_downsample_factors, count_parameters

TINY = dict(in_channels=3, out_channels=6, model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(2, 4), num_head_channels=8, context_dim=12, norm_groups=8)


def tiny_unet(**overrides):
    torch.manual_seed(0)
    return UNet(**{**TINY, **overrides})


def perturb(model, std=0.05):
    """Move every weight off its init so zero-initialised branches carry signal."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def inputs(size=32, b=2, s=5):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(b, 3, size, size, generator=g)
    t = torch.tensor([3, 700])[:b]
    context = torch.randn(b, s, 12, generator=g)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[0, 3:] = False
    emb_cond = torch.randn(b, 64, generator=g)
    return x, t, emb_cond, context, mask


@pytest.mark.parametrize("size", [32, 64])
def test_unet_shape_at_two_resolutions_and_zero_output(size):
    model = tiny_unet()
    x, t, emb_cond, context, mask = inputs(size)
    out = model(x, t, emb_cond, context, mask)
    assert out.shape == (2, 6, size, size)
    assert out.abs().max() == 0  # zero-initialised output conv
    assert model(torch.randn(1, 3, size, size // 2), t[:1]).shape == (1, 6, size, size // 2)


@pytest.mark.parametrize("overrides", [
    dict(resblock_updown=True),
    dict(use_scale_shift_norm=False, conv_resample=False),
    dict(attention=False, attention_resolutions=(), context_dim=None, channel_mult=(1, 1, 2, 2)),
])
def test_unet_variants(overrides):
    model = perturb(tiny_unet(**overrides))
    x, t, emb_cond, context, mask = inputs(32)
    ctx = (context, mask) if model.context_dim else (None, None)
    out = model(x, t, emb_cond, *ctx)
    assert out.shape == (2, 6, 32, 32) and torch.isfinite(out).all()
    if not model.context_dim:
        assert not any(isinstance(m, ImageAttentionBlock) for m in model.modules())


def test_unet_uses_every_condition():
    model = perturb(tiny_unet()).eval()
    x, t, emb_cond, context, mask = inputs(32)
    with torch.no_grad():
        base = model(x, t, emb_cond, context, mask)
        assert not torch.allclose(base, model(x, t + 1, emb_cond, context, mask))
        assert not torch.allclose(base, model(x, t, None, context, mask))
        assert not torch.allclose(base, model(x, t, emb_cond, context + 1, mask))
        padded = context.clone()
        padded[0, 3:] = 7.0  # masked-out tokens of sample 0
        torch.testing.assert_close(model(x, t, emb_cond, padded, mask), base)


def test_unet_checkpointing_same_outputs_and_gradients(monkeypatch):
    calls = []
    real = ckpt._torch_checkpoint
    monkeypatch.setattr(ckpt, "_torch_checkpoint", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    results = []
    for use_checkpoint in (False, True):
        model = perturb(tiny_unet(dropout=0.1, use_checkpoint=use_checkpoint)).train()
        x, t, emb_cond, context, mask = inputs(32)
        emb_cond.requires_grad_(True)
        torch.manual_seed(5)  # same dropout masks in both runs
        out = model(x, t, emb_cond, context, mask)
        out.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((out.detach(), grads, emb_cond.grad.clone()))
    (o0, g0, e0), (o1, g1, e1) = results
    blocks = sum(isinstance(m, (ResBlock, ImageAttentionBlock)) for m in model.modules())
    assert len(calls) == blocks and all(kw == {"use_reentrant": False} for kw in calls)
    torch.testing.assert_close(o1, o0)
    torch.testing.assert_close(e1, e0)
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a)
    assert any(g.abs().sum() > 0 for g in g0[:4])  # gradients reach the first layers


def test_unet_channels_last_matches_contiguous():
    model = perturb(tiny_unet()).eval()
    x, t, emb_cond, context, mask = inputs(32)
    with torch.no_grad():
        ref = model(x, t, emb_cond, context, mask)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last), t, emb_cond, context, mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_unet_bf16_autocast_close_to_fp32():
    model = perturb(tiny_unet()).eval()
    x, t, emb_cond, context, mask = inputs(32)
    with torch.no_grad():
        ref = model(x, t, emb_cond, context, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, emb_cond, context, mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 autocast relative error {rel:.3g}"


def test_unet_input_validation():
    model = tiny_unet()
    x, t, emb_cond, context, mask = inputs(32)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 3, 30, 32), t[:1])
    with pytest.raises(ValueError, match="x must be"):
        model(torch.randn(1, 4, 32, 32), t[:1])
    with pytest.raises(ValueError, match="emb_cond"):
        model(x, t, torch.randn(2, 63))
    with pytest.raises(ValueError, match="t must be"):
        model(x, t[:1])
    with pytest.raises(ValueError, match="downsample factors"):
        tiny_unet(attention_resolutions=(16,))
    with pytest.raises(ValueError, match="attention=False"):
        tiny_unet(attention=False)
    with pytest.raises(ValueError, match="norm_groups"):
        tiny_unet(model_channels=12)


def test_attention_downsample_factors():
    assert attention_downsample_factors(64, (32, 16, 8)) == (2, 4, 8)
    with pytest.raises(ValueError):
        attention_downsample_factors(64, (24,))


def test_big_decoder_unet_builds_on_meta():
    with torch.device("meta"):
        model = UNet(3, 6, 512, (1, 2, 3, 4), 3, attention_downsample_factors(64, (32, 16, 8)),
                     num_head_channels=64, context_dim=2048)
    n = count_parameters(model)
    print(f"\nbig decoder UNet (meta): {n:,} parameters")
    assert all(p.is_meta for p in model.parameters())
    assert n > 10**9
    out = model(torch.randn(1, 3, 64, 64, device="meta"), torch.zeros(1, device="meta"),
                context=torch.randn(1, 81, 2048, device="meta"))
    assert out.shape == (1, 6, 64, 64)


def test_unet_patch_stem_runs_the_first_level_at_half_size():
    model = perturb(tiny_unet(patch_size=2)).eval()
    seen = []
    model.input_blocks[0][0].register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape), tuple(o.shape))))
    x, t, emb_cond, context, mask = inputs(32)
    with torch.no_grad():
        out = model(x, t, emb_cond, context, mask)
    assert out.shape == (2, 6, 32, 32)
    assert seen == [((2, 12, 16, 16), (2, 16, 16, 16))]  # 2×2 space-to-depth: 4·3 channels at 16 px
    # every output pixel of the 2×2 block has its own channels: the four pixels of one block differ
    block = out[0, :, :2, :2].reshape(6, 4)
    assert not torch.allclose(block[:, 0:1].expand(6, 4), block)
    with pytest.raises(ValueError, match="divisible by 8"):  # 2 (patch) × 4 (two downsamples)
        model(torch.randn(1, 3, 36, 36), t[:1])
    with pytest.raises(ValueError, match="patch_size"):
        tiny_unet(patch_size=0)


def test_unet_coord_channels_feed_the_first_conv():
    """Two coordinate channels reach the first conv (before the space-to-depth stem), and they carry signal:
    zeroing the first conv's weights on them changes the output."""
    x, t = torch.full((1, 3, 32, 32), 0.3), torch.tensor([500])
    for patch in (1, 2):
        model = perturb(tiny_unet(coord_channels=True, patch_size=patch)).eval()
        seen = []
        model.input_blocks[0][0].register_forward_hook(lambda m, i, o, seen=seen: seen.append(tuple(i[0].shape)))
        with torch.no_grad():
            out = model(x, t)
            conv = model.input_blocks[0][0]
            per_channel = conv.weight.view(conv.out_channels, 5, patch * patch, 3, 3)  # unshuffle: channel-major
            per_channel[:, 3:] = 0
            blind = model(x, t)
        assert seen[0] == (1, 5 * patch * patch, 32 // patch, 32 // patch)
        assert not torch.allclose(out, blind)
    assert tiny_unet().input_blocks[0][0].in_channels == 3


def test_unet_coordinates_span_the_input_at_any_size():
    from unclip.nn.unet import _coordinates

    for h, w in ((4, 4), (8, 16)):
        c = _coordinates(torch.zeros(2, 3, h, w))
        assert c.shape == (2, 2, h, w)
        torch.testing.assert_close(c[0, 0, 0], (torch.arange(w) + 0.5) / w * 2 - 1)  # x along a row
        torch.testing.assert_close(c[0, 1, :, 0], (torch.arange(h) + 0.5) / h * 2 - 1)  # y down a column
        assert torch.equal(c[0], c[1])


def test_no_mask_equals_an_all_true_mask_and_outputs_are_contiguous():
    """The decoder passes no mask when every context token is real (SDPA's faster unmasked path)."""
    model = perturb(tiny_unet()).eval()
    x, t, emb_cond, context, _ = inputs(32)
    with torch.no_grad():
        masked = model(x, t, emb_cond, context, torch.ones(2, context.shape[1], dtype=torch.bool))
        free = model(x, t, emb_cond, context, None)
    torch.testing.assert_close(free, masked, atol=1e-5, rtol=1e-5)
    assert free.is_contiguous()  # activations run NHWC inside; callers get the usual layout
