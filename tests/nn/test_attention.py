"""SDPA attention blocks against a plain softmax(QKᵀ/√d)V reference, masks and causality."""
import pytest
import torch

from unclip.nn import ImageAttentionBlock, SelfAttention, Transformer, TransformerBlock


def reference_attention(q, k, v, allowed=None):
    """softmax(QKᵀ/√d)V over [B, h, L, d]; ``allowed`` bool broadcastable to [B, h, Lq, Lk]."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def heads(x, n):
    b, length, c = x.shape
    return x.reshape(b, length, n, c // n).permute(0, 2, 1, 3)


def unheads(x):
    b, n, length, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, length, n * d)


def randomize(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def image_attention_reference(block, x, context, context_mask):
    b, c, h, w = x.shape
    tok = block.norm(x).reshape(b, c, h * w).transpose(1, 2)
    q, k, v = block.to_qkv(tok).split(c, dim=-1)
    ck, cv = block.to_context_kv(context).split(c, dim=-1)
    k, v = torch.cat([k, ck], 1), torch.cat([v, cv], 1)
    allowed = torch.cat([torch.ones(b, h * w, dtype=torch.bool), context_mask], 1)[:, None, None, :]
    out = reference_attention(heads(q, block.heads), heads(k, block.heads), heads(v, block.heads), allowed)
    return x + block.proj_out(unheads(out)).transpose(1, 2).reshape(b, c, h, w)


def make_context(b=2, s=5, dim=12):
    torch.manual_seed(2)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])[:b, :s]
    return torch.randn(b, s, dim), mask


def test_image_attention_shapes_and_zero_init():
    x = torch.randn(2, 16, 4, 6)
    plain = ImageAttentionBlock(16, num_heads=2, norm_groups=4)
    assert plain.heads == 2
    torch.testing.assert_close(plain(x), x)  # zero-initialised output projection
    ctx_block = ImageAttentionBlock(16, head_channels=4, context_dim=12, norm_groups=4)
    assert ctx_block.heads == 4
    context, mask = make_context()
    assert ctx_block(x, context, mask).shape == x.shape
    assert ctx_block(x, context).shape == x.shape
    assert ctx_block(x).shape == x.shape


def test_image_attention_matches_reference_with_context_and_mask():
    block = randomize(ImageAttentionBlock(16, head_channels=8, context_dim=12, norm_groups=4))
    x = torch.randn(2, 16, 4, 4)
    context, mask = make_context()
    with torch.no_grad():
        torch.testing.assert_close(block(x, context, mask), image_attention_reference(block, x, context, mask),
                                   atol=1e-5, rtol=1e-5)


def test_image_attention_ignores_masked_context_tokens():
    block = randomize(ImageAttentionBlock(16, num_heads=2, context_dim=12, norm_groups=4))
    x = torch.randn(2, 16, 4, 4)
    context, mask = make_context()
    changed = context.clone()
    changed[0, 3:] = torch.randn(2, 12) * 10  # only padding tokens of sample 0
    with torch.no_grad():
        out = block(x, context, mask)
        torch.testing.assert_close(block(x, changed, mask), out)
        changed[0, 0] += 1.0  # a real token does matter
        assert not torch.allclose(block(x, changed, mask), out)


def test_image_attention_input_errors():
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match="context_dim=None"):
        ImageAttentionBlock(16, norm_groups=4)(x, torch.randn(2, 3, 12))
    block = ImageAttentionBlock(16, context_dim=12, norm_groups=4)
    with pytest.raises(ValueError, match="context_mask"):
        block(x, torch.randn(2, 3, 12), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="context must be"):
        block(x, torch.randn(2, 3, 10))
    with pytest.raises(ValueError, match="head_channels"):
        ImageAttentionBlock(16, head_channels=5, norm_groups=4)


def self_attention_reference(attn, x, allowed):
    q, k, v = attn.to_qkv(x).chunk(3, dim=-1)
    out = reference_attention(heads(q, attn.heads), heads(k, attn.heads), heads(v, attn.heads), allowed)
    return attn.proj_out(unheads(out))


@pytest.mark.parametrize("use_pad", [False, True])
def test_causal_self_attention_matches_reference(use_pad):
    attn = randomize(SelfAttention(16, 4))
    x = torch.randn(2, 7, 16)
    allowed = torch.ones(7, 7, dtype=torch.bool).tril()[None, None]
    pad = None
    if use_pad:
        pad = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
        allowed = allowed & pad[:, None, None, :]
    with torch.no_grad():
        out = attn(x, causal=True, key_padding_mask=pad)
        ref = self_attention_reference(attn, x, allowed)
    if use_pad:  # only real query positions are defined by the reference
        out, ref = out[pad], ref[pad]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_transformer_block_matches_reference():
    block = randomize(TransformerBlock(16, 2, causal=True))
    x = torch.randn(2, 6, 16)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        h = x + self_attention_reference(block.attn, block.ln_attn(x), allowed)
        ref = h + block.mlp(block.ln_mlp(h))
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)


def test_transformer_is_causal():
    torch.manual_seed(0)
    model = Transformer(16, 3, 4, causal=True).eval()
    x = torch.randn(2, 8, 16)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 3, 16)
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_transformer_padding_mask_hides_padding_and_stays_finite():
    torch.manual_seed(0)
    model = Transformer(16, 2, 4).eval()  # bidirectional
    x = torch.randn(2, 6, 16)
    pad = torch.tensor([[True] * 4 + [False] * 2, [False] + [True] * 5])  # incl. a leading pad
    changed = x.clone()
    changed[0, 4:] = torch.randn(2, 16) * 5
    changed[1, 0] = torch.randn(16) * 5
    with torch.no_grad():
        a, b = model(x, pad), model(changed, pad)
        assert torch.isfinite(model(x, pad)).all()
        assert torch.isfinite(Transformer(16, 1, 4, causal=True)(x, pad)).all()  # leading pad + causal
    torch.testing.assert_close(a[pad], b[pad])
    assert model(x).shape == (2, 6, 16)


def test_transformer_checkpointing_same_outputs_and_gradients():
    results = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        model = Transformer(16, 2, 4, causal=True, dropout=0.1, use_checkpoint=use_checkpoint).train()
        x = torch.randn(2, 6, 16, requires_grad=True)
        pad = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
        torch.manual_seed(1)
        out = model(x, pad)
        out.square().mean().backward()
        results.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in model.parameters()]))
    (o0, x0, g0), (o1, x1, g1) = results
    torch.testing.assert_close(o1, o0)
    torch.testing.assert_close(x1, x0)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a)


def test_transformer_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = Transformer(32, 2, 4, causal=True).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert (out.float() - ref).norm() / ref.norm() < 0.05
