"""unclip-sample: sample from a pipeline directory (clip/ prior/ decoder/ [sr256/ [sr1024/]]).

    unclip-sample generate pipeline_dir=PIPE prompts='[a red star, a blue circle]' n=4 size=256 out=samples
    unclip-sample vary pipeline_dir=PIPE image=in.png n=4
    unclip-sample edit pipeline_dir=PIPE image=in.png mask=mask.png prompt='a green square'
    unclip-sample outpaint pipeline_dir=PIPE image=in.png prompt='...' right=64
    unclip-sample interpolate pipeline_dir=PIPE image=a.png image_b=b.png steps=5

Each writes PNGs with JSON sidecars (prompt, seeds, settings: enough to make the image again) and a
contact sheet. docs/sampling.md has every key.
"""
from __future__ import annotations

from . import dispatch

COMMANDS = {name: f"unclip.cli.{name}" for name in ("generate", "vary", "edit", "outpaint", "interpolate")}


def main() -> int:
    return dispatch("unclip-sample", COMMANDS, __doc__)
