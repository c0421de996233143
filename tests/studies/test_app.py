"""The rating app over HTTP: bad votes, duplicates, owner token, restarts, concurrent raters, the CLI."""
from __future__ import annotations

import importlib.util
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from unclip.studies import StudyStore, create_app, create_study

from .conftest import LiveServer, write_samples

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def study(tmp_path, two_systems):
    return create_study(tmp_path / "study", two_systems, questions="photorealism,caption", check_fraction=0.2)


def _pair_on_page(text: str) -> int:
    return int(re.search(r'name=pair_id value="(\d+)"', text).group(1))


def test_bad_votes_and_duplicates(study):
    c = TestClient(create_app(study.dir, n_boot=20))
    page = c.get("/rate", params={"rater": "ann"})
    assert page.status_code == 200 and "1 of 8" in page.text
    pid = _pair_on_page(page.text)
    assert c.post("/vote", data={"rater": "ann", "pair_id": "9999", "answer": "left"}).status_code == 400
    assert c.post("/vote", data={"rater": "ann", "pair_id": "abc", "answer": "left"}).status_code == 400
    assert c.post("/vote", data={"rater": "ann", "pair_id": str(pid), "answer": "up"}).status_code == 400
    assert c.post("/vote", data={"rater": " ", "pair_id": str(pid), "answer": "left"}).status_code == 400
    assert c.get("/rate", params={"rater": ""}).status_code == 400
    r = c.post("/vote", data={"rater": "ann", "pair_id": str(pid), "answer": "left", "time_ms": "1234"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "rate?rater=ann"
    dup = c.post("/vote", data={"rater": "ann", "pair_id": str(pid), "answer": "right"},
                 headers={"accept": "application/json"})
    assert dup.status_code == 409 and "already voted" in dup.json()["detail"]
    assert "2 of 8" in c.get("/rate", params={"rater": "ann"}).text
    with StudyStore(study.dir) as store:
        (v,) = store.votes()
    assert (v["rater"], v["pair_id"], v["answer"], v["time_ms"]) == ("ann", pid, "left", 1234)
    assert c.get("/img/99999").status_code == 404
    pair = next(p for p in StudyStore(study.dir).pairs() if p["id"] == pid)
    img = c.get(f"/img/{pair['left_stimulus']}")
    assert img.status_code == 200 and img.content[:4] == b"\x89PNG"


def test_owner_token_and_restart(study):
    c = TestClient(create_app(study.dir, n_boot=20))
    assert c.get("/results").status_code == 403
    assert c.get("/results", params={"token": "wrong"}).status_code == 403
    assert c.get("/export/votes.csv").status_code == 403
    pid = _pair_on_page(c.get("/rate", params={"rater": "ann"}).text)
    c.post("/vote", data={"rater": "ann", "pair_id": str(pid), "answer": "unsure"})
    assert c.get("/results", params={"token": study.token}).status_code == 200
    assert c.get("/export/results.json").status_code == 200  # the token cookie now opens the exports
    # a restarted server (new app, same directory) has every vote and continues where the rater was
    c2 = TestClient(create_app(study.dir, n_boot=20))
    res = c2.get("/export/results.json", params={"token": study.token}).json()
    assert res["n_votes"] == 1 and res["raters"][0]["unsure"] == 1
    assert "2 of 8" in c2.get("/rate", params={"rater": "ann"}).text
    assert c2.get("/export/nope.txt", params={"token": study.token}).status_code == 404


def test_concurrent_raters_lose_and_duplicate_nothing(study):
    with StudyStore(study.dir) as store:
        pair_ids = [p["id"] for p in store.pairs()]
    raters = [f"rater{i}" for i in range(6)]
    statuses: Counter = Counter()
    lock = threading.Lock()
    with LiveServer(create_app(study.dir, n_boot=20)) as srv:
        def worker(rater: str, ids: list[int]) -> None:
            for pid in ids:
                body = urllib.parse.urlencode({"rater": rater, "pair_id": pid, "answer": "left", "time_ms": 5})
                req = urllib.request.Request(f"{srv.url}/vote", data=body.encode(),
                                             headers={"Accept": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        code = r.status
                except urllib.error.HTTPError as e:
                    code = e.code
                with lock:
                    statuses[code] += 1

        # two threads per rater race over the same pairs in opposite orders
        threads = [threading.Thread(target=worker, args=(r, ids))
                   for r in raters for ids in (pair_ids, pair_ids[::-1])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    n = len(raters) * len(pair_ids)
    assert statuses == {200: n, 409: n}
    with StudyStore(study.dir) as store:
        votes = store.votes()
    assert len(votes) == n
    assert len({(v["rater"], v["pair_id"]) for v in votes}) == n


def _load_cli():
    spec = importlib.util.spec_from_file_location("study_cli", REPO / "sample" / "study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_create_judge_results(tmp_path, capsys):
    cli = _load_cli()
    a = write_samples(tmp_path / "a", "a")
    b = write_samples(tmp_path / "b", "b", prompts=["a large blue circle", "x", "y"])
    assert cli.main(["create", "--out", str(tmp_path / "bad"), f"base={a}", f"ours={b}"]) == 2
    assert "prompts do not match" in capsys.readouterr().err
    c = write_samples(tmp_path / "c", "c")
    assert cli.main(["create", "--out", str(tmp_path / "s"), f"base={a}", f"ours={c}",
                     "--questions", "caption"]) == 0
    out = capsys.readouterr().out
    assert "caption: 3 comparisons + 1 attention checks" in out and "owner token:" in out
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("\n".join(json.dumps({"question": "caption", "prompt": p, "system_a": "base",
                                              "system_b": "ours", "winner": "B"}) for p in
                                  ["a large blue circle", "a small red star at the top left"]))
    assert cli.main(["judge", str(tmp_path / "s"), str(verdicts), "--name", "oracle"]) == 0
    assert cli.main(["results", str(tmp_path / "s"), "--json", str(tmp_path / "r.json"),
                     "--csv", str(tmp_path / "r.csv"), "--votes", str(tmp_path / "v.csv"), "--n-boot", "10"]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    (row,) = res["win_rates"]
    assert row["source"] == "judge:oracle" and row["wins_b"] == 2
    assert (tmp_path / "r.csv").read_text().startswith("source,question,system_a")
