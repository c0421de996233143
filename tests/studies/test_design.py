"""Study creation: sample directories, balanced pairs, grids, attention checks, rater order."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from unclip.studies import StudyError, StudyStore, create_study, rater_order
from unclip.studies.design import GRID_N

from .conftest import PROMPTS, write_samples


def _info(store: StudyStore):
    stim = {r["id"]: dict(r) for r in store.conn.execute("SELECT * FROM stimuli")}
    return store.systems(), store.prompts(), stim, [dict(p) for p in store.pairs()]


def test_pairs_balanced_over_prompts_and_system_pairs(tmp_path):
    dirs = [(s, write_samples(tmp_path / s, s, seeds=range(5))) for s in ("sysA", "sysB", "sysC")]
    info = create_study(tmp_path / "study", dirs, questions="photorealism,caption", pairs_per_prompt=4,
                        check_fraction=0.1, seed=3)
    assert info.n_pairs == {"photorealism": 3 * 3 * 4, "caption": 3 * 3 * 4}
    assert info.n_checks == {"photorealism": 4, "caption": 4}  # ceil(0.1 · 36)
    assert any("contact sheet" in m for m in info.messages)
    with StudyStore(info.dir) as store:
        systems, prompts, stim, pairs = _info(store)
    for q in ("photorealism", "caption"):
        real = [p for p in pairs if p["question"] == q and not p["is_check"]]
        cells = Counter((p["prompt_id"], frozenset((p["left_system"], p["right_system"]))) for p in real)
        assert set(cells.values()) == {4} and len(cells) == 9
        for p in real:  # both sides: same prompt and seed, the pair's systems
            left, right = stim[p["left_stimulus"]], stim[p["right_stimulus"]]
            assert left["prompt_id"] == right["prompt_id"] == p["prompt_id"] and left["seed"] == right["seed"]
            assert (left["system_id"], right["system_id"]) == (p["left_system"], p["right_system"])
        for a, b in [(1, 2), (1, 3), (2, 3)]:  # left/right balanced within every system pair
            sides = [p["left_system"] == a for p in real if {p["left_system"], p["right_system"]} == {a, b}]
            assert abs(sum(sides) - len(sides) / 2) <= 0.5
        # 4 draws from 5 shared seeds: no seed repeats within a cell
        for (pid, sp) in cells:
            seeds = [stim[p["left_stimulus"]]["seed"] for p in real
                     if p["prompt_id"] == pid and {p["left_system"], p["right_system"]} == sp]
            assert len(set(seeds)) == 4
        checks = [p for p in pairs if p["question"] == q and p["is_check"]]
        for c in checks:  # the expected side is the real sample, the other a noise foil
            real_side = stim[c["left_stimulus"] if c["expected"] == "left" else c["right_stimulus"]]
            foil_side = stim[c["right_stimulus"] if c["expected"] == "left" else c["left_stimulus"]]
            assert real_side["kind"] == "sample" and foil_side["kind"] == "noise"
            assert (info.dir / foil_side["path"]).is_file()


def test_diversity_grids_and_skips(tmp_path):
    dirs = [(s, write_samples(tmp_path / s, s, seeds=range(GRID_N))) for s in ("sysA", "sysB")]
    # the third prompt has too few images in sysB
    for f in sorted((tmp_path / "sysB").glob("p002_s0001.*")):
        f.unlink()
    info = create_study(tmp_path / "study", dirs, questions=["diversity"], check_fraction=0.5)
    assert info.n_pairs == {"diversity": 2} and info.n_checks == {"diversity": 1}
    assert any("skipped prompt" in m and PROMPTS[2] in m and "15" in m for m in info.messages)
    with StudyStore(info.dir) as store:
        _, _, stim, pairs = _info(store)
    kinds = Counter(s["kind"] for s in stim.values())
    assert kinds["grid"] == 4 and kinds["repeat_grid"] == 1
    from PIL import Image

    with Image.open(info.dir / next(s["path"] for s in stim.values() if s["kind"] == "grid")) as im:
        assert im.size == (4 * 64 + 6, 4 * 64 + 6)


def test_diversity_without_enough_images(tmp_path, two_systems):
    with pytest.raises(StudyError, match="diversity needs ≥16 images per prompt per system"):
        create_study(tmp_path / "s1", two_systems, questions="diversity")
    assert not (tmp_path / "s1" / "study.db").exists()
    info = create_study(tmp_path / "s2", two_systems)  # the default questions drop diversity and say so
    assert set(info.n_pairs) == {"photorealism", "caption"}
    assert any("diversity: question dropped" in m for m in info.messages)


def test_mismatched_prompts_name_the_difference(tmp_path):
    a = write_samples(tmp_path / "a", "sysA")
    b = write_samples(tmp_path / "b", "sysB", prompts=PROMPTS[:2] + ["a purple hexagon"])
    with pytest.raises(StudyError) as e:
        create_study(tmp_path / "s", [("sysA", a), ("sysB", b)])
    msg = str(e.value)
    assert "prompts do not match" in msg and repr(PROMPTS[2]) in msg and "'a purple hexagon'" in msg
    assert "'sysA'" in msg and "'sysB'" in msg
    assert not (tmp_path / "s").exists() or not (tmp_path / "s" / "study.db").exists()


def test_bad_sample_dirs(tmp_path, two_systems):
    with pytest.raises(StudyError, match="does not exist"):
        create_study(tmp_path / "s", [("sysA", two_systems[0][1]), ("x", tmp_path / "nope")])
    with pytest.raises(StudyError, match="two or more"):
        create_study(tmp_path / "s", two_systems[:1])
    c = write_samples(tmp_path / "c", "sysC", seeds=[7, 8])
    with pytest.raises(StudyError, match="no seed common"):
        create_study(tmp_path / "s", [two_systems[0], ("sysC", c)])
    (two_systems[1][1] / "p000_s0000.json").write_text(json.dumps({"caption": "x", "seed": 0}))
    with pytest.raises(StudyError, match=r"p000_s0000\.json must be a JSON object with 'prompt' and 'seed'"):
        create_study(tmp_path / "s", two_systems)
    with pytest.raises(StudyError, match="unknown question 'realism'"):
        create_study(tmp_path / "s", two_systems, questions="realism")


def test_rater_order_is_stable_and_blocked(tmp_path, two_systems):
    info = create_study(tmp_path / "s", two_systems, questions="photorealism,caption", pairs_per_prompt=2)
    with StudyStore(info.dir) as store:
        pairs, meta = store.pairs(), store.meta()
    o1 = rater_order(pairs, meta["questions"], meta["seed"], "ann")
    assert o1 == rater_order(pairs, meta["questions"], meta["seed"], "ann")
    assert o1 != rater_order(pairs, meta["questions"], meta["seed"], "bob")
    assert sorted(o1) == sorted(p["id"] for p in pairs)
    q = {p["id"]: p["question"] for p in pairs}
    n_photo = sum(v == "photorealism" for v in q.values())
    assert all(q[i] == "photorealism" for i in o1[:n_photo])  # captions stay unseen for photorealism
