"""``python evals/caption_match.py ...`` from a checkout: the same as the installed ``unclip-eval caption-match``
(the code is ``unclip/cli/caption_match.py``; docs/evals.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.cli import command  # noqa: E402
from unclip.cli.caption_match import main, run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(command("unclip.cli.caption_match"))
