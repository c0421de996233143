"""The rating web app: one FastAPI app serves one study directory.

Raters: ``/`` (name) → ``/rate?rater=NAME`` (one comparison per page) → ``POST /vote`` → next.
Owner (token in ``?token=`` or the cookie it sets): ``/results``, ``/export/{results.json,
results.csv,votes.csv}``. Every request opens its own SQLite connection; the study design is read
once at start-up (it never changes after creation).
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from unclip.studies import pages
from unclip.studies.design import Question, rater_order
from unclip.studies.results import compute_results, results_csv, results_json, votes_csv
from unclip.studies.store import DuplicateVote, StudyStore, VoteError

MAX_NAME = 64
TOKEN_COOKIE = "study_owner_token"
RATER_COOKIE = "study_rater"


def _valid_rater(name: str | None) -> str | None:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        return None
    return name


def create_app(study_dir: str | Path, n_boot: int = 1000) -> FastAPI:
    study_dir = Path(study_dir).resolve()
    with StudyStore(study_dir) as store:
        meta = store.meta()
        pairs = {p["id"]: dict(p) for p in store.pairs()}
        prompts = store.prompts()
    title = meta["name"]
    app = FastAPI(title=f"unclip study {title}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study_dir = study_dir
    orders: dict[str, list[int]] = {}
    cache: dict[str, object] = {}  # results are recomputed only when votes or verdicts change

    def cached_results(store: StudyStore) -> dict:
        key = store.conn.execute("SELECT (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM votes) || '/' ||"
                                 " (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM judge_verdicts)").fetchone()[0]
        if cache.get("key") != key:
            cache["res"], cache["key"] = compute_results(store, n_boot=n_boot), key
        return cache["res"]  # type: ignore[return-value]

    def order_for(rater: str) -> list[int]:
        if rater not in orders:
            orders[rater] = rater_order(list(pairs.values()), meta["questions"], meta["seed"], rater)
        return orders[rater]

    def is_owner(request: Request, token: str | None) -> str | None:
        given = token or request.cookies.get(TOKEN_COOKIE) or ""
        return given if secrets.compare_digest(given.encode(), meta["token"].encode()) else None

    def forbidden() -> HTMLResponse:
        return HTMLResponse(pages.message_page("Forbidden", "This page needs the study owner's token (?token=...)."),
                            status_code=403)

    @app.get("/", response_class=HTMLResponse)
    def start(request: Request, rater: str = "") -> str:
        return pages.start_page(title, rater or request.cookies.get(RATER_COOKIE, ""))

    @app.get("/rate")
    def rate(rater: str = "") -> Response:
        name = _valid_rater(rater)
        if name is None:
            return HTMLResponse(pages.start_page(title, "", f"Please enter a name (1–{MAX_NAME} characters)."),
                                status_code=400)
        order = order_for(name)
        with StudyStore(study_dir) as store:
            rid = store.rater_id(name, create=False)
            voted = store.voted_pairs(rid) if rid is not None else set()
        remaining = [p for p in order if p not in voted]
        if not remaining:
            resp: Response = HTMLResponse(pages.done_page(title, name, len(order)))
        else:
            pair = pairs[remaining[0]]
            q = Question(pair["question"])
            caption = prompts[pair["prompt_id"]] if q.shows_caption else None
            resp = HTMLResponse(pages.rate_page(title, name, pair, q.prompt_text, caption,
                                                len(order) - len(remaining), len(order), time.time()))
        resp.set_cookie(RATER_COOKIE, name, max_age=30 * 24 * 3600, samesite="lax")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.post("/vote")
    def vote(request: Request, rater: str = Form(""), pair_id: str = Form(""), answer: str = Form(""),
             time_ms: str = Form(""), served_at: str = Form("")) -> Response:
        json_client = "application/json" in request.headers.get("accept", "")

        def fail(status: int, msg: str, link: str | None = None) -> Response:
            if json_client:
                return JSONResponse({"detail": msg}, status_code=status)
            return HTMLResponse(pages.message_page("Vote not recorded", msg, link), status_code=status)

        name = _valid_rater(rater)
        if name is None:
            return fail(400, f"rater name must be 1–{MAX_NAME} printable characters")
        try:
            pid = int(pair_id)
        except ValueError:
            return fail(400, f"pair_id must be an integer, got {pair_id!r}")
        if pid not in pairs:
            return fail(400, f"unknown pair {pid}")
        ms: int | None = None
        try:
            ms = max(0, int(float(time_ms)))
        except ValueError:
            try:  # no JavaScript: time since the page was served
                ms = max(0, int((time.time() - float(served_at)) * 1000))
            except ValueError:
                ms = None
        try:
            with StudyStore(study_dir) as store:
                vote_id = store.add_vote(name, pid, answer, ms)
        except DuplicateVote as e:
            return fail(409, str(e), f"rate?rater={quote(name)}")
        except VoteError as e:
            return fail(400, str(e))
        if json_client:
            return JSONResponse({"vote_id": vote_id})
        return RedirectResponse(f"rate?rater={quote(name)}", status_code=303)

    @app.get("/img/{stimulus_id}")
    def image(stimulus_id: int) -> Response:
        with StudyStore(study_dir) as store:
            path = store.stimulus_path(stimulus_id)
        if path is None:
            return PlainTextResponse(f"unknown image {stimulus_id}", status_code=404)
        path = path if path.is_absolute() else study_dir / path
        if not path.is_file():
            return PlainTextResponse(f"image {stimulus_id} is missing on disk: {path}", status_code=410)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    def owner_response(resp: Response, token: str) -> Response:
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/results")
    def results(request: Request, token: str | None = None) -> Response:
        tok = is_owner(request, token)
        if tok is None:
            return forbidden()
        with StudyStore(study_dir) as store:
            res = cached_results(store)
        return owner_response(HTMLResponse(pages.results_page(res, tok)), tok)

    @app.get("/export/{name}")
    def export(name: str, request: Request, token: str | None = None) -> Response:
        tok = is_owner(request, token)
        if tok is None:
            return forbidden()
        with StudyStore(study_dir) as store:
            if name == "votes.csv":
                return owner_response(PlainTextResponse(votes_csv(store), media_type="text/csv"), tok)
            if name not in ("results.json", "results.csv"):
                return PlainTextResponse(f"unknown export {name!r}; choose results.json, results.csv or votes.csv",
                                         status_code=404)
            res = cached_results(store)
        if name == "results.json":
            return owner_response(Response(results_json(res), media_type="application/json"), tok)
        return owner_response(PlainTextResponse(results_csv(res), media_type="text/csv"), tok)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"study": title, "pairs": len(pairs)}

    return app
