"""``python sample/study.py {create,serve,results} ...`` from a checkout: the same as the installed
``unclip-study`` (the code is ``unclip/cli/study.py``)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from unclip.cli.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
