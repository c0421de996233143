"""One SQLite file per study: the design (systems, prompts, stimuli, pairs) and every vote.

WAL journal, ``synchronous=FULL`` and one committed transaction per vote, so a vote that got its
reply survives a crash or restart. Each request opens its own connection (SQLite serialises
writers; ``busy_timeout`` makes concurrent raters queue instead of failing). A rater can vote on a
pair once: ``UNIQUE(pair_id, rater_id)`` enforces it in the database, not in Python.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DB_NAME = "study.db"
SCHEMA_VERSION = 1
ANSWERS = ("left", "right", "unsure")
QUESTION_ALIASES = {"realism": "photorealism", "caption_match": "caption"}  # evals judge names

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS systems (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, root TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, text TEXT UNIQUE NOT NULL);
-- an image shown to raters: a sample, a 4x4 grid of samples, or an attention-check foil
CREATE TABLE IF NOT EXISTS stimuli (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('sample', 'grid', 'noise', 'repeat_grid')),
    system_id INTEGER REFERENCES systems(id),
    prompt_id INTEGER REFERENCES prompts(id),
    seed INTEGER,
    path TEXT NOT NULL
);
-- left/right order is drawn at creation, recorded here and shown to every rater as stored
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    question TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    left_stimulus INTEGER NOT NULL REFERENCES stimuli(id),
    right_stimulus INTEGER NOT NULL REFERENCES stimuli(id),
    left_system INTEGER REFERENCES systems(id),
    right_system INTEGER REFERENCES systems(id),
    is_check INTEGER NOT NULL DEFAULT 0,
    expected TEXT CHECK (expected IN ('left', 'right'))
);
CREATE TABLE IF NOT EXISTS raters (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    shown_left INTEGER NOT NULL REFERENCES stimuli(id),
    shown_right INTEGER NOT NULL REFERENCES stimuli(id),
    answer TEXT NOT NULL CHECK (answer IN ('left', 'right', 'unsure')),
    winner_system INTEGER REFERENCES systems(id),
    time_ms INTEGER,
    created_at REAL NOT NULL,
    UNIQUE (pair_id, rater_id)
);
-- automated judges (unclip/evals) beside the humans: outcome is 'a', 'b' or 'tie'
CREATE TABLE IF NOT EXISTS judge_verdicts (
    id INTEGER PRIMARY KEY,
    judge TEXT NOT NULL,
    question TEXT NOT NULL,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    system_a INTEGER NOT NULL REFERENCES systems(id),
    system_b INTEGER NOT NULL REFERENCES systems(id),
    seed INTEGER,
    outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie')),
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_rater ON votes (rater_id);
"""


class VoteError(ValueError):
    """A vote the study cannot accept (unknown pair, bad answer); maps to HTTP 400."""


class DuplicateVote(VoteError):
    """The rater already voted on this pair; maps to HTTP 409."""


