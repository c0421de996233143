"""Command-line entry points: the ``unclip-*`` console commands (``[project.scripts]``) and the scripts in
train/, sample/ and evals/, which are thin wrappers kept so the documented ``python train/train.py ...``
forms keep working from a checkout. The Hydra configs ship inside the package (``unclip/configs``)."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

HYDRA_HINT = ("Overrides are Hydra's: key=value, +key=value to add, ~key to drop. --cfg job prints the composed "
              "config, --hydra-help Hydra's own options; multirun with -m.")


def hydra_command(main: Callable[[], None], doc: str | None) -> int:
    """Run a Hydra ``main``; ``-h`` / ``--help`` print what the command does, its main keys and an example."""
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print((doc or "").strip() + "\n\n" + HYDRA_HINT)
        return 0
    main()
    return 0


def command(module: str) -> int:
    """Run the Hydra job ``module.main`` as a console command (``-h``: the module's docstring)."""
    job = importlib.import_module(module)
    return hydra_command(job.main, job.__doc__)


def train() -> int:
    """``unclip-train``: see unclip/cli/train.py."""
    return command("unclip.cli.train")


def dispatch(prog: str, commands: dict[str, str], doc: str) -> int:
    """``prog SUBCOMMAND [args]``: run the Hydra job in module ``commands[SUBCOMMAND]`` with the rest."""
    sub = sys.argv[1] if len(sys.argv) > 1 else ""
    if sub not in commands:
        usage = f"usage: {prog} {{{','.join(commands)}}} [key=value ...]  (-h after a command: its help)"
        print(doc.strip() + "\n\n" + usage,
              file=sys.stdout if sub in ("-h", "--help") else sys.stderr)
        return 0 if sub in ("-h", "--help") else 2
    sys.argv = [f"{prog} {sub}", *sys.argv[2:]]
    return command(commands[sub])
