"""Every stage trains from its real config on real photographs in img2dataset's layout (jpg / webp of
varied sizes and aspect ratios, a corrupt jpg, images under the minimum size), the embeddings are
precomputed for them by the command line, and the readers say what they skipped."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from unclip.data.embeddings import validate_embedding_shards
from unclip.data.wds import LayoutError, shard_pipeline
from unclip.models import load_stage
from unclip.training import train

from ..photos import encode, photo_samples, write_photo_shards
from .conftest import PYTHON, REPO, TORCHRUN, compose_cfg, overrides_for, subprocess_env

CORRUPT = (3,)
N_SMALL = 3  # photo_samples(24) has 3 crops of 60x48, under the decoder's 64 px


@pytest.fixture(scope="module")
def photos(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    train_shards = write_photo_shards(root / "train", n=24, per_shard=8, corrupt_keys=CORRUPT)
    write_photo_shards(root / "val", n=8, per_shard=8, seed=1)
    proc = subprocess.run([PYTHON, "-m", "unclip.data.precompute", "--clip", tiny_data["clip"], "--shards",
                           str(root / "train"), "--out", str(root / "emb"), "--validate"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "train": str(root / "train"), "val": str(root / "val"), "emb": str(root / "emb"),
            "train_shards": train_shards, "clip": tiny_data["clip"], "log": proc.stderr}


def test_reader_fits_every_photo_and_counts_what_it_skips(photos):
    pipe = shard_pipeline(photos["train"], size=64, crop="center", shuffle_shards=False, rank=0, world_size=1)
    samples = list(pipe)
    assert len(samples) == 24 - len(CORRUPT) - N_SMALL
    assert all(s["image"].shape == (3, 64, 64) and -1 <= s["image"].min() and s["image"].max() <= 1 for s in samples)
    assert (pipe.failures, pipe.too_small) == (len(CORRUPT), N_SMALL)
    assert all(s["scene"]["width"] > 0 for s in samples)  # img2dataset's json, passed through
    lower = shard_pipeline(photos["train"], size=64, min_size=32, shuffle_shards=False, rank=0, world_size=1)
    assert len(list(lower)) == 24 - len(CORRUPT) and lower.too_small == 0


def test_random_crops_are_reproducible_and_move_with_the_epoch(photos):
    def first_images(epoch, seed=0):
        pipe = shard_pipeline(photos["train"], size=64, crop="random", shuffle_shards=False, seed=seed, epoch=epoch,
                              rank=0, world_size=1)
        return torch.stack([s["image"] for s in list(pipe)[:8]])

    a, b, c = first_images(0), first_images(0), first_images(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # non-square photos get another crop in another epoch


def test_an_unknown_member_layout_fails_naming_the_shard_and_members(tmp_path):
    import io
    import tarfile

    bad = tmp_path / "gif" / "00000.tar"
    bad.parent.mkdir()
    image, caption = photo_samples(1)[0]
    with tarfile.open(bad, "w") as tf:
        for name, data in (("000.gif", encode(image, "png")), ("000.caption", caption.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(LayoutError, match=r"00000\.tar.*found members \['caption', 'gif'\]"):
        list(shard_pipeline(str(bad.parent), size=64, rank=0, world_size=1))


def test_precompute_command_skips_the_corrupt_jpg_and_validates(photos):
    manifest = json.loads((photos["root"] / "emb" / "manifest.json").read_text())
    assert manifest["total"] == 24 - len(CORRUPT) and manifest["skipped"] == len(CORRUPT)
    assert "skipping sample '000000003'" in photos["log"]
    emb = [photos["root"] / "emb" / p.name for p in photos["train_shards"]]
    assert validate_embedding_shards(photos["train_shards"], emb)["samples"] == 24 - len(CORRUPT)


@pytest.mark.parametrize("stage", ["clip", "decoder", "sr256", "prior"])
def test_each_stage_trains_on_photos(stage, photos, tmp_path):
    data = {"train": photos["train"], "val": photos["val"], "d256": photos["train"], "d1024": photos["train"],
            "clip": photos["clip"], "emb_train": photos["emb"], "emb_val": photos["emb"]}
    extra = {"decoder": ["sample.every_steps=0", "sample.n=2", "sample.steps=2", "sample.gain_n=4",
                         "sample.gain_timesteps=[500]", "sample.match_n=2"],
             "sr256": ["data.min_image_size=64", "data.val_shards=" + photos["val"]]}.get(stage, [])
    summary = train(compose_cfg(overrides_for(stage, data, tmp_path / "run", f"export_dir={tmp_path / 'out'}",
                                              *extra)))
    assert summary["steps"] >= 2 and all(x == x for x in summary["losses"])
    if stage != "prior":  # the corrupt jpg and the 60x48 crops (under 64 px) were skipped and counted
        assert summary["data"] == {"bad_samples": len(CORRUPT), "too_small": N_SMALL}
    if stage == "decoder":  # the instrument runs on real photos: whole-image gain, no region, no shapes oracle
        assert {"gain/image/t500", "gain/text/t500"} <= set(summary["eval"])
        assert not any("region" in k or "match" in k for k in summary["eval"])
    if stage != "clip":
        spec, _ = load_stage(tmp_path / "out" / stage)
        assert spec.stage == stage


def test_precompute_under_torchrun_splits_shards_and_matches_one_process(photos, tmp_path):
    """Two ranks encode alternate shards; rank 0's manifest lists all three in input order, and each shard
    holds the same bytes as the one-process run's."""
    out = tmp_path / "emb2"
    proc = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--standalone", "-m", "unclip.data.precompute",
                           "--clip", photos["clip"], "--shards", photos["train"], "--out", str(out)],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'rank': 0, 'rank_shards': 2" in proc.stdout and "'rank': 1, 'rank_shards': 1" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["embedding_shard"] for e in manifest["shards"]] == [p.name for p in photos["train_shards"]]
    for p in photos["train_shards"]:
        assert (out / p.name).read_bytes() == (photos["root"] / "emb" / p.name).read_bytes()


def test_train_entry_point_on_photo_shards(photos, tmp_path):
    """`train/train.py` itself, as a researcher runs it, on the img2dataset shards: it trains, exports and
    writes the skip counts into summary.json."""
    run_dir = tmp_path / "run"
    data = {"train": photos["train"], "val": photos["val"], "clip": photos["clip"]}
    args = [a for a in overrides_for("decoder", data | {"d256": "", "d1024": "", "emb_train": "", "emb_val": ""},
                                     run_dir) if a]
    proc = subprocess.run([PYTHON, str(REPO / "train" / "train.py"), *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["data"] == {"bad_samples": len(CORRUPT), "too_small": N_SMALL}
    assert (run_dir / "export" / "decoder" / "model.safetensors").is_file()
