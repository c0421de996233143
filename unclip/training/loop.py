"""The one training loop for every stage (clip, prior, decoder, sr256, sr1024).

A stage supplies (model, per-sample loss, batch source, eval/sample-grid fn, export) through
``stages.build_stage``; this file does everything else, the same way for each: torchrun environment
(one plain process works too), DDP or FSDP2, bf16 autocast, gradient accumulation without sync on
non-final micro-steps, clipping, AdamW + warm-up, EMA, samples-seen accounting, per-(seed, rank,
step) reseeding, atomic checkpoints with exact resume, non-finite-loss skipping, logging, export.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

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


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from (seed, rank, step, ...): the same on resume, distinct across ranks and steps."""
    digest = hashlib.sha256("-".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


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
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, state["model"], options=options)
        set_optimizer_state_dict(model, opt, state["optimizer"], options=options)
    else:
        dist.unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])


# ------------------------------------------------------------------ the loop

def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job for ``cfg.stage.name``; returns a summary (also ``<run_dir>/summary.json``)."""
    validate_config(cfg)
    env = dist.init_distributed(cfg.trainer.device, cfg.trainer.backend)
    try:
        return _train(cfg, env)
    finally:
        dist.shutdown()


def _train(cfg: DictConfig, env: dist.DistEnv) -> dict[str, Any]:
    run_dir = Path(dist.broadcast_object(str(cfg.run_dir)))  # rank 0's, should the timestamps differ
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["run_dir"] = str(run_dir)
    if env.is_main:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    micro, accum = batch_arithmetic(cfg.batch_size, env.world_size, cfg.trainer.micro_batch)
    total_steps = math.ceil(cfg.total_samples / cfg.batch_size)
    precision = cfg.trainer.precision
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"trainer.precision={precision!r}: expected 'fp32' or 'bf16'")

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    parts: StageParts = build_stage(cfg, env)
    strategy = dist.resolve_strategy(cfg.trainer.strategy, env)
    model = dist.wrap_model(parts.model, strategy, env, find_unused_parameters=cfg.trainer.find_unused_parameters)
    raw = dist.unwrap(model)
    o = cfg.stage.optim
    opt = make_optimizer(model, o)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, o.warmup_steps, o.schedule))
    ema = EMA(model, cfg.stage.ema.decay, cfg.stage.ema.warmup)
    stream = BatchStream(parts.pipeline(env.rank, env.world_size, micro), cfg.data.num_workers, parts.describe)
    step, samples_seen, skipped, in_a_row = 0, 0, 0, 0

    if cfg.checkpoint.resume:
        found = None
        if env.is_main:
            d = ckpt.find_resume_dir(run_dir)
            latest = ckpt.list_checkpoints(d) if d else []
            found = str(d) if latest else None
        found = dist.broadcast_object(found)
        loaded = ckpt.load_latest(found) if found else None
        if loaded is None:
            log.warning("checkpoint.resume=true but no checkpoint was found for %s: starting from scratch", run_dir)
        else:
            path, state = loaded
            _load_model_optim(model, opt, state, strategy)
            sched.load_state_dict(state["scheduler"])
            ema.load_full_state_dict(state["ema"])
            step, samples_seen = int(state["step"]), int(state["samples_seen"])
            skipped, in_a_row = int(state["skipped_nonfinite"]), int(state["nonfinite_in_a_row"])
            if len(state["data"]) == env.world_size:
                stream.load_state_dict(state["data"][env.rank])
                ckpt.set_rng_state(state["rng"][env.rank])
            else:
                log.warning("checkpoint %s was written by %d ranks, this run has %d: data restarts at epoch %d",
                            path, len(state["data"]), env.world_size, state["data"][0]["epoch"])
                stream.load_state_dict({"epoch": state["data"][0]["epoch"], "index": 0})
            if env.is_main:
                log.info("resumed from %s at step %d (%d samples seen)", path, step, samples_seen)

    tracker = Tracker(cfg.logger.name, run_dir, resolved | {"stage_info": parts.info}, project=cfg.logger.project,
                      mode=cfg.logger.mode, run_name=cfg.name, enabled=env.is_main)
    bar = tqdm(total=total_steps, initial=step, desc=cfg.stage.name, dynamic_ncols=True,
               disable=not (env.is_main and cfg.logger.progress))
    if env.is_main:
        n_params = sum(p.numel() for p in raw.parameters())
        log.info("stage %s: %.2fM parameters, %d steps of %d samples (%d per rank × %d ranks × %d accumulation), "
                 "strategy %s, %s, run dir %s", cfg.stage.name, n_params / 1e6, total_steps, cfg.batch_size, micro,
                 env.world_size, accum, strategy, precision, run_dir)
    autocast = (lambda: torch.autocast(env.device.type, dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext
    losses: list[float] = []
    last_eval: dict[str, float] = {}
    last_ckpt: Path | None = None
    window_t, window_samples = time.perf_counter(), 0
    model.train()

    def state_dict() -> dict[str, Any]:
        return {"model": _model_state(model, strategy), "optimizer": _optim_state(model, opt, strategy),
                "scheduler": sched.state_dict(), "ema": ema.full_state_dict(), "step": step,
                "samples_seen": samples_seen, "skipped_nonfinite": skipped, "nonfinite_in_a_row": in_a_row,
                "data": dist.all_gather_object(stream.state_dict()), "rng": dist.all_gather_object(ckpt.rng_state()),
                "config": resolved}

    def save() -> Path | None:
        state = state_dict()  # collective under FSDP / for the per-rank parts
        path = ckpt.save_checkpoint(run_dir, step, state, cfg.checkpoint.keep) if env.is_main else None
        dist.barrier()
        return path

    def ema_module() -> torch.nn.Module | None:
        full = ema.full_state_dict()  # collective under FSDP
        if not env.is_main:
            return None
        module = parts.new_model()
        module.load_state_dict(full)
        return module.eval()

    def evaluate() -> None:
        nonlocal last_eval
        module = ema_module()
        if env.is_main and parts.evaluate is not None:
            result = parts.evaluate(module, torch.Generator().manual_seed(cfg.seed))
            last_eval = dict(result.metrics)
            if result.images is not None:
                path = save_grid(result.images, run_dir / "samples" / f"step-{step:09d}.png", result.nrow)
                tracker.log_image("samples", path, step)
                last_eval["grid"] = str(path)
            tracker.log({k: v for k, v in result.metrics.items()}, step)
            log.info("eval at step %d: %s", step, {k: v for k, v in last_eval.items()})
        dist.barrier()

    while step < total_steps:
        torch.manual_seed(derive_seed(cfg.seed, env.rank, step))  # dropout etc.: resumable from (seed, rank, step)
        opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=env.device)
        for micro_step in range(accum):
            batch = next(stream)
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, env.rank, step, micro_step))
            with dist.maybe_no_sync(model, sync=micro_step == accum - 1):
                with autocast():
                    loss = parts.loss(model, batch, g).float().mean() / accum
                loss.backward()
            loss_sum += loss.detach()
        loss_value = float(dist.all_reduce_mean(loss_sum))
        step_samples = cfg.batch_size
        if math.isfinite(loss_value):
            grad_norm = dist.clip_grad_norm(model, o.grad_clip)
        else:
            grad_norm = float("nan")
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            skipped, in_a_row = skipped + 1, in_a_row + 1
            opt.zero_grad(set_to_none=True)
            log.warning("non-finite loss/grad at step %d (%d in a row, %d in all): step skipped", step, in_a_row,
                        skipped)
            if in_a_row >= cfg.max_nonfinite:
                raise NonFiniteLossError(
                    f"{in_a_row} non-finite losses in a row at step {step} (stage {cfg.stage.name}). Try a lower "
                    f"stage.optim.lr (now {o.lr}), a longer stage.optim.warmup_steps (now {o.warmup_steps}), "
                    f"trainer.precision=fp32 (now {precision}), a smaller stage.optim.grad_clip, or check the data; "
                    f"resume from the last good checkpoint with checkpoint.resume=true run_dir={run_dir}")
        else:
            in_a_row = 0
            opt.step()
            sched.step()
            if parts.after_step is not None:
                parts.after_step(raw)
            ema.update(step)
        step += 1
        samples_seen += step_samples
        window_samples += step_samples
        losses.append(loss_value)
        bar.update(1)

        if env.is_main and (step % max(1, cfg.logger.every_steps) == 0 or step == total_steps):
            elapsed = time.perf_counter() - window_t
            rate = window_samples / max(elapsed, 1e-9)
            metrics = {"train/loss": loss_value, "train/grad_norm": grad_norm, "train/lr": sched.get_last_lr()[0],
                       "train/samples_seen": samples_seen, "train/samples_per_s": rate,
                       "train/skipped_nonfinite": skipped, "train/ema_decay": ema.decay_at(step - 1),
                       **memory_metrics(env.device)}
            tracker.log(metrics, step)
            bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.1f}")
            window_t, window_samples = time.perf_counter(), 0
        if cfg.checkpoint.every_steps > 0 and step % cfg.checkpoint.every_steps == 0 and step < total_steps:
            last_ckpt = save()
        if cfg.sample.every_steps > 0 and step % cfg.sample.every_steps == 0 and step < total_steps:
            evaluate()

    bar.close()
    if total_steps > 0:
        last_ckpt = save()
    if cfg.sample.every_steps >= 0:
        evaluate()
    exports = export(cfg, parts, ema_module(), run_dir)
    summary = {"stage": cfg.stage.name, "run_dir": str(run_dir), "steps": step, "samples_seen": samples_seen,
               "skipped_nonfinite": skipped, "losses": losses, "eval": last_eval,
               "checkpoint": str(last_ckpt) if last_ckpt else None, "exports": exports,
               "world_size": env.world_size, "strategy": strategy, "param_digest": param_digest(raw)}
    if env.is_main:
        atomic_write_json(run_dir / "summary.json", summary)
    tracker.finish()
    dist.barrier()
    return summary


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
