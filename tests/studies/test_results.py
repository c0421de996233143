"""Aggregation: win rates with ties as half, Wilson intervals, Bradley–Terry, raters, checks, agreement."""
from __future__ import annotations

import csv
import io
import json

import pytest

from unclip.metrics.preference import wilson_interval
from unclip.studies import StudyStore, VoteError, compute_results, create_study
from unclip.studies.agreement import fleiss_kappa
from unclip.studies.results import results_csv, results_json, votes_csv

from .conftest import PROMPTS, write_samples


def _vote_for(store: StudyStore, rater: str, pair, winner_name: str | None) -> None:
    systems = store.systems()
    if winner_name is None:
        answer = "unsure"
    else:
        answer = "left" if systems[pair["left_system"]] == winner_name else "right"
    store.add_vote(rater, pair["id"], answer, 100)


def test_two_system_win_rates_ties_checks_agreement(tmp_path, two_systems):
    info = create_study(tmp_path / "s", two_systems, questions="caption", pairs_per_prompt=2, check_fraction=0.5)
    with StudyStore(info.dir) as store:
        pairs = store.pairs()
        real = [p for p in pairs if not p["is_check"]]
        checks = [p for p in pairs if p["is_check"]]
        assert len(real) == 6 and len(checks) == 3
        # ann: sysA wins 4, sysB 1, 1 tie; bob agrees with ann on the first 3 pairs only
        ann = ["sysA", "sysA", "sysA", "sysA", "sysB", None]
        bob = ["sysA", "sysA", "sysA", "sysB", "sysA", "sysA"]
        for p, w in zip(real, ann):
            _vote_for(store, "ann", p, w)
        for p, w in zip(real, bob):
            _vote_for(store, "bob", p, w)
        for c in checks:  # ann passes all checks, bob fails one by answering 'not sure'
            store.add_vote("ann", c["id"], c["expected"], 50)
        store.add_vote("bob", checks[0]["id"], "unsure", 50)
        res = compute_results(store, n_boot=50)

    (row,) = res["win_rates"]
    assert (row["source"], row["question"], row["system_a"], row["system_b"]) == ("human", "caption", "sysA", "sysB")
    assert (row["n"], row["wins_a"], row["wins_b"], row["ties"]) == (12, 9, 2, 1)
    assert row["win_rate_a"] == pytest.approx(9.5 / 12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(9.5, 12))
    assert res["rankings"] == []  # two systems: the win rate says it all
    assert res["n_votes"] == 6 + 6 + 3 + 1 and res["n_check_votes"] == 4
    raters = {r["rater"]: r for r in res["raters"]}
    assert raters["ann"]["votes"] == 9 and raters["ann"]["checks_passed"] == 3 and raters["ann"]["unsure"] == 1
    assert raters["bob"]["checks"] == 1 and raters["bob"]["checks_passed"] == 0
    assert res["attention"]["total"] == 4 and res["attention"]["passed"] == 3
    # agreement over the 6 doubly rated pairs, categories left/right/unsure as shown
    sides = []
    for p, a, b in zip(real, ann, bob):
        row_counts = [0, 0, 0]
        for w in (a, b):
            idx = 2 if w is None else (0 if (w == "sysA") == (p["left_system"] == 1) else 1)
            row_counts[idx] += 1
        sides.append(row_counts)
    ag = {r["question"]: r for r in res["agreement"]}
    assert ag["caption"]["items"] == 6 and ag["caption"]["ratings"] == 12
    assert ag["caption"]["fleiss_kappa"] == pytest.approx(fleiss_kappa(sides))
    assert "half" in res["tie_rule"]


def test_bradley_terry_ranking_and_judges_side_by_side(tmp_path):
    dirs = [(s, write_samples(tmp_path / s, s)) for s in ("sysB", "sysA", "sysC")]
    info = create_study(tmp_path / "s", dirs, questions="photorealism", pairs_per_prompt=2, check_fraction=0)
    strength = {"sysA": 3, "sysB": 2, "sysC": 1}
    with StudyStore(info.dir) as store:
        systems = store.systems()
        for rater in ("r1", "r2"):
            for p in store.pairs():
                left, right = systems[p["left_system"]], systems[p["right_system"]]
                _vote_for(store, rater, p, left if strength[left] > strength[right] else right)
        verdicts = [{"question": "realism", "prompt": p, "system_a": "sysC", "system_b": "sysA", "winner": "A"}
                    for p in PROMPTS] + [{"question": "caption", "prompt": PROMPTS[0], "system_a": "sysA",
                                          "system_b": "sysB", "winner": "tie", "seed": 0}]
        assert store.add_judge_verdicts("oracle", verdicts) == 4
        with pytest.raises(VoteError, match="not a system of this study"):
            store.add_judge_verdicts("oracle", [dict(verdicts[0], system_a="nope")])
        with pytest.raises(VoteError, match="is not one of"):
            store.add_judge_verdicts("oracle", [dict(verdicts[0], question="beauty")])
        res = compute_results(store, n_boot=100)
        csv_text, json_text, votes_text = results_csv(res), results_json(res), votes_csv(store)

    human = [r for r in res["rankings"] if r["source"] == "human"]
    assert [s["system"] for s in human[0]["systems"]] == ["sysA", "sysB", "sysC"]
    top = human[0]["systems"][0]
    assert top["rank"] == 1 and top["ci_low"] <= top["score"] <= top["ci_high"]
    judge_rows = [r for r in res["win_rates"] if r["source"] == "judge:oracle"]
    # judge rows are oriented by study system order (sysB, sysA, sysC): sysA vs sysC, sysC won 3 of 3
    photo = next(r for r in judge_rows if r["question"] == "photorealism")
    assert (photo["system_a"], photo["system_b"], photo["wins_a"], photo["wins_b"]) == ("sysA", "sysC", 0, 3)
    cap = next(r for r in judge_rows if r["question"] == "caption")
    assert (cap["system_a"], cap["system_b"], cap["ties"], cap["win_rate_a"]) == ("sysB", "sysA", 1, 0.5)
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert {r["source"] for r in rows} == {"human", "judge:oracle"} and len(rows) == len(res["win_rates"])
    parsed = json.loads(json_text)  # strict JSON (undefined agreement is null, not NaN)
    assert parsed["n_judge_verdicts"] == 4
    assert len(list(csv.DictReader(io.StringIO(votes_text)))) == res["n_votes"] == 2 * 18


def test_votes_rejected_in_store(tmp_path, two_systems):
    info = create_study(tmp_path / "s", two_systems, questions="caption")
    with StudyStore(info.dir) as store:
        pid = store.pairs()[0]["id"]
        with pytest.raises(VoteError, match="unknown pair 999"):
            store.add_vote("ann", 999, "left", 1)
        with pytest.raises(VoteError, match="answer must be one of"):
            store.add_vote("ann", pid, "up", 1)
        store.add_vote("ann", pid, "left", 1)
        with pytest.raises(VoteError, match="already voted"):
            store.add_vote("ann", pid, "right", 1)
        assert len(store.votes()) == 1
