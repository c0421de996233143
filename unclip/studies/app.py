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

from fastapi import APIRouter, FastAPI, Form, Request
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


class _Study:
    """What every route shares: the study design (read once; it never changes after creation), each
    rater's pair order, and the results cache. Requests open their own ``StudyStore(study.dir)``."""

    def __init__(self, study_dir: Path, n_boot: int) -> None:
        with StudyStore(study_dir) as store:
            self.meta = store.meta()
            self.pairs = {p["id"]: dict(p) for p in store.pairs()}
            self.prompts = store.prompts()
        self.dir = study_dir
        self.title = self.meta["name"]
        self.n_boot = n_boot
        self._orders: dict[str, list[int]] = {}
        self._cache: dict[str, object] = {}  # results are recomputed only when votes or verdicts change

    def order_for(self, rater: str) -> list[int]:
        if rater not in self._orders:
            self._orders[rater] = rater_order(list(self.pairs.values()), self.meta["questions"], self.meta["seed"],
                                              rater)
        return self._orders[rater]

    def results(self, store: StudyStore) -> dict:
        key = store.conn.execute("SELECT (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM votes) || '/' ||"
                                 " (SELECT COUNT(*) || ':' || IFNULL(MAX(id), 0) FROM judge_verdicts)").fetchone()[0]
        if self._cache.get("key") != key:
            self._cache["res"], self._cache["key"] = compute_results(store, n_boot=self.n_boot), key
        return self._cache["res"]  # type: ignore[return-value]

    def owner_token(self, request: Request, token: str | None) -> str | None:
        """The owner token from ``?token=`` or the cookie, if it matches; None otherwise."""
        given = token or request.cookies.get(TOKEN_COOKIE) or ""
        return given if secrets.compare_digest(given.encode(), self.meta["token"].encode()) else None


def create_app(study_dir: str | Path, n_boot: int = 1000) -> FastAPI:
    """The rating app for one study directory: rater pages, voting, and the owner's results and exports."""
    study = _Study(Path(study_dir).resolve(), n_boot)
    app = FastAPI(title=f"unclip study {study.title}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study_dir = study.dir
    app.include_router(_rater_routes(study))
    app.include_router(_vote_routes(study))
    app.include_router(_owner_routes(study))
    return app


# ------------------------------------------------------------------ raters: pages, images, health

def _rater_routes(study: _Study) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def start(request: Request, rater: str = "") -> str:
        return pages.start_page(study.title, rater or request.cookies.get(RATER_COOKIE, ""))

    @router.get("/rate")
    def rate(rater: str = "") -> Response:
        name = _valid_rater(rater)
        if name is None:
            return HTMLResponse(pages.start_page(study.title, "", f"Please enter a name (1–{MAX_NAME} characters)."),
                                status_code=400)
        resp = _next_comparison_page(study, name)
        resp.set_cookie(RATER_COOKIE, name, max_age=30 * 24 * 3600, samesite="lax")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @router.get("/img/{stimulus_id}")
    def image(stimulus_id: int) -> Response:
        with StudyStore(study.dir) as store:
            path = store.stimulus_path(stimulus_id)
        if path is None:
            return PlainTextResponse(f"unknown image {stimulus_id}", status_code=404)
        path = path if path.is_absolute() else study.dir / path
        if not path.is_file():
            return PlainTextResponse(f"image {stimulus_id} is missing on disk: {path}", status_code=410)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"study": study.title, "pairs": len(study.pairs)}

    return router


def _next_comparison_page(study: _Study, name: str) -> Response:
    """The rater's first comparison not yet voted on, or the done page."""
    order = study.order_for(name)
    with StudyStore(study.dir) as store:
        rid = store.rater_id(name, create=False)
        voted = store.voted_pairs(rid) if rid is not None else set()
    remaining = [p for p in order if p not in voted]
    if not remaining:
        return HTMLResponse(pages.done_page(study.title, name, len(order)))
    pair = study.pairs[remaining[0]]
    q = Question(pair["question"])
    caption = study.prompts[pair["prompt_id"]] if q.shows_caption else None
    return HTMLResponse(pages.rate_page(study.title, name, pair, q.prompt_text, caption,
                                        len(order) - len(remaining), len(order), time.time()))


# ------------------------------------------------------------------ voting

def _vote_routes(study: _Study) -> APIRouter:
    router = APIRouter()

    @router.post("/vote")
    def vote(request: Request, rater: str = Form(""), pair_id: str = Form(""), answer: str = Form(""),
             time_ms: str = Form(""), served_at: str = Form("")) -> Response:
        """Record one vote; JSON clients get ``{"vote_id"}``, forms a 303 to the next comparison."""
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
        if pid not in study.pairs:
            return fail(400, f"unknown pair {pid}")
        ms = _elapsed_ms(time_ms, served_at)
        try:
            with StudyStore(study.dir) as store:
                vote_id = store.add_vote(name, pid, answer, ms)
        except DuplicateVote as e:
            return fail(409, str(e), f"rate?rater={quote(name)}")
        except VoteError as e:
            return fail(400, str(e))
        if json_client:
            return JSONResponse({"vote_id": vote_id})
        return RedirectResponse(f"rate?rater={quote(name)}", status_code=303)

    return router


def _elapsed_ms(time_ms: str, served_at: str) -> int | None:
    """The page's own timing, or without JavaScript the time since the page was served; None if neither parses."""
    try:
        return max(0, int(float(time_ms)))
    except ValueError:
        try:
            return max(0, int((time.time() - float(served_at)) * 1000))
        except ValueError:
            return None


# ------------------------------------------------------------------ owner: results and exports

def _forbidden() -> HTMLResponse:
    return HTMLResponse(pages.message_page("Forbidden", "This page needs the study owner's token (?token=...)."),
                        status_code=403)


def _owner_response(resp: Response, token: str) -> Response:
    """Remember the owner in a cookie and keep owner pages out of caches."""
    resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _owner_routes(study: _Study) -> APIRouter:
    router = APIRouter()

    @router.get("/results")
    def results(request: Request, token: str | None = None) -> Response:
        tok = study.owner_token(request, token)
        if tok is None:
            return _forbidden()
        with StudyStore(study.dir) as store:
            res = study.results(store)
        return _owner_response(HTMLResponse(pages.results_page(res, tok)), tok)

    @router.get("/export/{name}")
    def export(name: str, request: Request, token: str | None = None) -> Response:
        tok = study.owner_token(request, token)
        if tok is None:
            return _forbidden()
        with StudyStore(study.dir) as store:
            if name == "votes.csv":
                return _owner_response(PlainTextResponse(votes_csv(store), media_type="text/csv"), tok)
            if name not in ("results.json", "results.csv"):
                return PlainTextResponse(f"unknown export {name!r}; choose results.json, results.csv or votes.csv",
                                         status_code=404)
            res = study.results(store)
        if name == "results.json":
            return _owner_response(Response(results_json(res), media_type="application/json"), tok)
        return _owner_response(PlainTextResponse(results_csv(res), media_type="text/csv"), tok)

    return router
