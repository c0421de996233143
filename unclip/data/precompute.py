"""Precompute CLIP embeddings for image/caption shards: the command line over ``precompute_embeddings``.

    python -m unclip.data.precompute --clip runs/pipeline/clip --shards '/data/laion/{00000..00099}.tar' \
        --out /data/laion_emb
    torchrun --nproc_per_node 8 -m unclip.data.precompute --arch ViT-L-14 --weights /weights/ViT-L-14.pt \
        --shards /data/laion --out /data/laion_emb

Shards are img2dataset's output as is (jpg / jpeg / png / webp images of any size, ``txt`` captions) or
the embedded `shapes` shards. Under torchrun each rank encodes every world_size-th shard (rank, rank +
world, ...); rank 0 writes the manifest once all are done. Each embedding shard is written atomically
and a rerun (the default; ``--no-resume`` recomputes) keeps every shard that validates against its
input, so a killed job resumes at the shard it was on. The output is what the prior stage reads
(``data.shards=OUT``) and what ``validate_embedding_shards`` checks.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from .embeddings import (
    MANIFEST,
    check_manifest_clip,
    check_output_folder,
    clip_info,
    encode_shards,
    manifest_entries,
    validate_embedding_shards,
    write_manifest,
)
from .wds import resolve_shards

log = logging.getLogger("unclip.precompute")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unclip.data.precompute", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--clip", help="a saved FrozenCLIP directory (a pipeline's clip/, or the clip stage's export)")
    which.add_argument("--arch", help="an open_clip architecture name (e.g. ViT-L-14), with --weights")
    p.add_argument("--weights", help="local open_clip checkpoint for --arch (nothing is downloaded)")
    p.add_argument("--shards", nargs="+", required=True,
                   help="image shards: directories of *.tar, brace patterns ('/d/{00000..00099}.tar'), globs or files")
    p.add_argument("--out", required=True, help="output folder of embedding shards (same basenames) + manifest.json")
    p.add_argument("--image-field", default="auto",
                   help="image member to embed: auto (first of jpg/jpeg/png/webp) or a name such as 256.png")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-resume", action="store_true", help="recompute shards that already validate")
    p.add_argument("--validate", action="store_true", help="re-read every output against its input at the end")
    return p


def _load_clip(args, device):
    from unclip.clip import FrozenCLIP

    if args.clip:
        return FrozenCLIP.load(args.clip, device=device)
    if args.weights is None:
        raise SystemExit("--arch needs --weights: a local checkpoint file (random weights would give "
                         "meaningless embeddings)")
    return FrozenCLIP.create(args.arch, args.weights, device=device)


def run(args: argparse.Namespace) -> dict:
    """Encode this rank's shards; rank 0 gathers every rank's entries and writes the manifest."""
    from unclip.training.dist import all_gather_object, init_distributed, shutdown

    env = init_distributed(args.device, timeout_s=7 * 24 * 3600)  # ranks wait for the slowest at the end
    try:
        shards = [Path(p) for p in resolve_shards(args.shards)]
        out = Path(args.out)
        check_output_folder(shards, out)
        out.mkdir(parents=True, exist_ok=True)
        clip = _load_clip(args, env.device)
        previous = None
        if not args.no_resume:
            check_manifest_clip(out / MANIFEST, clip_info(clip))
            previous = manifest_entries(out / MANIFEST)
        mine = shards[env.rank::env.world_size]
        t0 = time.perf_counter()
        with tqdm(desc=f"CLIP embeddings (rank {env.rank}, {len(mine)} shards)", unit="sample",
                  disable=env.rank != 0) as bar:
            entries = encode_shards(clip, mine, out, batch_size=args.batch_size, image_field=args.image_field,
                                    previous=previous, bar=bar)
        gathered = [e for part in all_gather_object(entries) for e in part]
        order = {p.name: i for i, p in enumerate(shards)}
        gathered.sort(key=lambda e: order[e["embedding_shard"]])
        summary = {"rank": env.rank, "rank_shards": len(mine), "shards": len(gathered),
                   "samples": sum(e["count"] for e in gathered), "skipped": sum(len(e["skipped"]) for e in gathered),
                   "seconds": round(time.perf_counter() - t0, 1)}
        if env.is_main:
            summary["manifest"] = str(write_manifest(out, clip, args.image_field, gathered))
            if args.validate:
                validate_embedding_shards(shards, [out / p.name for p in shards], embed_dim=clip.embed_dim,
                                          token_width=clip.token_width, context_length=clip.context_length)
                summary["validated"] = True
            log.info("wrote %(samples)d embeddings in %(shards)d shards (%(skipped)d samples skipped)", summary)
        return summary
    finally:
        shutdown()


def main(argv: list[str] | None = None) -> int:
    """The command line (``unclip-precompute``); exit status 0 on success. ``run`` returns the summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(run(_parser().parse_args(argv)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
