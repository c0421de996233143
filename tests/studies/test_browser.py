"""End to end in a real headless browser (Debian's chromium driven by Playwright): a rater votes with
the keyboard and the mouse, reloads midway, leaves and comes back, finishes; the owner's results
page shows the expected counts. Screenshots go to tmp_path and /tmp/unclip_study_shots/."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from unclip.studies import StudyStore, create_app, create_study

from .conftest import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/unclip_study_shots")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run tools/ensure_browser.sh (installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]' (or pip install playwright); "
                    "the browser itself comes from tools/ensure_browser.sh, never `playwright install`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, SHOTS / name)


def test_rater_session_and_results(browser, tmp_path, two_systems):
    info = create_study(tmp_path / "study", two_systems, questions="photorealism,caption", check_fraction=0.2,
                        name="browser study")
    with StudyStore(info.dir) as store:
        pairs = {p["id"]: dict(p) for p in store.pairs()}
        systems = store.systems()
    total = len(pairs)
    assert total == 8  # 2 questions x (3 comparisons + 1 attention check)
    # how each page is answered; attention checks always get their expected side
    plan = ["key:ArrowLeft", "click:#left", "key:n", "click:#btn-right", "key:ArrowRight", "click:#btn-unsure",
            "key:1", "click:#right"]
    given: dict[int, str] = {}
    with LiveServer(create_app(info.dir, n_boot=50)) as srv:
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(srv.url + "/")
        page.fill("#rater", "alice")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        shot_taken = False
        for i, action in enumerate(plan):
            assert page.inner_text("#progress") == f"{i + 1} of {total}"
            pid = int(page.get_attribute("input[name=pair_id]", "value"))
            pair = pairs[pid]
            caption_shown = page.locator("#caption").count() == 1
            assert caption_shown == (pair["question"] == "caption")
            if i == 2:  # reload midway: same pair, same progress
                page.reload()
                assert int(page.get_attribute("input[name=pair_id]", "value")) == pid
                assert page.inner_text("#progress") == f"{i + 1} of {total}"
            if i == 4:  # stop, come back later under the same name: continue where left off
                page.goto(srv.url + "/")
                assert page.input_value("#rater") == "alice"  # remembered
                with page.expect_navigation():
                    page.click("button[type=submit]")
                assert int(page.get_attribute("input[name=pair_id]", "value")) == pid
            if caption_shown and not shot_taken:
                page.wait_for_load_state("load")
                _shot(page, tmp_path, "rating_page.png")
                shot_taken = True
            if pair["is_check"]:
                action = "key:ArrowLeft" if pair["expected"] == "left" else "click:#btn-right"
            kind, arg = action.split(":", 1)
            with page.expect_navigation():
                page.keyboard.press(arg) if kind == "key" else page.click(arg)
            given[pid] = {"ArrowLeft": "left", "1": "left", "ArrowRight": "right", "n": "unsure", "#left": "left",
                          "#btn-right": "right", "#right": "right", "#btn-unsure": "unsure"}[arg]
        assert page.locator("#done").count() == 1 and "alice" in page.inner_text("#done")
        assert shot_taken

        # the owner's page: expected counts per system pair
        wins = {"sysA": 0, "sysB": 0}
        ties = 0
        for pid, ans in given.items():
            p = pairs[pid]
            if p["is_check"]:
                continue
            if ans == "unsure":
                ties += 1
            else:
                wins[systems[p["left_system"] if ans == "left" else p["right_system"]]] += 1
        page.goto(srv.url + "/results")
        assert "needs the study owner's token" in page.content()
        page.goto(f"{srv.url}/results?token={info.token}")
        assert page.inner_text("#n-votes") == str(total)
        assert page.inner_text("#attention").startswith("passed 2 of 2")
        rows = page.locator("#win-rates tr").all_inner_texts()[1:]
        cells = [re.split(r"\t", r) for r in rows]
        assert len(cells) == 2 and all(c[0] == "human" and c[2] == "sysA vs sysB" for c in cells)
        got_a = sum(int(c[4]) for c in cells)
        got_b = sum(int(c[5]) for c in cells)
        got_t = sum(int(c[6]) for c in cells)
        assert (got_a, got_b, got_t) == (wins["sysA"], wins["sysB"], ties)
        assert sum(int(c[3]) for c in cells) == total - 2
        rater_row = page.locator("#raters tr").nth(1).inner_text().split("\t")
        assert rater_row[:6] == ["alice", "8", "6", str(ties), "2", "2"]
        _shot(page, tmp_path, "results_page.png")

    with StudyStore(info.dir) as store:
        votes = store.votes()
    assert len(votes) == total and {v["pair_id"]: v["answer"] for v in votes} == given
    assert all(v["time_ms"] is not None and v["time_ms"] > 0 for v in votes)
