"""Build a study: questions, balanced pairs, 4x4 grids, attention checks; and each rater's order.

Balance (DALL·E 2 §5, Appendix: human evaluations): every (prompt, system pair) cell of a question
gets the same number of comparisons; seeds are drawn without replacement from the seeds all
systems share, so both sides of a pair come from the same prompt and seed; within each system
pair exactly half the comparisons (±1) put the first system on the left, in random positions.
"""
from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import math
import random
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from unclip.studies.samples import SampleSet, StudyError, check_matching, load_sample_dir
from unclip.studies.store import SCHEMA_VERSION, init_db

GRID_SIDE = 4  # diversity compares two 4x4 grids of one caption
GRID_N = GRID_SIDE * GRID_SIDE


class Question(str, enum.Enum):
    PHOTOREALISM = "photorealism"  # caption hidden: which image is more photorealistic?
    CAPTION = "caption"  # caption shown: which image better matches the caption?
    DIVERSITY = "diversity"  # caption shown: which 4x4 grid is more diverse?

    @property
    def prompt_text(self) -> str:
        return {
            "photorealism": "Which image is more photorealistic?",
            "caption": "Which image better matches the caption?",
            "diversity": "Which set of images is more diverse?",
        }[self.value]

    @property
    def shows_caption(self) -> bool:
        return self is not Question.PHOTOREALISM


def parse_questions(names: Sequence[str] | str) -> list[Question]:
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        try:
            q = Question(n.strip())
        except ValueError:
            raise StudyError(f"unknown question {n!r}; choose from {[q.value for q in Question]}") from None
        if q not in out:
            out.append(q)
    if not out:
        raise StudyError("a study needs at least one question")
    return out


@dataclasses.dataclass
class StudyInfo:
    dir: Path
    token: str
    n_pairs: dict[str, int]  # question -> comparisons (without checks)
    n_checks: dict[str, int]
    messages: list[str]  # what was skipped and why


def _balanced_flips(n: int, rng: random.Random) -> list[bool]:
    flips = [i % 2 == 1 for i in range(n)]
    rng.shuffle(flips)
    return flips


def _draw_seeds(seeds: Sequence[int], k: int, rng: random.Random) -> list[int]:
    """k seeds without replacement, starting a fresh shuffled round when the seeds run out."""
    out: list[int] = []
    while len(out) < k:
        pool = list(seeds)
        rng.shuffle(pool)
        out.extend(pool[: k - len(out)])
    return out


