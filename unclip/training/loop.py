"""The one training loop for every stage (clip, prior, decoder, sr256, sr1024).

A stage supplies (model, per-sample loss, batch source, eval/sample-grid fn, export) through
``stages.build_stage``; this file does everything else, the same way for each: torchrun environment
(one plain process works too), DDP or FSDP2, bf16 autocast, gradient accumulation without sync on
non-final micro-steps, clipping, AdamW + warm-up, EMA, samples-seen accounting, per-(seed, rank,
step) reseeding, atomic checkpoints with exact resume, non-finite-loss skipping, logging, export.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from unclip.compile import maybe_compile
from unclip.diffusion import derive_seed
from unclip.io import atomic_write_json, atomic_write_text

from . import checkpoint as ckpt
from . import dist
from .config import validate_config
from .data import BatchStream
from .ema import EMA
from .stages import StageParts, build_stage
from .tracking import Tracker, memory_metrics, save_grid

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row."""


# Tags of the per-step seeds derive_seed(seed, rank, step, tag, ...): the global RNG (dropout) and each micro-step's
# loss generator (timesteps, noise, drop masks) draw independent streams. Non-zero: SeedSequence drops trailing zeros.
GLOBAL_RNG, LOSS_RNG = 1, 2


def batch_arithmetic(batch_size: int, world: int, micro_batch: int | None) -> tuple[int, int]:
    """(micro batch per rank, accumulation steps) with global batch = micro × world × accumulation."""
    micro = micro_batch or batch_size // world
    accum = batch_size // (micro * world) if micro > 0 else 0
    if micro < 1 or accum < 1 or micro * world * accum != batch_size:
        raise ValueError(f"batch_size={batch_size} is not trainer.micro_batch={micro_batch} × world size {world} × "
                         "an integer number of accumulation steps; change batch_size or trainer.micro_batch")
    return micro, accum


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up over ``warmup`` steps, then constant or cosine to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    raise ValueError(f"stage.optim.schedule={schedule!r}: expected 'constant' or 'cosine'")


