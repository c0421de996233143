"""Run logging on rank 0: wandb (offline by default — a real run directory inside the run dir that
``wandb sync`` uploads later; never the network), or nothing; PNG sample grids; memory figures."""
from __future__ import annotations

import logging
import os
import resource
import sys
import uuid
from pathlib import Path
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)


class Tracker:
    """``log(metrics, step)`` and ``log_image(key, path, step)``; a no-op when disabled."""

    def __init__(self, name: str, run_dir: Path, config: dict[str, Any], *, project: str = "unclip",
                 mode: str = "offline", run_name: str | None = None, enabled: bool = True):
        self.run = None
        if not enabled or name == "none":
            return
        if name != "wandb":
            raise ValueError(f"logger.name={name!r}: expected 'wandb' or 'none'")
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}: expected 'offline', 'online' or 'disabled'")
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # belt and braces: the SDK never dials out
        id_file = run_dir / "wandb_id.txt"  # a resumed run appends to the same wandb run
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=project, dir=str(run_dir), id=run_id, resume="allow", mode=mode,
                              name=run_name or run_dir.name, config=config,
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_image(self, key: str, path: Path, step: int) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    """Save images [N, 3, H, W] in [−1, 1] as one PNG grid (``nrow`` per row)."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, _, h, w = images.shape
    nrow = nrow or n
    rows = -(-n // nrow)
    grid = torch.zeros(3, rows * h, nrow * w, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak memory: GPU allocator peak on CUDA; the process's peak RSS on the CPU (GiB)."""
    if device.type == "cuda":
        return {"mem/gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"mem/cpu_peak_rss_gib": rss / (2**30 if sys.platform == "darwin" else 2**20)}
