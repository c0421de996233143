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
    sets: list[SampleSet] = [load_sample_dir(s, d) for s, d in sample_dirs]
    prompts = check_matching(sets)
    rng = random.Random(seed)
    messages = [f"system {s.system!r}: skipped {len(s.skipped)} PNG(s) without a sidecar (e.g. contact sheets)"
                for s in sets if s.skipped]

    diversity_prompts = []
    if Question.DIVERSITY in qs:
        for p in prompts:
            short = {s.system: len(s.by_prompt[p]) for s in sets if len(s.by_prompt[p]) < GRID_N}
            if short:
                messages.append(f"diversity: skipped prompt {p!r}: needs ≥{GRID_N} images per system, got {short}")
            else:
                diversity_prompts.append(p)
        if not diversity_prompts:
            messages.append(f"diversity: question dropped, no prompt has ≥{GRID_N} images in every system")
            qs.remove(Question.DIVERSITY)
            if not qs:
                raise StudyError(f"diversity needs ≥{GRID_N} images per prompt per system and no prompt has them; "
                                 f"sample more seeds per prompt or choose other questions")

    out = Path(out_dir)
    conn = init_db(out)
    (out / "grids").mkdir(exist_ok=True)
    (out / "checks").mkdir(exist_ok=True)
    token = token or secrets.token_urlsafe(16)
    with Image.open(next(iter(next(iter(sets[0].by_prompt.values())).values())).path) as im:
        size = im.size
    tile = min(size[0], 160)

    conn.execute("BEGIN IMMEDIATE")
    try:
        sys_id = {}
        for s in sets:
            sys_id[s.system] = conn.execute("INSERT INTO systems (name, root) VALUES (?, ?)", (s.system, str(s.root))).lastrowid
        prompt_id = {p: conn.execute("INSERT INTO prompts (text) VALUES (?)", (p,)).lastrowid for p in prompts}

        def stimulus(kind: str, path: Path, system: str | None = None, prompt: str | None = None,
                     seed_: int | None = None) -> int:
            return conn.execute(
                "INSERT INTO stimuli (kind, system_id, prompt_id, seed, path) VALUES (?, ?, ?, ?, ?)",
                (kind, sys_id.get(system), prompt_id.get(prompt), seed_, str(path)),
            ).lastrowid

        sample_stim: dict[tuple[str, str, int], int] = {}
        for s in sets:
            for p, by_seed in s.by_prompt.items():
                for sd, smp in sorted(by_seed.items()):
                    sample_stim[s.system, p, sd] = stimulus("sample", smp.path, s.system, p, sd)

        grid_stim: dict[tuple[str, str], int] = {}
        for p in diversity_prompts:
            common = sorted(set.intersection(*(set(s.by_prompt[p]) for s in sets)))
            for s in sets:
                seeds = common[:GRID_N] if len(common) >= GRID_N else sorted(s.by_prompt[p])[:GRID_N]
                rel = Path("grids") / f"{sys_id[s.system]}_{prompt_id[p]}.png"
                _save_grid([s.by_prompt[p][sd].path for sd in seeds], out / rel, tile)
                grid_stim[s.system, p] = stimulus("grid", rel, s.system, p)

        def add_pair(q: Question, p: str, left: int, right: int, ls: str | None, rs: str | None,
                     expected: str | None = None) -> None:
            conn.execute(
                "INSERT INTO pairs (question, prompt_id, left_stimulus, right_stimulus, left_system, right_system,"
                " is_check, expected) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (q.value, prompt_id[p], left, right, sys_id.get(ls), sys_id.get(rs), int(expected is not None), expected),
            )

        n_pairs, n_checks = {}, {}
        noise_rng = np.random.default_rng(seed)
        for q in qs:
            q_prompts = diversity_prompts if q is Question.DIVERSITY else prompts
            per_cell = 1 if q is Question.DIVERSITY else pairs_per_prompt
            cells = []  # (prompt, sys_a, sys_b, seed or None)
            for a, b in itertools.combinations(sets, 2):
                for p in q_prompts:
                    if q is Question.DIVERSITY:
                        cells.append((p, a.system, b.system, None))
                    else:
                        common = sorted(set.intersection(*(set(s.by_prompt[p]) for s in sets)))
                        cells.extend((p, a.system, b.system, sd) for sd in _draw_seeds(common, per_cell, rng))
            by_syspair: dict[tuple[str, str], list] = {}
            for c in cells:
                by_syspair.setdefault((c[1], c[2]), []).append(c)
            ordered = []
            for group in by_syspair.values():
                ordered.extend(zip(group, _balanced_flips(len(group), rng)))
            rng.shuffle(ordered)  # ids carry no order information
            for (p, a, b, sd), flip in ordered:
                sa, sb = (grid_stim[a, p], grid_stim[b, p]) if sd is None else (sample_stim[a, p, sd], sample_stim[b, p, sd])
                if flip:
                    add_pair(q, p, sb, sa, b, a)
                else:
                    add_pair(q, p, sa, sb, a, b)
            n_pairs[q.value] = len(ordered)

            k = math.ceil(check_fraction * len(ordered)) if check_fraction > 0 else 0
            for i in range(k):  # a real stimulus against an obvious foil
                p = rng.choice(q_prompts)
                s = rng.choice(sets)
                rel = Path("checks") / f"{q.value}_{i}.png"
                if q is Question.DIVERSITY:
                    real = grid_stim[s.system, p]
                    one = sorted(s.by_prompt[p].values(), key=lambda x: x.seed)[0].path
                    _save_grid([one] * GRID_N, out / rel, tile)
                    foil = stimulus("repeat_grid", rel, None, p)
                else:
                    sd = rng.choice(sorted(s.by_prompt[p]))
                    real = sample_stim[s.system, p, sd]
                    noise = noise_rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                    Image.fromarray(noise).save(out / rel)
                    foil = stimulus("noise", rel, None, p)
                if rng.random() < 0.5:
                    add_pair(q, p, real, foil, None, None, expected="left")
                else:
                    add_pair(q, p, foil, real, None, None, expected="right")
            n_checks[q.value] = k

        meta = {
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
        }
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        for suffix in ("", "-wal", "-shm"):  # leave no half-made study behind
            (out / f"study.db{suffix}").unlink(missing_ok=True)
        raise
    conn.close()
    return StudyInfo(out, token, n_pairs, n_checks, messages)


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
