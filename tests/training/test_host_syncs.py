"""No host syncs in the training step or the samplers, checked without a GPU.

On an accelerator, reading a tensor's value on the host (``.item()``, ``float(t)``, ``bool(t)``,
``.cpu()``) waits for every queued kernel, and so does a blocking copy from host memory to the device.
Tensors on PyTorch's ``meta`` device have shapes and dtypes but no data, so any read raises there: the
losses and samplers below run on meta from the drawn noise to the loss's backward (or the last sampling
step), while a dispatch mode fails any host-to-meta copy that is not non-blocking (``to_device``'s path).
The training loop's one intended read per step (the loss and the gradient norm, together) is checked
by counting ``_local_scalar_dense`` (what ``.item()``/``float``/``bool`` dispatch) over 4 and 8 steps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unclip.devices import to_device
from unclip.diffusion import GaussianDiffusion, make_betas
from unclip.diffusion.gaussian import extract
from unclip.models import StageSpec
from unclip.models.decoder import sample_decoder
from unclip.models.prior import sample_prior
from unclip.models.sampling import StageSettings
from unclip.models.upsampler import sample_upsampler
from unclip.training.stages.common import DiffusionObjective

from .conftest import compose_cfg, overrides_for

META = torch.device("meta")
SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")


def _spec(stage: str) -> StageSpec:
    return StageSpec(stage=stage, preset="tiny", overrides={}, schedule="cosine", num_timesteps=1000, mean_type=None)


def _meta(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype, device=META)


def _cases(stage: str, b: int):
    """(training condition, sampling call) of a tiny ``stage`` on meta."""
    spec = _spec(stage)
    net = spec.build_model().to(META)
    if stage == "decoder":
        cond = {"image_emb": _meta(b, 128), "text_tokens": _meta(b, 8, 128), "text_mask": _meta(b, 8, dtype=torch.bool),
                "drop_text": _meta(b, dtype=torch.bool), "drop_image": _meta(b, dtype=torch.bool)}
        x0 = _meta(b, 3, 64, 64)

        def sample(diffusion, st, gens):
            return sample_decoder(net, diffusion, cond["image_emb"], cond["text_tokens"], cond["text_mask"],
                                  settings=st, mean_type=spec.mean_type, generator=gens)
    elif stage == "prior":
        d = spec.fields["clip_embed_dim"]
        cond = {"text_emb": _meta(b, d), "text_tokens": _meta(b, 8, spec.fields["clip_token_width"]),
                "text_mask": _meta(b, 8, dtype=torch.bool), "drop_text": _meta(b, dtype=torch.bool)}
        x0 = _meta(b, d)

        def sample(diffusion, st, gens):
            return sample_prior(net, diffusion, cond["text_emb"], cond["text_tokens"], cond["text_mask"],
                                settings=st, mean_type=spec.mean_type, generator=gens)
    else:
        size = spec.fields["image_size"]
        cond = {"low_res": _meta(b, 3, spec.fields["low_res_size"], spec.fields["low_res_size"])}
        x0 = _meta(b, 3, size, size)

        def sample(diffusion, st, gens):
            return sample_upsampler(net, diffusion, cond["low_res"], settings=st, mean_type=spec.mean_type,
                                    generator=gens)
    return spec, net, x0, cond, sample


class _BlockingCopies(TorchDispatchMode):
    """Records every host-to-meta copy made without ``non_blocking=True``."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].device.type == "cpu" \
                and kwargs.get("device") == META and not kwargs.get("non_blocking", False):
            self.seen.append(f"{tuple(args[0].shape)} {args[0].dtype}")
        if func is torch.ops.aten.copy_.default and args[0].device == META and args[1].device.type == "cpu" \
                and not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False)):
            self.seen.append(f"copy_ {tuple(args[1].shape)}")
        return func(*args, **kwargs)


def test_the_copy_detector_sees_a_blocking_copy():
    with _BlockingCopies() as copies:
        torch.zeros(3).to(META)
        to_device(torch.zeros(4), META)
    assert copies.seen == ["(3,) torch.float32"]


@pytest.mark.parametrize("stage", ["decoder", "prior", "sr256"])
def test_losses_and_samplers_run_without_reading_the_device(stage):
    b = 2
    case = _cases(stage, b)  # the network is moved to meta before the detector starts
    with _BlockingCopies() as copies:
        _run_on_meta(b, *case)
    assert copies.seen == [], f"blocking host-to-device copies: {copies.seen}"


def _run_on_meta(b: int, spec, net, x0, cond, sample) -> None:
    objective = DiffusionObjective(spec, "hybrid" if spec.learned_variance else "mse")
    loss = objective(net, x0, cond, torch.Generator().manual_seed(0))
    assert loss.shape == (b,) and loss.device == META
    loss.mean().backward()
    assert all(p.grad is not None and p.grad.device == META for p in net.parameters() if p.requires_grad)
    with torch.no_grad():
        for sampler in SAMPLERS:
            gens = [torch.Generator().manual_seed(i) for i in range(b)]
            out = sample(objective.diffusion, StageSettings(sampler, 3, guidance_scale=1.0 if spec.stage == "sr256"
                                                            else 2.0), gens)
            assert out.device == META and out.shape[0] == b


def test_extract_gathers_on_the_device_with_the_host_values():
    diffusion = GaussianDiffusion(make_betas("cosine"))
    t = torch.tensor([0, 17, 999, 500])
    cpu = extract(diffusion.sqrt_alphas_cumprod, t, torch.zeros(4, 3, 2, 2))
    assert torch.equal(cpu.flatten(), torch.from_numpy(diffusion.sqrt_alphas_cumprod[t.numpy()]).float())
    on_meta = extract(diffusion.sqrt_alphas_cumprod, to_device(t, META), _meta(4, 3, 2, 2))
    assert on_meta.device == META and on_meta.shape == (4, 1, 1, 1)
    assert to_device(t, "cpu") is t  # a CPU tensor stays where it is, uncopied
    with pytest.raises(ValueError, match=r"ranges over \[0, 1000\]"):
        extract(diffusion.sqrt_alphas_cumprod, torch.tensor([0, 1000]), torch.zeros(2))
    assert np.isfinite(cpu.numpy()).all()


class _ScalarReads(TorchDispatchMode):
    """Counts the ops that copy one value to the host (``.item()``, ``float(t)``, ``bool(t)``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _reads_in_training(tiny_data, tmp_path, steps: int) -> int:
    from unclip.training import train

    cfg = compose_cfg(overrides_for("decoder", tiny_data, tmp_path / f"run{steps}", f"total_samples={4 * steps}",
                                    "checkpoint.every_steps=0", "logger.every_steps=1000"))
    with _ScalarReads() as reads:
        train(cfg)
    return reads.count


def test_a_training_step_reads_no_single_values_back(tiny_data, tmp_path):
    """The loop reads the loss and the gradient norm back together (one ``.cpu()`` per step, which does
    not dispatch this op); any ``.item()``-style read in the step would make 8 steps count more than 4."""
    assert _reads_in_training(tiny_data, tmp_path, 8) == _reads_in_training(tiny_data, tmp_path, 4)


def test_schedule_tables_are_copied_once_per_array_and_dropped_with_it():
    import gc

    from unclip.diffusion import gaussian

    diffusion = GaussianDiffusion(make_betas("cosine")).respace(7)
    first = gaussian._table(diffusion.betas, META)
    assert gaussian._table(diffusion.betas, META) is first  # reused: no upload per lookup
    key = (id(diffusion.betas), "meta")
    assert key in gaussian._TABLES
    del diffusion, first
    gc.collect()
    assert key not in gaussian._TABLES