def _save_grid(paths: Sequence[Path], out: Path, tile: int) -> None:
    grid = Image.new("RGB", (GRID_SIDE * tile + (GRID_SIDE - 1) * 2,) * 2, "white")
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB").resize((tile, tile), Image.BICUBIC)
        grid.paste(im, ((i % GRID_SIDE) * (tile + 2), (i // GRID_SIDE) * (tile + 2)))
    grid.save(out)


def create_study(
    out_dir: str | Path,
    sample_dirs: Sequence[tuple[str, str | Path]],
    questions: Sequence[str] | str = ("photorealism", "caption", "diversity"),
    pairs_per_prompt: int = 1,
    check_fraction: float = 0.1,
    seed: int = 0,
    name: str | None = None,
    token: str | None = None,
) -> StudyInfo:
    """Create ``out_dir/study.db`` (plus grids/ and checks/ images) from ``(system, directory)`` pairs.

    ``pairs_per_prompt`` comparisons per (prompt, system pair) for the single-image questions;
    diversity uses one per cell and skips prompts with fewer than 16 images in some system.
    ``check_fraction`` of each question's comparisons are added as attention checks (at least one).
    """
    qs = parse_questions(questions)
    if pairs_per_prompt < 1:
        raise StudyError(f"pairs_per_prompt must be ≥ 1, got {pairs_per_prompt}")
    if not 0.0 <= check_fraction <= 1.0:
        raise StudyError(f"check_fraction must be in [0, 1], got {check_fraction}")
    sets, prompts, messages = _load_systems(sample_dirs)
    rng = random.Random(seed)
    diversity_prompts = _diversity_prompts(qs, sets, prompts, messages) if Question.DIVERSITY in qs else []

    out = Path(out_dir)
    conn = init_db(out)
    (out / "grids").mkdir(exist_ok=True)
    (out / "checks").mkdir(exist_ok=True)
    token = token or secrets.token_urlsafe(16)
    with Image.open(next(iter(next(iter(sets[0].by_prompt.values())).values())).path) as im:
        size = im.size

    conn.execute("BEGIN IMMEDIATE")
    try:
        db = _StudyWriter(conn, out, size, sets, prompts)
        db.add_grids(diversity_prompts)
        n_pairs, n_checks = {}, {}
        noise_rng = np.random.default_rng(seed)
        for q in qs:
            diversity = q is Question.DIVERSITY  # one comparison per cell, of grids
            n_pairs[q.value], n_checks[q.value] = db.add_question(
                q, diversity_prompts if diversity else prompts, 1 if diversity else pairs_per_prompt, check_fraction,
                rng, noise_rng)
        db.add_meta({
            "schema_version": SCHEMA_VERSION,
            "name": name or out.resolve().name,
            "token": token,
            "seed": seed,
            "created_at": time.time(),
            "questions": [q.value for q in qs],
            "systems": [s.system for s in sets],
            "sources": {s.system: str(s.root) for s in sets},
            "pairs_per_prompt": pairs_per_prompt,
            "check_fraction": check_fraction,
            "messages": messages,
        })
        conn.execute("COMMIT")
    except BaseException:
        _discard(conn, out)
        raise
    conn.close()
    return StudyInfo(out, token, n_pairs, n_checks, messages)


def _discard(conn: sqlite3.Connection, out: Path) -> None:
    """Roll back and delete the database: leave no half-made study behind."""
    conn.execute("ROLLBACK")
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        (out / f"study.db{suffix}").unlink(missing_ok=True)


def _load_systems(sample_dirs: Sequence[tuple[str, str | Path]]) -> tuple[list[SampleSet], list[str], list[str]]:
    """Each system's samples, the prompts they all share (else StudyError), and notes on skipped files."""
    sets = [load_sample_dir(s, d) for s, d in sample_dirs]
    prompts = check_matching(sets)
    messages = [f"system {s.system!r}: skipped {len(s.skipped)} PNG(s) without a sidecar (e.g. contact sheets)"
                for s in sets if s.skipped]
    return sets, prompts, messages


def _diversity_prompts(qs: list[Question], sets: Sequence[SampleSet], prompts: Sequence[str],
                       messages: list[str]) -> list[str]:
    """The prompts with a full grid in every system; notes the others in ``messages`` and, if none
    is left, drops diversity from ``qs`` (a StudyError if it was the only question)."""
    kept = []
    for p in prompts:
        short = {s.system: len(s.by_prompt[p]) for s in sets if len(s.by_prompt[p]) < GRID_N}
        if short:
            messages.append(f"diversity: skipped prompt {p!r}: needs ≥{GRID_N} images per system, got {short}")
        else:
            kept.append(p)
    if not kept:
        messages.append(f"diversity: question dropped, no prompt has ≥{GRID_N} images in every system")
        qs.remove(Question.DIVERSITY)
        if not qs:
            raise StudyError(f"diversity needs ≥{GRID_N} images per prompt per system and no prompt has them; "
                             f"sample more seeds per prompt or choose other questions")
    return kept


def _common_seeds(sets: Sequence[SampleSet], prompt: str) -> list[int]:
    return sorted(set.intersection(*(set(s.by_prompt[prompt]) for s in sets)))


Comparison = tuple[tuple[str, str, str, int | None], bool]  # ((prompt, system a, system b, seed), a on the right)


def _balanced_comparisons(q: Question, sets: Sequence[SampleSet], prompts: Sequence[str], per_cell: int,
                          rng: random.Random) -> list[Comparison]:
    """``per_cell`` comparisons per (prompt, system pair) cell, seeds shared by both sides (None for a
    diversity grid); half of each system pair's flipped, then all shuffled so ids carry no order."""
    cells = []  # (prompt, sys_a, sys_b, seed or None)
    for a, b in itertools.combinations(sets, 2):
        for p in prompts:
            if q is Question.DIVERSITY:
                cells.append((p, a.system, b.system, None))
            else:
                cells.extend((p, a.system, b.system, sd) for sd in _draw_seeds(_common_seeds(sets, p), per_cell, rng))
    by_syspair: dict[tuple[str, str], list] = {}
    for c in cells:
        by_syspair.setdefault((c[1], c[2]), []).append(c)
    ordered = []
    for group in by_syspair.values():
        ordered.extend(zip(group, _balanced_flips(len(group), rng)))
    rng.shuffle(ordered)  # ids carry no order information
    return ordered


class _StudyWriter:
    """Rows of one study inside an open transaction: systems, prompts and every sample as stimuli on
    construction, then grids, comparisons, attention checks and meta; images go under ``out``."""

    def __init__(self, conn: sqlite3.Connection, out: Path, size: tuple[int, int], sets: Sequence[SampleSet],
                 prompts: Sequence[str]) -> None:
        self.conn, self.out, self.size, self.sets = conn, out, size, sets
        self.tile = min(size[0], 160)
        self.sys_id = {s.system: conn.execute("INSERT INTO systems (name, root) VALUES (?, ?)",
                                              (s.system, str(s.root))).lastrowid for s in sets}
        self.prompt_id = {p: conn.execute("INSERT INTO prompts (text) VALUES (?)", (p,)).lastrowid for p in prompts}
        self.sample_stim: dict[tuple[str, str, int], int] = {}
        for s in sets:
            for p, by_seed in s.by_prompt.items():
                for sd, smp in sorted(by_seed.items()):
                    self.sample_stim[s.system, p, sd] = self.stimulus("sample", smp.path, s.system, p, sd)
        self.grid_stim: dict[tuple[str, str], int] = {}

    def stimulus(self, kind: str, path: Path, system: str | None = None, prompt: str | None = None,
                 seed: int | None = None) -> int:
        return self.conn.execute(
            "INSERT INTO stimuli (kind, system_id, prompt_id, seed, path) VALUES (?, ?, ?, ?, ?)",
            (kind, self.sys_id.get(system), self.prompt_id.get(prompt), seed, str(path)),
        ).lastrowid

    def pair(self, q: Question, p: str, left: int, right: int, ls: str | None, rs: str | None,
             expected: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO pairs (question, prompt_id, left_stimulus, right_stimulus, left_system, right_system,"
            " is_check, expected) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (q.value, self.prompt_id[p], left, right, self.sys_id.get(ls), self.sys_id.get(rs),
             int(expected is not None), expected),
        )

    def add_grids(self, prompts: Sequence[str]) -> None:
        """One 4x4 grid per (system, prompt), from the seeds all systems share where there are enough."""
        for p in prompts:
            common = _common_seeds(self.sets, p)
            for s in self.sets:
                seeds = common[:GRID_N] if len(common) >= GRID_N else sorted(s.by_prompt[p])[:GRID_N]
                rel = Path("grids") / f"{self.sys_id[s.system]}_{self.prompt_id[p]}.png"
                _save_grid([s.by_prompt[p][sd].path for sd in seeds], self.out / rel, self.tile)
                self.grid_stim[s.system, p] = self.stimulus("grid", rel, s.system, p)

    def add_question(self, q: Question, prompts: Sequence[str], per_cell: int, check_fraction: float,
                     rng: random.Random, noise_rng: np.random.Generator) -> tuple[int, int]:
        """Balanced comparisons, then ``check_fraction`` of their number (rounded up) as attention checks;
        returns (comparisons, checks)."""
        comparisons = _balanced_comparisons(q, self.sets, prompts, per_cell, rng)
        self.add_comparisons(q, comparisons)
        k = math.ceil(check_fraction * len(comparisons)) if check_fraction > 0 else 0
        self.add_checks(q, k, prompts, rng, noise_rng)
        return len(comparisons), k

    def add_comparisons(self, q: Question, comparisons: Sequence[Comparison]) -> None:
        for (p, a, b, sd), flip in comparisons:
            if sd is None:
                sa, sb = self.grid_stim[a, p], self.grid_stim[b, p]
            else:
                sa, sb = self.sample_stim[a, p, sd], self.sample_stim[b, p, sd]
            if flip:
                self.pair(q, p, sb, sa, b, a)
            else:
                self.pair(q, p, sa, sb, a, b)

    def add_checks(self, q: Question, k: int, prompts: Sequence[str], rng: random.Random,
                   noise_rng: np.random.Generator) -> None:
        """``k`` attention checks: a real stimulus against an obvious foil (noise, or a grid of one image)."""
        for i in range(k):
            p = rng.choice(prompts)
            s = rng.choice(self.sets)
            rel = Path("checks") / f"{q.value}_{i}.png"
            if q is Question.DIVERSITY:
                real = self.grid_stim[s.system, p]
                one = sorted(s.by_prompt[p].values(), key=lambda x: x.seed)[0].path
                _save_grid([one] * GRID_N, self.out / rel, self.tile)
                foil = self.stimulus("repeat_grid", rel, None, p)
            else:
                sd = rng.choice(sorted(s.by_prompt[p]))
                real = self.sample_stim[s.system, p, sd]
                noise = noise_rng.integers(0, 256, size=(self.size[1], self.size[0], 3), dtype=np.uint8)
                Image.fromarray(noise).save(self.out / rel)
                foil = self.stimulus("noise", rel, None, p)
            if rng.random() < 0.5:
                self.pair(q, p, real, foil, None, None, expected="left")
            else:
                self.pair(q, p, foil, real, None, None, expected="right")

    def add_meta(self, meta: dict[str, object]) -> None:
        self.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                              [(k, json.dumps(v)) for k, v in meta.items()])


def rater_order(pairs: Sequence, questions: Sequence[str], seed: int, rater: str) -> list[int]:
    """The pair ids a rater sees, question by question (as listed at creation; photorealism first
    keeps captions unseen), shuffled within a question by (study seed, rater) so a reload or a
    return visit continues the same sequence. Attention checks are mixed in with the rest."""
    rng = random.Random(f"{seed}|{rater}")
    order = []
    for q in questions:
        ids = [p["id"] for p in pairs if p["question"] == q]
        rng.shuffle(ids)
        order.extend(ids)
    return order
