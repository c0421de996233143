"""``python -m sample.interpolate ...`` or ``python sample/interpolate.py ...`` from a checkout: the same as the
installed ``unclip-sample interpolate`` (the code is ``unclip/cli/interpolate.py``)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.cli import command  # noqa: E402
from unclip.cli.interpolate import main, run  # noqa: E402,F401  (run: for scripts and tests that call it)

if __name__ == "__main__":
    sys.exit(command("unclip.cli.interpolate"))
