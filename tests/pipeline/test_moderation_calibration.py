"""Image-filter thresholds measured per CLIP: a red-star concept calibrated on acceptable shapes renders flags
red stars and nothing else, plain uploads included; the file binds to the CLIP's weights; a pipeline without
a calibration keeps its image filter off and says so."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from unclip.clip import FrozenCLIP
from unclip.moderation import Moderator
from unclip.moderation_calibration import FILE, calibrate, clip_digest, load_calibration, plain_images

from .test_moderation import _scene

POSITIONS = ["top left", "center", "bottom right", "top right"]


def test_calibrated_threshold_flags_the_concept_and_spares_plain_and_reference_images(trained_clip, tmp_path):
    acceptable = [_scene(shape, colour, p, size) for shape in ("circle", "square", "triangle")
                  for colour in ("blue", "green") for p in POSITIONS for size in ("small", "large")]  # 48
    stars = [_scene("star", "red", p, s) for p in POSITIONS for s in ("small", "large")]
    concept = {"image_concepts": [{"category": "test", "text": "a red star"}]}
    result = calibrate(trained_clip, [("test", "a red star")], acceptable, quantile=1.0, margin=0.01)
    (entry,) = result["concepts"]
    assert entry["threshold"] == pytest.approx(max(entry["reference_quantile"], entry["plain_max"]) + 0.01)
    m = Moderator.from_config(concept, trained_clip, thresholds={"a red star": entry["threshold"]})
    assert all(r is None for r in m.check_images(acceptable + plain_images(64)))  # a plain red upload included
    # this shapes CLIP reads "a red star" mostly as red (plain colours score up to 0.58): without the plain floor the
    # threshold comes from the acceptable renders alone, and the red stars are flagged
    (entry,) = calibrate(trained_clip, [("test", "a red star")], acceptable, quantile=1.0, margin=0.01,
                         plain_floor=False)["concepts"]
    m = Moderator.from_config(concept, trained_clip, thresholds={"a red star": entry["threshold"]})
    assert all(r is None for r in m.check_images(acceptable))
    assert sum(r is not None for r in m.check_images(stars)) >= 6  # measured 8 of 8


def test_a_calibration_binds_to_the_clip_weights(trained_clip, tmp_path, caplog):
    trained_clip.save(tmp_path / "clip")
    refs = [_scene("circle", "blue", p, s) for p in POSITIONS for s in ("small", "large")] * 3
    result = calibrate(trained_clip, [("test", "a red star")], refs)
    (tmp_path / "clip" / FILE).write_text(json.dumps(result))
    assert load_calibration(tmp_path / "clip", trained_clip) == {"a red star": result["concepts"][0]["threshold"]}
    torch.manual_seed(5)
    other = FrozenCLIP.create("unclip-tiny")
    assert clip_digest(other) != clip_digest(trained_clip)
    assert load_calibration(tmp_path / "clip", other) is None and "other CLIP weights" in caplog.text
    with pytest.raises(ValueError, match="at least 20 reference images"):
        calibrate(trained_clip, [("test", "a red star")], refs[:5])


def test_without_calibration_the_image_filter_is_off_and_says_how_to_calibrate():
    m = Moderator.default()
    assert m.image_filter.concepts == [] and "python -m unclip.moderation_calibration" in m.image_status
    assert m.check_prompt("p0rn").category == "sexual"  # prompts need no calibration
    with pytest.raises(ValueError, match="thresholds are measured per CLIP"):
        Moderator.from_config({"image_concepts": [{"category": "x", "text": "y", "threshold": 0.3}]})
    with pytest.raises(ValueError, match="no threshold for image concepts"):
        Moderator.default(thresholds={"something else": 0.1})


def test_calibration_command_writes_the_file_beside_the_clip(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    from tests.photos import write_photo_folder
    torch.manual_seed(0)
    FrozenCLIP.create("unclip-tiny").save(tmp_path / "clip")
    write_photo_folder(tmp_path / "photos", n=24)
    proc = subprocess.run([sys.executable, "-m", "unclip.moderation_calibration", "--clip", str(tmp_path / "clip"),
                           "--reference", str(tmp_path / "photos"), "--n", "24"],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "clip" / FILE).read_text())
    assert data["n_reference"] == 24 and len(data["concepts"]) == 4 and "folder" in data["reference"]
    clip = FrozenCLIP.load(tmp_path / "clip")
    thresholds = load_calibration(tmp_path / "clip", clip)
    m = Moderator.default(clip, thresholds)
    assert m.image_status.startswith("on") and all(r is None for r in m.check_images(plain_images(64)))
    assert not any(m.check_images([Image.open(p) for p in sorted((tmp_path / "photos").glob("*.png"))]))
