"""The CPU kernel rule (unclip/nn/kernels.py): which path it picks, and that both paths compute the same op."""
import pytest
import torch

from unclip.nn import GroupNorm32, UNet, kernel_policy
from unclip.nn.kernels import attention, attention_in_float32, group_norm_in_float32

BF16 = torch.bfloat16


def _qkv(lq=24, lk=30, dtype=BF16, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, n, 16, generator=g).to(dtype).requires_grad_(grad) for n in (lq, lk, lk)]


def test_the_rule_picks_float32_only_for_recorded_short_cpu_bf16_attention():
    q, k, v = _qkv()
    assert attention_in_float32(q, k)
    with torch.no_grad():
        assert not attention_in_float32(q, k)  # sampling keeps the bf16 kernel
    assert not attention_in_float32(q.detach(), k.detach())  # nothing to differentiate
    q32, k32, _ = _qkv(dtype=torch.float32)
    assert not attention_in_float32(q32, k32)
    long_q, long_k = torch.zeros(1, 1, 1024, 8, dtype=BF16, requires_grad=True), torch.zeros(1, 1, 1029, 8, dtype=BF16)
    assert not attention_in_float32(long_q, long_k)  # 1024 x 1029 >= 2^19: the bf16 kernel wins there
    with kernel_policy("native"):
        assert not attention_in_float32(q, k)
    frozen_q = q.detach()  # frozen queries, trained context keys / values: the backward still runs
    assert attention_in_float32(frozen_q, k, v) and not attention_in_float32(frozen_q, k.detach(), v.detach())


def test_the_rule_for_group_norm_reads_layout_size_and_grad_mode():
    small = torch.zeros(2, 64, 16, 16, dtype=BF16).contiguous(memory_format=torch.channels_last)
    large = torch.zeros(2, 64, 32, 32, dtype=BF16).contiguous(memory_format=torch.channels_last)
    assert group_norm_in_float32(small) and not group_norm_in_float32(large)
    assert group_norm_in_float32(large.requires_grad_())
    with torch.no_grad():
        assert not group_norm_in_float32(large)
    assert not group_norm_in_float32(torch.zeros(2, 64, 16, 16, dtype=BF16))  # NCHW: not measured, native
    assert not group_norm_in_float32(small.float())
    with kernel_policy("native"):
        assert not group_norm_in_float32(small)
    with pytest.raises(ValueError, match="kernel_policy"):
        with kernel_policy("fastest"):
            pass


@pytest.mark.parametrize("masked", [False, True])
def test_float32_attention_and_bf16_attention_agree_with_float64(masked):
    """Both paths give the float64 result within bf16 rounding, for outputs and for every input gradient."""
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 1, 30, dtype=torch.bool)
    mask[1, ..., -7:] = False
    mask = mask if masked else None
    gy = torch.randn(2, 3, 24, 16, generator=torch.Generator().manual_seed(1))
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_in, attn_mask=mask)
    ref_grads = torch.autograd.grad(ref, ref_in, gy.double())
    for policy in ("auto", "native"):
        with kernel_policy(policy):
            out = attention(q, k, v, mask)
        assert out.dtype == BF16
        grads = torch.autograd.grad(out, (q, k, v), gy.to(BF16))
        assert (out.double() - ref).abs().max() < 0.03, policy
        for got, want in zip(grads, ref_grads):
            assert (got.double() - want).abs().max() < 0.05 * want.abs().max(), policy


def test_float32_attention_under_autocast_really_runs_in_float32():
    """Autocast would cast SDPA's float32 inputs back to bf16; the float32 path pauses it, so its output is
    the float32 result rounded once."""
    q, k, v = _qkv(seed=2)
    with torch.autocast("cpu", dtype=BF16):
        out = attention(q, k, v)
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(BF16)
    assert torch.equal(out, want)


def test_group_norm_paths_agree_in_a_unet_forward_and_backward():
    """A channels-last UNet under bf16 autocast: the float32 GroupNorm path and the native kernel normalise in
    float32 and round once (they can differ by one bf16 step: the affine is fused differently), so the outputs
    agree to bf16 rounding and the training step's gradients point the same way."""
    torch.manual_seed(0)
    net = UNet(in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1, channel_mult=(1, 2),
               attention_resolutions=(2,), num_heads=2, norm_groups=8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, GroupNorm32):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
        for p in net.parameters():
            if not p.any():  # zero-initialised output layers: give every branch a gradient
                p.normal_(0, 0.05)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    outs, grads = {}, {}
    for policy in ("auto", "native"):
        net.zero_grad()
        with kernel_policy(policy), torch.autocast("cpu", dtype=BF16):
            with torch.no_grad():
                outs[policy] = net(x, t)
            net(x, t).float().square().mean().backward()
        grads[policy] = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    with torch.no_grad():
        ref = net(x, t)  # float32
    for policy in ("auto", "native"):  # each within bf16 rounding of float32, and the two no further apart
        assert (outs[policy].float() - ref).norm() / ref.norm() < 0.02, policy
    assert (outs["auto"].float() - outs["native"].float()).norm() / ref.norm() < 0.02
    cos = torch.nn.functional.cosine_similarity(grads["auto"], grads["native"], dim=0)
    assert cos > 0.999
