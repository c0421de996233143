"""The clip stage of the one training loop (contrastive training of a tiny CLIP) and the retrieval metric."""
import io

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from unclip.clip import FrozenCLIP
from unclip.data.write_shards import write_shards
from unclip.evals.retrieval import evaluate_retrieval
from unclip.metrics import retrieval_top1
from unclip.training import lr_factor, train

from .conftest import compose_cfg


def _train_clip(shards, run_dir, *overrides: str) -> tuple[dict, FrozenCLIP]:
    """A few steps of stage=clip (unclip-tiny) on ``shards``; the summary and the exported CLIP."""
    summary = train(compose_cfg(["stage=clip", "logger=none", "logger.progress=false", f"run_dir={run_dir}",
                                 f"data.shards={shards}", f"data.val_shards={shards}", "sample.every_steps=-1",
                                 "checkpoint.every_steps=0", *overrides]))
    return summary, FrozenCLIP.load(run_dir / "export" / "clip")


def test_retrieval_top1_closed_form():
    eye = torch.eye(4)
    assert retrieval_top1(eye, eye) == {"image_to_text": 1.0, "text_to_image": 1.0, "chance": 0.25}
    swapped = eye[[1, 0, 2, 3]]  # images 0 and 1 point at each other's captions
    r = retrieval_top1(swapped, eye)
    assert r["image_to_text"] == 0.5 and r["text_to_image"] == 0.5


def test_cosine_lr_warmup_then_decay():
    # the clip stage's schedule (stage/clip.yaml: schedule=cosine) as a factor of stage.optim.lr
    def lr(step):
        return lr_factor(step, 100, 10, "cosine")

    assert lr(0) == 0.1 and lr(9) == 1.0
    assert abs(lr(55) - 0.5) < 1e-9 and lr(100) == 0.0


def test_contrastive_training_fits_a_fixed_batch(tmp_path):
    torch.manual_seed(0)
    images = (torch.rand(8, 64, 64, 3) * 255).to(torch.uint8).numpy()
    captions = [f"a {c} thing" for c in ("red", "green", "blue", "pink", "cyan", "purple", "orange", "yellow")]
    with wds.TarWriter(str(tmp_path / "fixed-000000.tar")) as sink:
        for i, (image, caption) in enumerate(zip(images, captions)):
            png = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image)).save(png, format="PNG")
            sink.write({"__key__": f"{i:04d}", "png": png.getvalue(), "txt": caption})
    # every step is the same 8 pairs (one shard of 8, batch 8): 40 steps
    result, clip = _train_clip(tmp_path / "fixed-000000.tar", tmp_path / "run", "batch_size=8", "total_samples=320",
                               "stage.optim.lr=2e-3", "stage.optim.warmup_steps=5")
    assert result["losses"][-1] < 0.2 * result["losses"][0]
    assert not clip.model.training


def test_train_on_shards_rereads_epochs_and_leaves_clip_frozen(tmp_path):
    write_shards(tmp_path / "train", split="train", n=64, shard_size=32, seed=1)
    result, clip = _train_clip(str(tmp_path / "train" / "*.tar"), tmp_path / "run", "batch_size=16",
                               "total_samples=192", "stage.optim.warmup_steps=2")
    assert len(result["losses"]) == 12  # 64 samples / 16 = 4 batches an epoch: the source was re-read
    assert all(not p.requires_grad for p in clip.parameters()) and not clip.model.training
    report = evaluate_retrieval(clip, tmp_path / "train" / "*.tar", max_samples=32, batch_size=16)
    assert set(report) == {"image_to_text", "text_to_image", "chance"} and report["chance"] == 1 / 32
