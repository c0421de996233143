"""unclip-convert: bring pretrained weights into unclip's layout (local files only; nothing is downloaded).

    unclip-convert karlo KARLO_DIR PIPELINE_DIR [--clip ViT-L-14.pt]
        Kakao Brain's Karlo v1.0 alpha in the diffusers layout (prior, text_proj, decoder, super_res_first/last,
        text_encoder, schedulers) -> a pipeline directory (clip/ prior/ decoder/ sr256/) that
        UnCLIPPipeline.load, unclip-sample and training (model.init_from=PIPELINE_DIR/decoder) read. Karlo ships
        only CLIP's text tower: --clip gives the image tower (OpenAI's ViT-L-14.pt, or a transformers
        openai/clip-vit-large-patch14 folder) unless KARLO_DIR has image_encoder/.
    unclip-convert clip HF_CLIP_DIR CLIP_DIR
        A transformers CLIPModel folder -> a FrozenCLIP directory (a pipeline's clip/, or clip.path=).

OpenAI's TorchScript .pt files need no conversion: FrozenCLIP.create("ViT-L-14-quickgelu", weights="ViT-L-14.pt").
See docs/pretrained.md.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .components import ConversionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unclip-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    karlo = sub.add_parser("karlo", help="a Karlo (diffusers UnCLIPPipeline) folder -> a pipeline directory")
    karlo.add_argument("src")
    karlo.add_argument("dest")
    karlo.add_argument("--clip", help="the CLIP image tower: OpenAI's ViT-L-14.pt or a transformers CLIP folder")
    karlo.add_argument("--overwrite", action="store_true", help="replace a non-empty DEST")
    clip = sub.add_parser("clip", help="a transformers CLIPModel folder -> a FrozenCLIP directory")
    clip.add_argument("src")
    clip.add_argument("dest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from . import convert_karlo, import_hf_clip
    try:
        if args.what == "karlo":
            out = convert_karlo(args.src, args.dest, clip=args.clip, overwrite=args.overwrite)
        else:
            out = import_hf_clip(args.src, args.dest)
    except (ConversionError, FileNotFoundError, FileExistsError) as err:
        print(f"unclip-convert: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
