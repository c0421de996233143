"""Aggregate a study: win rates with Wilson intervals, Bradley–Terry with bootstrap over prompts,
per-rater counts, attention checks, inter-rater agreement; CSV and JSON exports.

The preference statistics are the evals' own (`unclip.metrics.preference`), so human and
automated-judge numbers are computed by one implementation and sit in one table (column ``source``:
``human`` or ``judge:<name>``).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from unclip.metrics.preference import bradley_terry_bootstrap, win_rate
from unclip.studies.agreement import fleiss_kappa, krippendorff_alpha_nominal
from unclip.studies.store import ANSWERS, StudyStore

TIE_RULE = "'Not sure' answers are ties: reported in their own column and counted as half a win for each side."
INTERVAL_RULE = "95% Wilson score interval on A's win rate (ties as half), n = all votes including ties."
RANKING_RULE = ("Bradley–Terry log-strengths (mean 0; P(i beats j) = σ(s_i − s_j)), ties as half a win each, "
                "95% percentile intervals from resampling prompts with replacement.")
AGREEMENT_RULE = ("Over comparison pairs (not attention checks) rated by two or more humans; categories "
                  "left / right / not sure (every rater sees a pair in the same order).")
WIN_COLUMNS = ["source", "question", "system_a", "system_b", "n", "wins_a", "wins_b", "ties", "win_rate_a",
               "ci_low", "ci_high"]


def _outcomes(records: list[dict[str, Any]], order: list[str]) -> dict[tuple, list[tuple[str, str]]]:
    """Group (source, question, prompt, sys1, sys2, winner-or-None) records into per-cell lists of
    (prompt, "A"/"B"/"tie") with A the system listed first in the study."""
    cells: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    rank = {s: i for i, s in enumerate(order)}
    for r in records:
        a, b = sorted((r["sys1"], r["sys2"]), key=rank.__getitem__)
        v = "tie" if r["winner"] is None else ("A" if r["winner"] == a else "B")
        cells[r["source"], r["question"], a, b].append((r["prompt"], v))
    return cells


def _records(votes: list[dict[str, Any]], judges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [{"source": "human", "question": v["question"], "prompt": v["prompt"], "sys1": v["left_system"],
            "sys2": v["right_system"], "winner": v["winner"]} for v in votes if not v["is_check"]]
    for j in judges:
        winner = {"a": j["system_a"], "b": j["system_b"], "tie": None}[j["outcome"]]
        out.append({"source": f"judge:{j['judge']}", "question": j["question"], "prompt": j["prompt"],
                    "sys1": j["system_a"], "sys2": j["system_b"], "winner": winner})
    return out


def win_rates(records: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    rows = []
    for (source, q, a, b), items in sorted(_outcomes(records, systems).items()):
        w = win_rate(v for _, v in items)
        rows.append({"source": source, "question": q, "system_a": a, "system_b": b, "n": w["n"],
                     "wins_a": w["wins"], "wins_b": w["losses"], "ties": w["ties"], "win_rate_a": w["rate"],
                     "ci_low": w["lo"], "ci_high": w["hi"]})
    return rows


def rankings(records: list[dict[str, Any]], systems: list[str], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Bradley–Terry per (source, question) for studies of three or more systems."""
    if len(systems) < 3:
        return []
    idx = {s: i for i, s in enumerate(systems)}
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(dict)
    for r in records:
        per = groups[r["source"], r["question"]].setdefault(r["prompt"], np.zeros((len(systems),) * 2))
        i, j = idx[r["sys1"]], idx[r["sys2"]]
        if r["winner"] is None:
            per[i, j] += 0.5
            per[j, i] += 0.5
        elif r["winner"] == r["sys1"]:
            per[i, j] += 1
        else:
            per[j, i] += 1
    out = []
    for (source, q), by_prompt in sorted(groups.items()):
        bt = bradley_terry_bootstrap(np.stack([by_prompt[p] for p in sorted(by_prompt)]), n_boot=n_boot, seed=seed)
        order = np.argsort(-bt["score"])
        rows = [{"system": systems[i], "rank": int(np.where(order == i)[0][0]) + 1, "score": float(bt["score"][i]),
                 "ci_low": float(bt["lo"][i]), "ci_high": float(bt["hi"][i]),
                 "p_first": float(bt["rank_first"][i])} for i in order]
        out.append({"source": source, "question": q, "prompts": len(by_prompt), "systems": rows})
    return out