def make_optimizer(model: torch.nn.Module, o) -> torch.optim.AdamW:
    """AdamW; weight decay on ≥2-d weights only (gains, biases, embeddings' scales and nulls exempt)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "logit_scale" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, **optimizer_kernel(decay + no_decay))


def optimizer_kernel(params: list[torch.Tensor]) -> dict[str, bool]:
    """The fused AdamW kernel (one pass over all tensors: about 3.5x faster than the for-loop one on the demo
    decoder's 4.8M parameters on 2 CPU cores, bench/cpu_kernels.py) for plain CPU / CUDA tensors; the multi-tensor
    ``foreach`` kernel for sharded (FSDP2 DTensor) ones. Same update; the fused kernel rounds differently
    in the last bit."""
    from torch.distributed.tensor import DTensor

    plain = all(not isinstance(p, DTensor) and p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in params)
    return {"fused": True} if plain else {"foreach": True}


# ------------------------------------------------------------------ model / optimizer state (full, CPU)

def _model_state(model, strategy: str) -> dict[str, torch.Tensor]:
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in dist.unwrap(model).state_dict().items()}


def _optim_state(model, opt, strategy: str) -> dict[str, Any]:
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def _load_model_optim(model, opt, state: dict[str, Any], strategy: str) -> None:
    # A saved state carries its run's kernel flags; this run's go in before loading, so that the load puts
    # the step counters where this run's kernel wants them (the fused one on the parameters' device).
    kernel = {"fused": None, "foreach": None} | optimizer_kernel([p for g in opt.param_groups for p in g["params"]])
    saved = dict(state["optimizer"])
    saved["param_groups"] = [{**g, **kernel} for g in saved["param_groups"]]
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, state["model"], options=options)
        set_optimizer_state_dict(model, opt, saved, options=options)
    else:
        dist.unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(saved)


# ------------------------------------------------------------------ the loop

@dataclasses.dataclass
class _Run:
    """One job's pieces (built once by ``_setup``) and the counters a checkpoint carries."""

    cfg: DictConfig
    env: dist.DistEnv
    run_dir: Path
    resolved: dict[str, Any]  # the config as written to config.yaml and into every checkpoint
    micro: int  # micro batch per rank
    accum: int  # accumulation steps per optimizer step
    total_steps: int
    parts: StageParts
    strategy: str
    model: torch.nn.Module  # wrapped (DDP / FSDP2) or plain
    raw: torch.nn.Module  # the user module inside ``model``
    net: torch.nn.Module  # what the loss calls: ``model``, through torch.compile with trainer.compile=true
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    stream: BatchStream
    autocast: Callable[[], contextlib.AbstractContextManager]
    step: int = 0
    samples_seen: int = 0
    skipped: int = 0  # non-finite steps skipped in all
    in_a_row: int = 0  # ... and since the last good step
    last_eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    evals: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # every eval's metrics, for curves
    train_seconds: float = 0.0  # wall time in optimizer steps (evals and checkpoints excluded)
    precision: str = "fp32"  # trainer.precision as resolved on this device ("auto" -> fp32 | bf16)


@dataclasses.dataclass
class _Throughput:
    """Samples per second over the window since the last logged step."""

    start: float = dataclasses.field(default_factory=time.perf_counter)
    samples: int = 0

    def rate(self) -> float:
        return self.samples / max(time.perf_counter() - self.start, 1e-9)

    def restart(self) -> None:
        self.start, self.samples = time.perf_counter(), 0


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job for ``cfg.stage.name``; returns a summary (also ``<run_dir>/summary.json``)."""
    validate_config(cfg)
    env = dist.init_distributed(cfg.trainer.device, cfg.trainer.backend)
    try:
        return _train(cfg, env)
    finally:
        dist.shutdown()


def _train(cfg: DictConfig, env: dist.DistEnv) -> dict[str, Any]:
    """Set up (and resume), then per step: train, log, checkpoint, eval; at the end a final checkpoint,
    eval, export and summary."""
    run = _setup(cfg, env)
    if cfg.checkpoint.resume or cfg.checkpoint.resume_from:
        _resume(run)
    tracker = Tracker(cfg.logger.name, run.run_dir, run.resolved | {"stage_info": run.parts.info},
                      project=cfg.logger.project, mode=cfg.logger.mode, run_name=cfg.name, enabled=env.is_main)
    bar = tqdm(total=run.total_steps, initial=run.step, desc=cfg.stage.name, dynamic_ncols=True,
               disable=not (env.is_main and cfg.logger.progress))
    if env.is_main:
        _log_start(run)
    losses: list[float] = []
    last_ckpt: Path | None = None
    window = _Throughput()
    run.model.train()

    while run.step < run.total_steps:
        t0 = time.perf_counter()
        loss_value, grad_norm = _train_step(run)
        run.train_seconds += time.perf_counter() - t0
        run.step += 1
        run.samples_seen += cfg.batch_size
        window.samples += cfg.batch_size
        losses.append(loss_value)
        bar.update(1)

        if env.is_main and (run.step % max(1, cfg.logger.every_steps) == 0 or run.step == run.total_steps):
            _log_metrics(run, tracker, bar, window, loss_value, grad_norm)
        if _due(cfg.sample.every_steps, run):  # before the checkpoint: a resumed run keeps this point of its curve
            _evaluate(run, tracker)
        if _due(cfg.checkpoint.every_steps, run):
            last_ckpt = _save(run)

    bar.close()
    if cfg.sample.every_steps >= 0:
        _evaluate(run, tracker)
    if run.total_steps > 0:
        last_ckpt = _save(run)
    exports = export(cfg, run.parts, _ema_module(run), run.run_dir)
    summary = _summary(run, losses, last_ckpt, exports)
    if env.is_main:
        atomic_write_json(run.run_dir / "summary.json", summary)
    tracker.finish()
    dist.barrier()
    return summary


# ------------------------------------------------------------------ setup

def _prepare_run_dir(cfg: DictConfig, env: dist.DistEnv) -> tuple[Path, dict[str, Any]]:
    """The run directory (rank 0's, should the timestamps differ) and the resolved config, written there."""
    run_dir = Path(dist.broadcast_object(str(cfg.run_dir)))
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["run_dir"] = str(run_dir)
    if env.is_main:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    return run_dir, resolved


def _setup(cfg: DictConfig, env: dist.DistEnv) -> _Run:
    """Batch arithmetic, the stage, its wrapped model, AdamW + warm-up schedule, EMA and batch stream."""
    run_dir, resolved = _prepare_run_dir(cfg, env)
    micro, accum = batch_arithmetic(cfg.batch_size, env.world_size, cfg.trainer.micro_batch)
    total_steps = math.ceil(cfg.total_samples / cfg.batch_size)
    precision = dist.resolve_precision(cfg.trainer.precision, env.device)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    parts: StageParts = build_stage(cfg, env)
    if cfg.model.get("init_from"):
        _init_from_release(parts.model, cfg.model.init_from)
    strategy = dist.resolve_strategy(cfg.trainer.strategy, env)
    model = dist.wrap_model(parts.model, strategy, env, find_unused_parameters=cfg.trainer.find_unused_parameters)
    o = cfg.stage.optim
    opt = make_optimizer(model, o)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, o.warmup_steps, o.schedule))
    ema = EMA(model, cfg.stage.ema.decay, cfg.stage.ema.warmup)
    stream = BatchStream(parts.pipeline(env.rank, env.world_size, micro), cfg.data.num_workers, parts.describe)
    autocast = (lambda: torch.autocast(env.device.type, dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext
    return _Run(cfg=cfg, env=env, run_dir=run_dir, resolved=resolved, micro=micro, accum=accum,
                total_steps=total_steps, parts=parts, strategy=strategy, model=model, raw=dist.unwrap(model),
                net=maybe_compile(model, cfg.trainer.compile, env.device),
                opt=opt, sched=sched, ema=ema, stream=stream, autocast=autocast, precision=precision)


def _init_from_release(model: torch.nn.Module, directory: str) -> None:
    """Fine-tuning: start from a release's weights (every tensor, buffers included: it must fit exactly)."""
    from unclip.models import load_stage

    _, released = load_stage(directory)
    try:
        model.load_state_dict(released.state_dict(), strict=True)
    except RuntimeError as err:
        raise ValueError(f"model.init_from={directory}: its weights do not fit this run's network "
                         f"(model.overrides that change shapes?): {err}") from None
    log.info("initialised from the release %s", directory)


def _resume(run: _Run) -> None:
    """Restore model, optimizer, schedule, EMA, counters, data position and RNG from the latest checkpoint."""
    env, explicit = run.env, run.cfg.checkpoint.resume_from
    source = Path(explicit) if explicit else run.run_dir
    if explicit and not source.exists():
        raise FileNotFoundError(f"checkpoint.resume_from={explicit}: no such checkpoint file or run directory")
    loaded = ckpt.load_resume_source(source)
    if loaded is None:
        if explicit:
            raise FileNotFoundError(f"checkpoint.resume_from={explicit}: no readable checkpoint there")
        log.warning("checkpoint.resume=true but %s holds no checkpoint: starting from scratch (only this run "
                    "directory is looked at; checkpoint.resume_from=PATH resumes another)", run.run_dir)
        return
    differences = ckpt.config_differences(loaded[1].get("config") or {}, run.resolved)
    if differences:
        raise ValueError(f"checkpoint {loaded[0]} was written by a run whose config differs from this one on what "
                         f"shapes the model or the data order: {'; '.join(differences)}. Resume with the same "
                         "settings, or start a new run_dir without checkpoint.resume")
    path, state = loaded
    _load_model_optim(run.model, run.opt, state, run.strategy)
    run.sched.load_state_dict(state["scheduler"])
    run.ema.load_full_state_dict(state["ema"])
    run.step, run.samples_seen = int(state["step"]), int(state["samples_seen"])
    run.skipped, run.in_a_row = int(state["skipped_nonfinite"]), int(state["nonfinite_in_a_row"])
    run.evals, run.train_seconds = list(state.get("evals", [])), float(state.get("train_seconds", 0.0))
    if len(state["data"]) == env.world_size:
        run.stream.load_state_dict(state["data"][env.rank])
        ckpt.set_rng_state(state["rng"][env.rank])
    else:
        log.warning("checkpoint %s was written by %d ranks, this run has %d: data restarts at epoch %d",
                    path, len(state["data"]), env.world_size, state["data"][0]["epoch"])
        run.stream.load_state_dict({"epoch": state["data"][0]["epoch"], "index": 0})
    if env.is_main:
        log.info("resumed from %s at step %d (%d samples seen)", path, run.step, run.samples_seen)


def _log_start(run: _Run) -> None:
    cfg = run.cfg
    n_params = sum(p.numel() for p in run.raw.parameters())
    log.info("stage %s: %.2fM parameters, %d steps of %d samples (%d per rank × %d ranks × %d accumulation), "
             "strategy %s, %s, run dir %s", cfg.stage.name, n_params / 1e6, run.total_steps, cfg.batch_size,
             run.micro, run.env.world_size, run.accum, run.strategy, run.precision, run.run_dir)


# ------------------------------------------------------------------ one optimizer step

def _train_step(run: _Run) -> tuple[float, float]:
    """Accumulate one global batch, then step the optimizer or, on a non-finite loss or gradient, skip.
    Returns (mean loss over ranks, gradient norm): the step's one read back to the host."""
    # dropout etc.: resumable from (seed, rank, step)
    torch.manual_seed(derive_seed(run.cfg.seed, run.env.rank, run.step, GLOBAL_RNG))
    run.opt.zero_grad(set_to_none=True)
    loss = _accumulate_gradients(run)
    # clipped on every rank whatever the loss (a non-finite step's gradients are dropped below), so that
    # the loss and the norm come back to the host together, in one sync
    grad_norm = dist.clip_grad_norm(run.model, run.cfg.stage.optim.grad_clip)
    loss_value, grad_norm_value = torch.stack([loss.float(), grad_norm.float().to(loss.device)]).cpu().tolist()
    if math.isfinite(loss_value) and math.isfinite(grad_norm_value):
        _apply_update(run)
    else:
        _skip_nonfinite(run)
    return loss_value, grad_norm_value


def _accumulate_gradients(run: _Run) -> torch.Tensor:
    """Backward over ``accum`` micro-batches, syncing gradients on the last only; the loss averaged over
    ranks, left on the device."""
    loss_sum = torch.zeros((), device=run.env.device)
    for micro_step in range(run.accum):
        batch = next(run.stream)
        g = torch.Generator().manual_seed(derive_seed(run.cfg.seed, run.env.rank, run.step, LOSS_RNG, micro_step))
        with dist.maybe_no_sync(run.model, sync=micro_step == run.accum - 1):
            with run.autocast():
                loss = run.parts.loss(run.net, batch, g).float().mean() / run.accum
            loss.backward()
        loss_sum += loss.detach()
    return dist.all_reduce_mean(loss_sum)


def _apply_update(run: _Run) -> None:
    run.in_a_row = 0
    run.opt.step()
    run.sched.step()
    if run.parts.after_step is not None:
        run.parts.after_step(run.raw)
    run.ema.update(run.step)


def _skip_nonfinite(run: _Run) -> None:
    """Drop this step's gradients; raise with advice after ``max_nonfinite`` in a row."""
    cfg, o, step = run.cfg, run.cfg.stage.optim, run.step
    run.skipped, run.in_a_row = run.skipped + 1, run.in_a_row + 1
    run.opt.zero_grad(set_to_none=True)
    log.warning("non-finite loss/grad at step %d (%d in a row, %d in all): step skipped", step, run.in_a_row,
                run.skipped)
    if run.in_a_row >= cfg.max_nonfinite:
        raise NonFiniteLossError(
            f"{run.in_a_row} non-finite losses in a row at step {step} (stage {cfg.stage.name}). Try a lower "
            f"stage.optim.lr (now {o.lr}), a longer stage.optim.warmup_steps (now {o.warmup_steps}), "
            f"trainer.precision=fp32 (now {cfg.trainer.precision}), a smaller stage.optim.grad_clip, or check the "
            f"data; resume from the last good checkpoint with checkpoint.resume=true run_dir={run.run_dir}")


# ------------------------------------------------------------------ periodic work

def _due(every_steps: int, run: _Run) -> bool:
    """Whether a periodic task runs after this step (the final step has its own, unconditional one)."""
    return every_steps > 0 and run.step % every_steps == 0 and run.step < run.total_steps


def _log_metrics(run: _Run, tracker: Tracker, bar: tqdm, window: _Throughput, loss_value: float,
                 grad_norm: float) -> None:
    rate = window.rate()
    metrics = {"train/loss": loss_value, "train/grad_norm": grad_norm, "train/lr": run.sched.get_last_lr()[0],
               "train/samples_seen": run.samples_seen, "train/samples_per_s": rate,
               "train/skipped_nonfinite": run.skipped, "train/ema_decay": run.ema.decay_at(run.step - 1),
               **memory_metrics(run.env.device)}
    tracker.log(metrics, run.step)
    bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.1f}")
    window.restart()


def _state_dict(run: _Run) -> dict[str, Any]:
    """The checkpoint: full model/optimizer/EMA state, counters, every rank's data position and RNG, config."""
    return {"model": _model_state(run.model, run.strategy), "optimizer": _optim_state(run.model, run.opt, run.strategy),
            "scheduler": run.sched.state_dict(), "ema": run.ema.full_state_dict(), "step": run.step,
            "samples_seen": run.samples_seen, "skipped_nonfinite": run.skipped, "nonfinite_in_a_row": run.in_a_row,
            "data": dist.all_gather_object(run.stream.state_dict()),
            "rng": dist.all_gather_object(ckpt.rng_state()), "config": run.resolved,
            "evals": run.evals, "train_seconds": run.train_seconds}


def _save(run: _Run) -> Path | None:
    """Every rank joins (collective under FSDP / for the per-rank parts); rank 0 writes and returns the path."""
    state = _state_dict(run)
    path = ckpt.save_checkpoint(run.run_dir, run.step, state, run.cfg.checkpoint.keep) if run.env.is_main else None
    dist.barrier()
    return path


def _ema_module(run: _Run) -> torch.nn.Module | None:
    """A plain eval-mode copy holding the EMA weights on rank 0; None elsewhere."""
    full = run.ema.full_state_dict()  # collective under FSDP
    if not run.env.is_main:
        return None
    module = run.parts.new_model()
    module.load_state_dict(full)
    return module.eval()


def _evaluate(run: _Run, tracker: Tracker) -> None:
    """The stage's eval on the EMA weights (rank 0): metrics and a sample grid, logged and kept in ``last_eval``."""
    module = _ema_module(run)
    if run.env.is_main and run.parts.evaluate is not None:
        result = run.parts.evaluate(module, torch.Generator().manual_seed(run.cfg.seed))
        run.last_eval = dict(result.metrics)
        if result.metrics:
            run.evals.append({"step": run.step, "samples_seen": run.samples_seen,
                              "train_seconds": round(run.train_seconds, 2), **result.metrics})
        if result.images is not None:
            path = save_grid(result.images, run.run_dir / "samples" / f"step-{run.step:09d}.png", result.nrow)
            tracker.log_image("samples", path, run.step)
            run.last_eval["grid"] = str(path)
        tracker.log({k: v for k, v in result.metrics.items()}, run.step)
        log.info("eval at step %d: %s", run.step, {k: v for k, v in run.last_eval.items()})
    dist.barrier()


def _data_counts(run: _Run) -> dict[str, int]:
    """Samples the readers skipped, summed over ranks: bad data, and images under data.min_image_size."""
    pipe = run.stream.pipeline
    mine = {"bad_samples": int(pipe.failures), "too_small": int(getattr(pipe, "too_small", 0))}
    every = dist.all_gather_object(mine)
    return {k: sum(c[k] for c in every) for k in mine}


def _summary(run: _Run, losses: list[float], last_ckpt: Path | None, exports: list[str]) -> dict[str, Any]:
    return {"stage": run.cfg.stage.name, "data": _data_counts(run), "run_dir": str(run.run_dir), "steps": run.step,
            "samples_seen": run.samples_seen, "skipped_nonfinite": run.skipped, "losses": losses,
            "eval": run.last_eval, "evals": run.evals, "train_seconds": round(run.train_seconds, 2),
            "precision": run.precision, "checkpoint": str(last_ckpt) if last_ckpt else None, "exports": exports,
            "world_size": run.env.world_size, "strategy": run.strategy, "param_digest": param_digest(run.raw)}


def param_digest(model: torch.nn.Module) -> str:
    """sha256 of this rank's parameter bytes (DDP replicas must agree; FSDP2 ranks hold different shards)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        local = p.to_local() if hasattr(p, "to_local") else p
        h.update(name.encode())
        h.update(local.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export(cfg: DictConfig, parts: StageParts, ema_module: torch.nn.Module | None, run_dir: Path) -> list[str]:
    """Rank 0 writes the EMA release to ``<run_dir>/export/<stage>`` and, with ``export_dir``, to
    ``<export_dir>/<stage>`` (the pipeline layout: run every stage with one export_dir)."""
    if ema_module is None:
        return []
    targets = [run_dir / "export" / cfg.stage.name]
    if cfg.export_dir:
        targets.append(Path(cfg.export_dir) / cfg.stage.name)
    return [str(parts.export(ema_module, t)) for t in targets]
