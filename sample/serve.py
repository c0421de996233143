"""``python sample/serve.py PIPELINE_DIR [options]`` from a checkout: the same as the installed
``unclip-serve`` (the code is ``unclip/cli/serve.py``; ``--help`` lists every option)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.cli.serve import config_from_args, main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    main()
