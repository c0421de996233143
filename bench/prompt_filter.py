"""Prompt-filter latency on adversarial prompts (the ReDoS of issue 17): seconds per check of the
default moderation lists for prompts built to make backtracking matchers blow up, at 250 / 1,000 /
4,000 characters, with a generous bound (50 ms per 1,000 characters) that the run must meet.
Prints a table and writes bench/results/prompt_filter.json.

    .venv/bin/python bench/prompt_filter.py
"""
from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path

from unclip.moderation import Moderator

BOUND_S_PER_1000 = 0.05
ADVERSARIAL = {
    "k + |*N": lambda n: "k" + "|" * (n - 1),
    "k␠*N": lambda n: "k " * (n // 2),
    "k.i.*N": lambda n: "k.i." * (n // 4),
    "p0*N": lambda n: "p0" * (n // 2),
    "leet soup": lambda n: ("5u1c!d3|k1ll " * n)[:n],
    "plain prose": lambda n: ("a small red star above a large blue circle " * n)[:n],
    "one long word": lambda n: "a" * n,
}


def timed(check, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        check(text)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    moderator = Moderator.default()
    rows, worst = [], 0.0
    for name, make in ADVERSARIAL.items():
        for n in (250, 1000, 4000):
            s = timed(moderator.check_prompt, make(n))
            per_1000 = s * 1000 / n
            worst = max(worst, per_1000)
            rows.append({"prompt": name, "chars": n, "seconds": s, "seconds_per_1000_chars": per_1000})
            print(f"{name:14s} {n:5d} chars  {1000 * s:8.2f} ms")
    ok = worst <= BOUND_S_PER_1000
    print(f"worst {1000 * worst:.2f} ms per 1,000 characters; bound {1000 * BOUND_S_PER_1000:.0f} ms: "
          f"{'met' if ok else 'NOT met'}")
    out = Path(__file__).resolve().parent / "results" / "prompt_filter.json"
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "date":
                               datetime.date.today().isoformat(), "bound_s_per_1000_chars": BOUND_S_PER_1000,
                               "worst_s_per_1000_chars": worst, "met": ok, "rows": rows}, indent=1))
    print(f"wrote {out}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