def rater_table(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in votes:
        by[v["rater"]].append(v)
    rows = []
    for rater, vs in sorted(by.items()):
        checks = [v for v in vs if v["is_check"]]
        times = [v["time_ms"] for v in vs if v["time_ms"] is not None]
        rows.append({"rater": rater, "votes": len(vs), "comparisons": len(vs) - len(checks),
                     "unsure": sum(v["answer"] == "unsure" for v in vs), "checks": len(checks),
                     "checks_passed": sum(v["answer"] == v["expected"] for v in checks),
                     "median_time_ms": statistics.median(times) if times else None})
    return rows


def attention(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """A check passes when the rater picks the real image (or the varied grid); 'not sure' fails."""
    checks = [v for v in votes if v["is_check"]]
    by_q = {}
    for q, vs in itertools.groupby(sorted(checks, key=lambda v: v["question"]), key=lambda v: v["question"]):
        vs = list(vs)
        ok = sum(v["answer"] == v["expected"] for v in vs)
        by_q[q] = {"total": len(vs), "passed": ok, "pass_rate": ok / len(vs)}
    passed = sum(v["answer"] == v["expected"] for v in checks)
    return {"total": len(checks), "passed": passed, "pass_rate": passed / len(checks) if checks else None,
            "by_question": by_q}


def agreement(votes: list[dict[str, Any]], questions: list[str]) -> list[dict[str, Any]]:
    rows = []
    for q in [*questions, "all"]:
        counts: dict[int, Counter] = defaultdict(Counter)
        for v in votes:
            if not v["is_check"] and (q == "all" or v["question"] == q):
                counts[v["pair_id"]][v["answer"]] += 1
        table = [[c[a] for a in ANSWERS] for c in counts.values() if sum(c.values()) >= 2]
        rows.append({"question": q, "items": len(table), "ratings": sum(map(sum, table)),
                     "fleiss_kappa": fleiss_kappa(table) if table else None,
                     "krippendorff_alpha": krippendorff_alpha_nominal(table) if table else None})
    return rows


def compute_results(store: StudyStore, n_boot: int = 1000) -> dict[str, Any]:
    meta = store.meta()
    votes, judges = store.votes(), store.judge_verdicts()
    systems = meta["systems"]
    records = _records(votes, judges)
    return {
        "study": meta["name"],
        "generated_at": time.time(),
        "systems": systems,
        "questions": meta["questions"],
        "n_pairs": Counter(p["question"] for p in store.pairs() if not p["is_check"]),
        "n_votes": len(votes),
        "n_comparison_votes": sum(not v["is_check"] for v in votes),
        "n_check_votes": sum(bool(v["is_check"]) for v in votes),
        "n_judge_verdicts": len(judges),
        "tie_rule": TIE_RULE,
        "interval_rule": INTERVAL_RULE,
        "ranking_rule": RANKING_RULE,
        "agreement_rule": AGREEMENT_RULE,
        "win_rates": win_rates(records, systems),
        "rankings": rankings(records, systems, n_boot, meta["seed"]),
        "raters": rater_table(votes),
        "attention": attention(votes),
        "agreement": agreement(votes, meta["questions"]),
        "messages": meta.get("messages", []),
    }


def _plain(x: Any) -> Any:
    """numpy scalars to Python, NaN (agreement undefined) to None, so the export is strict JSON."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def results_json(res: dict[str, Any]) -> str:
    return json.dumps(_plain(res), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def results_csv(res: dict[str, Any]) -> str:
    """The win-rate table, one row per (source, question, system pair)."""
    return _csv(res["win_rates"], WIN_COLUMNS)


def votes_csv(store: StudyStore) -> str:
    votes = store.votes()
    cols = ["vote_id", "rater", "pair_id", "question", "prompt", "is_check", "expected", "left_system",
            "right_system", "shown_left", "shown_right", "answer", "winner", "time_ms", "created_at"]
    return _csv(votes, cols)
