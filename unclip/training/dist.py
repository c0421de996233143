"""torch.distributed plumbing: read the torchrun environment, wrap a model for DDP or FSDP2, skip
gradient sync on non-final micro-steps, reduce scalars. One plain process needs none of it."""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", backend: str = "auto", timeout_s: int = 1800) -> DistEnv:
    """Join the process group when torchrun's WORLD_SIZE > 1 (gloo on CPU, nccl on GPU); else a
    single-process environment. ``device``: "auto" picks cuda:LOCAL_RANK when a GPU is present."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"trainer.device={device!r}: expected 'auto', 'cpu' or 'cuda'")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no GPU is visible; use trainer.device=cpu")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistEnv(rank, local_rank, world, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s value of a small picklable object on every rank (over the wire, never on disk)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a float tensor (NaN/inf on any rank propagate to all, so all skip together)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def native_bf16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bf16 matmuls and convolutions run natively (faster than fp32) on ``device``: CUDA with bf16
    support, or an x86 CPU with AVX512-BF16 or AMX. An AVX2-only CPU emulates bf16 convolutions — measured
    15× slower than fp32 for the tiny decoder's training step on our 2-core AVX2 VM."""
    if device.type == "cuda":  # Ampere (sm_80) and later; is_bf16_supported() also counts emulation
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" | "bf16" as given; "auto": bf16 where the device runs it natively (``native_bf16``), else fp32."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"trainer.precision={precision!r}: expected 'fp32', 'bf16' or 'auto'")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def resolve_strategy(strategy: str, env: DistEnv) -> str:
    if strategy == "auto":
        return "ddp" if env.distributed else "none"
    if strategy not in ("none", "ddp", "fsdp"):
        raise ValueError(f"trainer.strategy={strategy!r}: expected 'auto', 'none', 'ddp' or 'fsdp'")
    if strategy != "none" and not env.distributed and strategy == "ddp":
        return "none"  # DDP over one process is the plain model
    return strategy


def wrap_model(model: nn.Module, strategy: str, env: DistEnv, *, find_unused_parameters: bool = False) -> nn.Module:
    """DDP, or FSDP2: ``fully_shard`` on every direct child with parameters, then on the root."""
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [env.device.index] if env.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if not dist.is_initialized():  # FSDP2 needs a process group, even of one
            raise RuntimeError("trainer.strategy=fsdp needs torchrun (a process group); use strategy=none")
        mesh = init_device_mesh(env.device.type, (env.world_size,))
        for child in model.children():
            if any(p.requires_grad for p in child.parameters()):
                fully_shard(child, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside DDP (FSDP2 shards in place: the module is its own root)."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) \
        else model


@contextlib.contextmanager
def maybe_no_sync(model: nn.Module, sync: bool):
    """Skip the gradient all-reduce on non-final micro-steps (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync``); gradients accumulate locally and sync on the final one."""
    if sync:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2 shard) gathered to the full tensor; a plain tensor as is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradients' total norm to ``max_norm`` (0: no clipping) and return that norm before clipping,
    a 0-d tensor left on the device (under FSDP2 gathered from the shards: every rank calls this)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return full_tensor(norm)
