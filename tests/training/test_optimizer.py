"""The optimizer's kernel: fused AdamW for plain parameters, and a resumed run keeping its own kernel flags."""
from types import SimpleNamespace

import torch

from unclip.training.loop import _load_model_optim, make_optimizer, optimizer_kernel

OPTIM = SimpleNamespace(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def _step(model, opt, seed):
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(seed))
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_plain_cpu_parameters_get_the_fused_kernel_with_the_for_loop_update():
    """Same AdamW update as the for-loop kernel, up to float rounding."""
    assert optimizer_kernel(list(_model().parameters())) == {"fused": True}
    a, b = _model(), _model()
    fused = make_optimizer(a, OPTIM)
    assert all(g["fused"] for g in fused.param_groups)
    loop = torch.optim.AdamW([{**{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
                               "params": list(pb)} for g, pb in zip(fused.param_groups, _groups(b))], foreach=False)
    for seed in range(5):
        _step(a, fused, seed)
        _step(b, loop, seed)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def _groups(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    return decay, [p for p in model.parameters() if p.ndim < 2]


def test_resume_from_an_older_optimizer_state_runs_this_runs_kernel():
    """A state saved by the for-loop / foreach AdamW (fused=None) loads into the fused run: its groups take
    this run's flags before loading (so the step counters go where the fused kernel wants them), the moments
    carry over, and the next steps match a run that never stopped."""
    model, twin = _model(), _model()
    old = torch.optim.AdamW([{"params": list(g)} for g in _groups(model)], lr=OPTIM.lr, weight_decay=0.01,
                            foreach=True)
    ref = torch.optim.AdamW([{"params": list(g)} for g in _groups(twin)], lr=OPTIM.lr, weight_decay=0.01,
                            foreach=True)
    for seed in range(3):
        _step(model, old, seed)
        _step(twin, ref, seed)
    saved = old.state_dict()
    assert saved["param_groups"][0]["fused"] is None and saved["param_groups"][0]["foreach"] is True
    opt = make_optimizer(model, OPTIM)  # the load takes the saved groups' hyperparameters
    _load_model_optim(model, opt, {"model": model.state_dict(), "optimizer": saved}, "ddp")
    assert all(g["fused"] is True and g["foreach"] is None for g in opt.param_groups)
    assert saved["param_groups"][0]["fused"] is None  # the caller's checkpoint dict is not modified
    for seed in range(3, 6):
        _step(model, opt, seed)
        _step(twin, ref, seed)
    for pa, pb in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
