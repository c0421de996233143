"""The evals on real photographs: reference sets from image folders and webdataset shards, FD_CLIP and
CLIP score with a FrozenCLIP, standard Inception FID from a local weights file (a random-init one
here: nothing is downloaded), and the shapes-only caption oracle saying it does not apply."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unclip.data import shapes as S
from unclip.evals.fid import WEIGHTS_NAME, InceptionFID, check_fid_weights
from unclip.evals.jobs import caption_match_job, compare_job, evaluate_run
from unclip.evals.reference import IMAGE_EXTS, fit_image, load_reference

from ..photos import PHOTOS, photo_samples, write_photo_folder, write_photo_shards

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64


def _photo_run(directory: Path, n: int, seed: int = 0) -> Path:
    """A generated-images directory (load_generated's format) of real photo crops with their captions."""
    directory.mkdir(parents=True)
    for i, (image, caption) in enumerate(photo_samples(n, seed)):
        fit_image(image, (SIZE, SIZE)).save(directory / f"{i:03d}.png")
        (directory / f"{i:03d}.json").write_text(json.dumps({"prompt": caption, "seed": i, "size": SIZE}))
    return directory


def _shapes_items(directory: Path, n: int, start: int = 0) -> None:
    """Add `n` items with shapes captions and their true renders (the oracle reads them all right)."""
    ds = S.ShapesDataset("val", length=n, seed=11)
    for i in range(n):
        S.render(ds.scene(i), SIZE).save(directory / f"{start + i:03d}.png")
        (directory / f"{start + i:03d}.json").write_text(json.dumps({"prompt": ds.caption(i), "seed": i,
                                                                      "size": SIZE}))


@pytest.fixture(scope="module")
def clip():
    from unclip.clip import FrozenCLIP

    torch.manual_seed(0)
    return FrozenCLIP.create("unclip-tiny")


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory) -> Path:
    """A weights FILE for torch-fidelity's InceptionV3: the real architecture, random (He) init, saved
    with torch.save like the released file. The subclass only skips the load of the (empty) file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random init instead of the empty dict

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    torch.manual_seed(0)
    net = RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(folder / "empty.pth"))
    for m in net.modules():  # the default init shrinks activations to ~1e-8 over 40+ layers; He keeps them O(1)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), folder / WEIGHTS_NAME)
    return folder / WEIGHTS_NAME


def test_reference_from_folder_and_shards(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", n=6)
    (folder / "nested").mkdir()
    photo_samples(1, seed=5)[0][0].save(folder / "nested" / "x.JPG")  # recursive, any case of the extension
    ref = load_reference(str(folder), n=10, size=SIZE)
    assert len(ref.images) == 7 and {im.size for im in ref.images} == {(SIZE, SIZE)}
    assert str(folder) in ref.description and ref.captions == [None] * 7

    shards = write_photo_shards(tmp_path / "shards", n=12, per_shard=4, corrupt_keys=(1,))
    first = load_reference(str(tmp_path / "shards"), n=5, size=(SIZE, 48))
    assert len(first.images) == 5 and {im.size for im in first.images} == {(SIZE, 48)}
    expected = [c for i, (_, c) in enumerate(photo_samples(12, 0)) if i != 1][:5]  # the cut image is skipped
    assert first.captions == expected and set(first.captions) <= set(PHOTOS.values())
    for source in (str(tmp_path / "shards" / "{00000..00002}.tar"), str(tmp_path / "shards" / "*.tar"),
                   [str(p) for p in shards]):
        assert len(load_reference(source, n=100, size=SIZE).images) == 11
    a = np.asarray(load_reference(str(shards[0]), n=1, size=SIZE, min_images=1).images[0], np.float32)
    b = np.asarray(fit_image(photo_samples(1, 0)[0][0], (SIZE, SIZE)), np.float32)
    assert np.abs(a - b).mean() < 8  # the same photo, through one JPEG round trip


def test_reference_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'}.*does not exist"):
        load_reference(str(tmp_path / "nope"), n=4, size=SIZE)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'empty'} holds no images.*\\*\\.png.*\\*\\.webp"):
        load_reference(str(tmp_path / "empty"), n=4, size=SIZE)
    write_photo_shards(tmp_path / "shards", n=4)  # 00000.tar only
    with pytest.raises(FileNotFoundError, match="shard .*00001.tar.* does not exist"):
        load_reference(str(tmp_path / "shards" / "{00000..00001}.tar"), n=4, size=SIZE)
    write_photo_folder(tmp_path / "three", n=3)
    with pytest.raises(ValueError, match="gave 3 images.*at least 4"):
        load_reference(str(tmp_path / "three"), n=10, size=SIZE, min_images=4)
    assert set(IMAGE_EXTS) == {"png", "jpg", "jpeg", "webp"}


def test_fd_clip_and_clip_score_against_photo_folder_and_shards(tmp_path, clip):
    gen = _photo_run(tmp_path / "gen", n=10)
    folder = write_photo_folder(tmp_path / "photos", n=10, seed=3)
    write_photo_shards(tmp_path / "shards", n=10, per_shard=5, seed=4)
    kw = {"clip": clip, "n_reference": 10, "k": 3}
    self_ref = evaluate_run(gen, reference=str(gen), **kw)  # the run's own PNGs as the reference set
    by_folder = evaluate_run(gen, reference=str(folder), **kw)
    by_shards = evaluate_run(gen, reference=str(tmp_path / "shards" / "{00000..00001}.tar"), **kw)
    shapes = evaluate_run(gen, **kw)
    scale = by_folder["realism"]["fd"]
    assert self_ref["realism"]["fd"] < 1e-6 * scale and self_ref["realism"]["precision"] == 1.0
    for res in (by_folder, by_shards, shapes):
        assert 0 < res["realism"]["fd"] < math.inf and res["realism"]["n_real"] == 10
    assert str(folder) in by_folder["realism"]["reference"] and "shards" in by_shards["realism"]["reference"]
    assert shapes["realism"]["reference"].startswith("10 shapes renders")
    scores = [r["clip_score"] for r in by_folder["records"]]
    assert len(scores) == 10 and all(isinstance(s, float) and 0 <= s <= 100 for s in scores)
    assert by_folder["summary"]["all"]["clip_score"] == pytest.approx(float(np.mean(scores)))
    assert {r["prompt"] for r in by_folder["records"]} <= set(PHOTOS.values())


def test_inception_fid_from_local_weights_file(tmp_path, fid_weights):
    photos_a = [fit_image(im, (SIZE, SIZE)) for im, _ in photo_samples(8, 0)]
    photos_b = [fit_image(im, (SIZE, SIZE)) for im, _ in photo_samples(8, 7)]
    renders = load_reference(None, n=8, size=SIZE).images
    fid = InceptionFID(fid_weights, device="cpu")
    fid.set_reference(photos_a)
    to_photos, to_shapes = fid(photos_b), fid(renders)
    assert 0 < to_photos < to_shapes < math.inf

    gen = _photo_run(tmp_path / "gen", n=8)  # the same crops as photos_a, as a generated run
    out = tmp_path / "out"
    res = caption_match_job(gen, "photos", out / "report.html", out / "cm.json", clip=None, reference=str(gen),
                            n_reference=8, k=3, fid_weights=str(fid_weights))
    assert res["realism"]["fid_inception"] == pytest.approx(0.0, abs=1e-3 * to_photos)
    assert res["realism"]["fd"] is None  # no CLIP and no features: Inception FID only
    assert json.loads((out / "cm.json").read_text())["realism"]["fid_inception"] == res["realism"]["fid_inception"]
    sections = {s["title"]: s for s in json.loads((out / "report.json").read_text())["sections"]}
    table = sections["Photorealism — photos"]["blocks"][0]
    assert "FID (Inception)" in table["columns"] and str(gen) in table["note"]


def test_missing_fid_weights_fail_first(tmp_path, monkeypatch):
    missing = tmp_path / "weights" / WEIGHTS_NAME
    with pytest.raises(FileNotFoundError, match=f"{missing} not found.*torch-fidelity.*never download"):
        evaluate_run(tmp_path / "no-such-run", fid_weights=str(missing))  # before the directory is read
    from hydra import compose, initialize_config_dir

    from unclip.evals.config import job_kwargs, register_configs
    register_configs()
    with initialize_config_dir(str(ROOT / "configs" / "eval"), version_base="1.3"):
        cfg = compose("caption_match", ["images_dir=x", f"fid_weights={missing}", "clip.arch=no-such-arch"])
    with pytest.raises(FileNotFoundError, match=str(missing)):
        job_kwargs(cfg)  # fails on the weights before trying to build the (bad) CLIP
    missing.parent.mkdir()
    missing.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(ImportError, match="pip install 'unclip\\[fid\\]'"):
        check_fid_weights(missing)


def test_caption_oracle_says_it_does_not_apply_to_photo_prompts(tmp_path, caplog):
    gen = _photo_run(tmp_path / "gen", n=6)
    out = tmp_path / "out"
    res = caption_match_job(gen, "photos", out / "report.html", out / "cm.json", clip=None)
    saved = json.loads((out / "cm.json").read_text())
    assert saved["oracle"].startswith("not applicable: none of the 6 prompts")
    assert all(r["n_stated"] == 0 and not r["oracle_applicable"] and r["detected"] == [] for r in res["records"])
    assert saved["summary"]["all"]["full_match"] is None and saved["summary"]["all"]["n_oracle"] == 0
    assert "not applicable" in caplog.text
    caption = [s for s in json.loads((out / "report.json").read_text())["sections"]
               if s["title"] == "Caption match — photos"][0]
    assert any(b.get("text", "").startswith("photos: caption-match oracle not applicable") for b in caption["blocks"])

    _shapes_items(gen, 4, start=6)  # a mix: 6 photo prompts + 4 shapes prompts with their true renders
    mixed = evaluate_run(gen)
    assert mixed["oracle"].startswith("partial: 6 of 10 prompts")
    assert mixed["summary"]["all"]["full_match"] == 1.0 and mixed["summary"]["all"]["n_oracle"] == 4

    cmp = compare_job({"a": gen, "b": gen}, out / "report.html", out / "cmp.json", clip=None, n_boot=10)
    assert cmp["runs"]["a"]["oracle"].startswith("partial")
    titles = [s["title"] for s in json.loads((out / "report.json").read_text())["sections"]]
    assert "Caption match — a vs b" in titles


def test_caption_match_entry_point_on_photos(tmp_path):
    gen = _photo_run(tmp_path / "gen", n=8)
    folder = write_photo_folder(tmp_path / "photos", n=8, seed=2)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "evals" / "caption_match.py"), f"images_dir={gen}",
                           "name=photos", f"out_dir={out}", f"reference={folder}", "n_reference=8",
                           f"hydra.run.dir={tmp_path / 'hydra'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "caption_match-photos.json").read_text())
    assert res["oracle"].startswith("not applicable")
    assert res["realism"]["reference"] == f"8 images from folder {folder}" and res["realism"]["fd"] > 0
    assert all(r["clip_score"] is not None for r in res["records"])
    assert (out / "report.html").is_file()
