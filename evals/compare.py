"""``python evals/compare.py ...`` from a checkout: the same as the installed ``unclip-eval compare``
(the code is ``unclip/cli/compare.py``; docs/evals.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.cli import command  # noqa: E402
from unclip.cli.compare import main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(command("unclip.cli.compare"))
