"""Human preference studies over sample directories: create, serve, import judges, report.

    python sample/study.py create --out studies/s1 base=samples/base ours=samples/ours
    python sample/study.py serve studies/s1 --port 8000        # prints the rater and owner URLs
    python sample/study.py judge studies/s1 --name clip_oracle verdicts.jsonl
    python sample/study.py results studies/s1 --json r.json --csv r.csv --votes votes.csv

A subcommand CLI (argparse, not Hydra): a study is a long-lived directory, not a run config.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unclip.studies import StudyError, StudyStore, VoteError, create_study
from unclip.studies.samples import parse_system_arg


def _create(a: argparse.Namespace) -> int:
    info = create_study(a.out, [parse_system_arg(s) for s in a.systems], questions=a.questions,
                        pairs_per_prompt=a.pairs_per_prompt, check_fraction=a.check_fraction, seed=a.seed,
                        name=a.name)
    for m in info.messages:
        print(f"note: {m}")
    for q, n in info.n_pairs.items():
        print(f"{q}: {n} comparisons + {info.n_checks[q]} attention checks")
    print(f"study: {info.dir}\nowner token: {info.token}\nserve it: python sample/study.py serve {info.dir}")
    return 0


def _serve(a: argparse.Namespace) -> int:
    import uvicorn

    from unclip.studies import create_app

    app = create_app(a.study, n_boot=a.n_boot)
    with StudyStore(a.study) as store:
        token = store.meta()["token"]
    host = "localhost" if a.host in ("0.0.0.0", "127.0.0.1") else a.host
    print(f"raters: http://{host}:{a.port}/\nowner:  http://{host}:{a.port}/results?token={token}", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


def _judge(a: argparse.Namespace) -> int:
    text = Path(a.verdicts).read_text()
    try:
        verdicts = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise StudyError(f"{a.verdicts}: not JSON or JSON lines: {e}") from e
    with StudyStore(a.study) as store:
        n = store.add_judge_verdicts(a.name, verdicts)
    print(f"stored {n} verdicts of judge {a.name!r}")
    return 0


def _results(a: argparse.Namespace) -> int:
    from unclip.studies.results import compute_results, results_csv, results_json, votes_csv

    with StudyStore(a.study) as store:
        res = compute_results(store, n_boot=a.n_boot)
        if a.votes:
            Path(a.votes).write_text(votes_csv(store))
    if a.json:
        Path(a.json).write_text(results_json(res))
    if a.csv:
        Path(a.csv).write_text(results_csv(res))
    print(f"{res['n_votes']} votes from {len(res['raters'])} raters; {res['tie_rule']}")
    for r in res["win_rates"]:
        print(f"{r['source']:>14} {r['question']:>12} {r['system_a']} vs {r['system_b']}: "
              f"{r['win_rate_a']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] n={r['n']} (ties {r['ties']})")
    att = res["attention"]
    print(f"attention checks passed: {att['passed']}/{att['total']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a study from two or more sample directories")
    c.add_argument("systems", nargs="+", help="sample directories, as name=path or path")
    c.add_argument("--out", required=True, help="new study directory")
    c.add_argument("--questions", default="photorealism,caption,diversity")
    c.add_argument("--pairs-per-prompt", type=int, default=1)
    c.add_argument("--check-fraction", type=float, default=0.1)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--name", default=None)
    s = sub.add_parser("serve", help="serve the rating app")
    s.add_argument("study")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--n-boot", type=int, default=1000)
    j = sub.add_parser("judge", help="import an automated judge's verdicts (JSON list or JSON lines)")
    j.add_argument("study")
    j.add_argument("verdicts")
    j.add_argument("--name", required=True)
    r = sub.add_parser("results", help="print results; write exports")
    r.add_argument("study")
    r.add_argument("--json")
    r.add_argument("--csv")
    r.add_argument("--votes")
    r.add_argument("--n-boot", type=int, default=1000)
    a = p.parse_args(argv)
    try:
        return {"create": _create, "serve": _serve, "judge": _judge, "results": _results}[a.cmd](a)
    except (StudyError, VoteError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
