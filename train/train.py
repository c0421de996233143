"""Train one unCLIP stage: ``python train/train.py stage=decoder experiment=shapes_tiny [key=value ...]``
(the same as the installed ``unclip-train``; the code is ``unclip/cli/train.py``).

Runs as one process or under ``torchrun --nproc_per_node N train/train.py ...`` (DDP; trainer=fsdp for
FSDP2). See docs/training.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.cli import command  # noqa: E402

if __name__ == "__main__":
    sys.exit(command("unclip.cli.train"))
