"""The tiny-CLIP contrastive trainer and the retrieval metric."""
import torch

from unclip.clip import FrozenCLIP
from unclip.data.write_shards import write_shards
from unclip.metrics import retrieval_top1
from unclip.training.clip_contrastive import (
    ClipTrainConfig,
    cosine_lr,
    evaluate_retrieval,
    train_clip_contrastive,
    train_frozen_clip_on_shards,
)


def test_retrieval_top1_closed_form():
    eye = torch.eye(4)
    assert retrieval_top1(eye, eye) == {"image_to_text": 1.0, "text_to_image": 1.0, "chance": 0.25}
    swapped = eye[[1, 0, 2, 3]]  # images 0 and 1 point at each other's captions
    r = retrieval_top1(swapped, eye)
    assert r["image_to_text"] == 0.5 and r["text_to_image"] == 0.5


def test_cosine_lr_warmup_then_decay():
    cfg = ClipTrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert cosine_lr(0, cfg) == 0.1 and cosine_lr(9, cfg) == 1.0
    assert abs(cosine_lr(55, cfg) - 0.5) < 1e-9 and cosine_lr(100, cfg) == 0.0


def test_contrastive_training_fits_a_fixed_batch():
    torch.manual_seed(0)
    clip = FrozenCLIP.create("unclip-tiny")
    images = clip.preprocess_tensor(torch.rand(8, 3, 64, 64))
    captions = [f"a {c} thing" for c in ("red", "green", "blue", "pink", "cyan", "purple", "orange", "yellow")]
    model = clip.model.requires_grad_(True)
    result = train_clip_contrastive(model, clip.tokenize, [(images, captions)],
                                    ClipTrainConfig(steps=40, lr=2e-3, warmup_steps=5, progress=False))
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert not model.training


def test_train_on_shards_rereads_epochs_and_leaves_clip_frozen(tmp_path):
    write_shards(tmp_path / "train", split="train", n=64, shard_size=32, seed=1)
    torch.manual_seed(0)
    clip = FrozenCLIP.create("unclip-tiny")
    result = train_frozen_clip_on_shards(clip, str(tmp_path / "train" / "*.tar"),
                                         ClipTrainConfig(steps=12, warmup_steps=2, progress=False),
                                         batch_size=16, num_workers=0)
    assert len(result.losses) == 12  # 64 samples / 16 = 4 batches an epoch: the source was re-read
    assert all(not p.requires_grad for p in clip.parameters()) and not clip.model.training
    report = evaluate_retrieval(clip, tmp_path / "train" / "*.tar", max_samples=32, batch_size=16)
    assert set(report) == {"image_to_text", "text_to_image", "chance"} and report["chance"] == 1 / 32
