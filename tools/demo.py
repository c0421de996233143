"""`make demo`: the main job on the embedded `shapes` data, end to end on a CPU.

Stages so far (the prior/decoder/upsampler stages join as their training lands):
  1. render shapes train/val shards (webdataset tars, 64 px with 256-px ground truth for val);
  2. train a tiny CLIP contrastively on them and report val image↔caption retrieval;
  3. precompute aligned CLIP embedding shards (text emb, per-token features, mask, image emb),
     validate their alignment, store the image-embedding statistics with the CLIP;
  4. write the CLIP as <out>/pipeline/clip/{config.yaml, model.safetensors} and a summary JSON.
Re-running reuses the shards already written for the same configuration.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unclip.clip import FrozenCLIP
from unclip.data.embeddings import image_embedding_stats, precompute_embeddings, validate_embedding_shards
from unclip.data.write_shards import write_shards
from unclip.training.clip_contrastive import ClipTrainConfig, evaluate_retrieval, train_frozen_clip_on_shards


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--n-train", type=int, default=6000, help="training samples to render")
    p.add_argument("--n-val", type=int, default=512, help="validation samples to render")
    p.add_argument("--clip-arch", default="unclip-tiny", help="CLIP architecture (configs/clip_model or open_clip)")
    p.add_argument("--clip-steps", type=int, default=300, help="contrastive training steps for the tiny CLIP")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    dirs = {"train": out / "data" / "train", "val": out / "data" / "val"}
    for split, n, extra in (("train", args.n_train, ()), ("val", args.n_val, (256,))):
        write_shards(dirs[split], split=split, n=n, resolution=64, extra_resolutions=extra, seed=args.seed,
                     shard_size=1000, progress=lambda it, n=n, split=split: tqdm(it, total=n, desc=f"render {split}"))
    return dirs


def train_clip(data: dict[str, Path], args: argparse.Namespace) -> tuple[FrozenCLIP, dict]:
    torch.manual_seed(args.seed)
    clip = FrozenCLIP.create(args.clip_arch)
    before = evaluate_retrieval(clip, data["val"] / "*.tar")
    result = train_frozen_clip_on_shards(clip, str(data["train"] / "*.tar"), ClipTrainConfig(steps=args.clip_steps),
                                         batch_size=args.batch_size, seed=args.seed)
    after = evaluate_retrieval(clip, data["val"] / "*.tar")
    report = {"loss_first": result.losses[0], "loss_last": result.losses[-1],
              "skipped_nonfinite": result.skipped_nonfinite, "val_retrieval_before": before,
              "val_retrieval_after": after}
    return clip, report


def embed(clip: FrozenCLIP, data: dict[str, Path], out: Path, batch_size: int) -> dict:
    summary = {}
    for split, folder in data.items():
        shards = sorted(folder.glob("*.tar"))
        emb_dir = out / "embeddings" / split
        precompute_embeddings(clip, shards, emb_dir, batch_size=batch_size)
        emb_shards = sorted(emb_dir.glob("*.tar"))
        summary[split] = validate_embedding_shards(shards, emb_shards, embed_dim=clip.embed_dim,
                                                   token_width=clip.token_width, context_length=clip.context_length)
        summary[split]["dir"] = str(emb_dir)
    mean, std = image_embedding_stats(sorted((out / "embeddings" / "train").glob("*.tar")))
    clip.set_stats(mean, std)
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    print(f"[1/3] rendering shapes shards into {out / 'data'}", flush=True)
    data = make_data(out, args)
    print(f"[2/3] training CLIP '{args.clip_arch}' for {args.clip_steps} steps", flush=True)
    clip, clip_report = train_clip(data, args)
    print(f"[3/3] precomputing CLIP embeddings into {out / 'embeddings'}", flush=True)
    emb_summary = embed(clip, data, out, args.batch_size)
    clip_dir = clip.save(out / "pipeline" / "clip")

    summary = {"data": {k: str(v) for k, v in data.items()}, "clip": str(clip_dir), "clip_training": clip_report,
               "embeddings": {k: {"dir": v["dir"], "samples": v["samples"], "shards": v["shards"]}
                              for k, v in emb_summary.items()},
               "wall_seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    r = clip_report["val_retrieval_after"]
    print("\nunclip demo finished in {:.0f} s".format(summary["wall_seconds"]))
    print(f"  shards:      {data['train']}  {data['val']}")
    print(f"  CLIP:        {clip_dir}  (loss {clip_report['loss_first']:.3f} -> {clip_report['loss_last']:.3f}; "
          f"val top-1 image->text {r['image_to_text']:.1%}, text->image {r['text_to_image']:.1%}, "
          f"chance {r['chance']:.1%})")
    print(f"  embeddings:  {out / 'embeddings'}  (validated: "
          + ", ".join(f"{k} {v['samples']} samples" for k, v in emb_summary.items()) + ")")
    print(f"  summary:     {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