def connect(db_path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), timeout=30.0, isolation_level=None)  # explicit BEGIN/COMMIT
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class StudyStore:
    """Typed access to a study's database; cheap to create, one per request or thread."""

    def __init__(self, study_dir: str | Path):
        self.dir = Path(study_dir)
        self.db_path = self.dir / DB_NAME
        if not self.db_path.is_file():
            raise FileNotFoundError(f"{self.db_path} does not exist: create the study first (sample/study.py create)")
        self.conn = connect(self.db_path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- design ----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.conn.execute("SELECT key, value FROM meta")}

    def systems(self) -> dict[int, str]:
        return {r["id"]: r["name"] for r in self.conn.execute("SELECT id, name FROM systems ORDER BY id")}

    def prompts(self) -> dict[int, str]:
        return {r["id"]: r["text"] for r in self.conn.execute("SELECT id, text FROM prompts ORDER BY id")}

    def pairs(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM pairs ORDER BY id").fetchall()

    def pair(self, pair_id: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()

    def stimulus_path(self, stimulus_id: int) -> Path | None:
        row = self.conn.execute("SELECT path FROM stimuli WHERE id = ?", (stimulus_id,)).fetchone()
        return None if row is None else Path(row["path"])

    # -- raters and votes --------------------------------------------------------------------
    def rater_id(self, name: str, create: bool = True) -> int | None:
        row = self.conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
        if row is not None or not create:
            return None if row is None else row["id"]
        self.conn.execute("INSERT OR IGNORE INTO raters (name, created_at) VALUES (?, ?)", (name, time.time()))
        return self.conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()["id"]

    def voted_pairs(self, rater_id: int) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT pair_id FROM votes WHERE rater_id = ?", (rater_id,))}

    def add_vote(self, rater: str, pair_id: int, answer: str, time_ms: int | None) -> int:
        """Record one vote in its own committed transaction; returns the vote id."""
        if answer not in ANSWERS:
            raise VoteError(f"answer must be one of {ANSWERS}, got {answer!r}")
        pair = self.pair(pair_id)
        if pair is None:
            raise VoteError(f"unknown pair {pair_id}")
        winner = None
        if not pair["is_check"] and answer != "unsure":
            winner = pair["left_system"] if answer == "left" else pair["right_system"]
        rid = self.rater_id(rater)
        try:
            with self.transaction() as c:
                cur = c.execute(
                    "INSERT INTO votes (pair_id, rater_id, shown_left, shown_right, answer, winner_system, time_ms,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (pair_id, rid, pair["left_stimulus"], pair["right_stimulus"], answer, winner, time_ms, time.time()),
                )
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise DuplicateVote(f"rater {rater!r} already voted on pair {pair_id}") from e
            raise
        return int(cur.lastrowid)

    def votes(self) -> list[dict[str, Any]]:
        """Every vote joined with its pair, one dict per vote (the raw export)."""
        sql = """
        SELECT v.id AS vote_id, r.name AS rater, v.pair_id, p.question, pr.text AS prompt, p.is_check,
               p.expected, sl.name AS left_system, sr.name AS right_system, v.shown_left, v.shown_right,
               v.answer, sw.name AS winner, v.time_ms, v.created_at
        FROM votes v JOIN raters r ON r.id = v.rater_id JOIN pairs p ON p.id = v.pair_id
        JOIN prompts pr ON pr.id = p.prompt_id
        LEFT JOIN systems sl ON sl.id = p.left_system LEFT JOIN systems sr ON sr.id = p.right_system
        LEFT JOIN systems sw ON sw.id = v.winner_system
        ORDER BY v.id"""
        return [dict(r) for r in self.conn.execute(sql)]

    def judge_verdicts(self) -> list[dict[str, Any]]:
        sql = """
        SELECT j.judge, j.question, pr.text AS prompt, sa.name AS system_a, sb.name AS system_b, j.seed, j.outcome
        FROM judge_verdicts j JOIN prompts pr ON pr.id = j.prompt_id
        JOIN systems sa ON sa.id = j.system_a JOIN systems sb ON sb.id = j.system_b ORDER BY j.id"""
        return [dict(r) for r in self.conn.execute(sql)]

    def add_judge_verdicts(self, judge: str, verdicts: list[dict[str, Any]]) -> int:
        """Store an automated judge's verdicts; each has question, prompt, system_a, system_b and
        winner: a system name, "A"/"B" (as `unclip.evals.judges` says), or "tie"/"unsure"; seed
        optional. The evals' "realism" judge files under "photorealism". All or nothing."""
        systems = {v: k for k, v in self.systems().items()}
        questions = {"photorealism", "caption", "diversity"}
        prompts = {v: k for k, v in self.prompts().items()}
        rows = []
        for i, v in enumerate(verdicts):
            where = f"judge {judge!r} verdict #{i}"
            missing = [k for k in ("question", "prompt", "system_a", "system_b", "winner") if k not in v]
            if missing:
                raise VoteError(f"{where} lacks {missing}")
            for key in ("system_a", "system_b"):
                if v[key] not in systems:
                    raise VoteError(f"{where}: {key} {v[key]!r} is not a system of this study ({sorted(systems)})")
            if v["prompt"] not in prompts:
                raise VoteError(f"{where}: prompt {v['prompt']!r} is not a prompt of this study")
            question = QUESTION_ALIASES.get(v["question"], v["question"])
            if question not in questions:
                raise VoteError(f"{where}: question {v['question']!r} is not one of {sorted(questions)}")
            winner = v["winner"]
            outcome = {"A": "a", "B": "b", v["system_a"]: "a", v["system_b"]: "b", "tie": "tie",
                       "unsure": "tie"}.get(winner)
            if outcome is None or v["system_a"] == v["system_b"]:
                raise VoteError(f"{where}: winner {winner!r} must be system_a, system_b or 'tie'")
            rows.append((judge, question, prompts[v["prompt"]], systems[v["system_a"]], systems[v["system_b"]],
                         v.get("seed"), outcome, time.time()))
        with self.transaction() as c:
            c.executemany("INSERT INTO judge_verdicts (judge, question, prompt_id, system_a, system_b, seed, outcome,"
                          " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)


def init_db(study_dir: str | Path) -> sqlite3.Connection:
    path = Path(study_dir) / DB_NAME
    if path.exists():
        raise FileExistsError(f"{path} already exists: a study directory holds one study (pick a new --out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    conn.executescript(SCHEMA)
    return conn
