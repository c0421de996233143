"""Write shapes webdataset shards.

    python tools/make_shapes.py --out data/shapes --split train --n 20000 --resolution 64 \
        --extra-resolutions 256 --seed 0 --shard-size 1000 --heldout 'star:red,circle:blue'
"""

from __future__ import annotations

import argparse
import os
import sys

from tqdm import tqdm

from unclip.data.write_shards import manifest_path, write_shards


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (may hold several splits)")
    p.add_argument("--split", default="train", choices=["train", "val", "heldout"])
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--resolution", type=int, default=64, help="main image resolution (member 'png')")
    p.add_argument("--extra-resolutions", type=int, nargs="*", default=[], help="also store '{r}.png' members")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--heldout", default=None, help="held-out combos never in train, e.g. 'star:red,circle:blue'")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of attribute signatures in val")
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="replace shards of this split written with another config")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    existed = os.path.exists(manifest_path(args.out, args.split))
    try:
        manifest = write_shards(
            args.out, split=args.split, n=args.n, resolution=args.resolution,
            extra_resolutions=args.extra_resolutions, seed=args.seed, shard_size=args.shard_size,
            heldout=args.heldout, val_fraction=args.val_fraction, overwrite=args.overwrite,
            num_workers=args.workers,
            progress=lambda it: tqdm(it, total=args.n, desc=f"shapes {args.split}", unit="img"),
        )
    except (FileExistsError, ValueError) as exn:
        print(f"make_shapes: error: {exn}", file=sys.stderr)
        return 2
    shards = manifest["shards"]
    if existed and not args.overwrite:
        print("already written with this config; nothing to do")
    print(f"{sum(manifest['counts'])} {args.split} samples in {len(shards)} shards: "
          f"{args.out}/{shards[0]} .. {shards[-1]} (manifest {args.out}/shapes-{args.split}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
