"""unclip-eval: score directories of generated images.

    unclip-eval caption-match images_dir=samples/a name=a clip.dir=PIPE/clip [reference=PHOTOS] [fid_weights=FILE]
    unclip-eval compare '+runs={a: samples/a, b: samples/b}' clip.dir=PIPE/clip

caption-match: the shapes oracle's caption match, CLIP score, FD / precision / recall / realism against a
reference set, into a JSON file and an HTML report; compare: pairwise preference win rates with Wilson
intervals over the same prompts and seeds. docs/evals.md has every key.
"""
from __future__ import annotations

from . import dispatch

COMMANDS = {"caption-match": "unclip.cli.caption_match", "compare": "unclip.cli.compare"}


def main() -> int:
    return dispatch("unclip-eval", COMMANDS, __doc__)
