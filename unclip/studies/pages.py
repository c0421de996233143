"""Server-rendered HTML for the rating app: plain strings, escaped, a few lines of JS for keys."""
from __future__ import annotations

import html
import math
from typing import Any
from urllib.parse import quote

STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f4f2; color: #222; margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.4em; margin: 0 0 12px; } h2 { font-size: 1.15em; margin-top: 28px; }
.question { font-size: 1.3em; font-weight: 600; text-align: center; margin: 8px 0; }
.caption { font-size: 1.2em; text-align: center; background: #fff; border: 1px solid #ccc; padding: 10px;
           border-radius: 6px; margin: 8px auto 16px; max-width: 760px; }
.pair { display: flex; gap: 24px; justify-content: center; }
.choice { border: 3px solid transparent; background: none; padding: 0; cursor: pointer; border-radius: 6px; }
.choice:hover, .choice:focus { border-color: #2a6fdb; }
.choice img { width: 400px; height: 400px; object-fit: contain; display: block; background: #ddd; }
.buttons { display: flex; justify-content: center; gap: 16px; margin: 18px 0; }
.buttons button { font-size: 1.05em; padding: 10px 22px; border-radius: 6px; border: 1px solid #888;
                  background: #fff; cursor: pointer; }
.buttons button:hover { background: #e8f0fd; }
.progress { display: flex; align-items: center; gap: 12px; color: #555; }
.bar { flex: 1; height: 8px; background: #ddd; border-radius: 4px; overflow: hidden; }
.bar div { height: 100%; background: #2a6fdb; }
.hint { color: #666; text-align: center; font-size: 0.9em; }
table { border-collapse: collapse; margin: 8px 0; background: #fff; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
.note { color: #555; font-size: 0.9em; } .error { color: #a00; }
"""

KEYS_JS = """
(function () {
  const t0 = performance.now();
  const form = document.getElementById('vote');
  let sent = false;
  function send(answer) {
    if (sent) return;
    sent = true;
    form.querySelector('input[name=answer]').value = answer;
    form.querySelector('input[name=time_ms]').value = Math.round(performance.now() - t0);
    form.submit();
  }
  document.querySelectorAll('[data-answer]').forEach(function (el) {
    el.addEventListener('click', function (ev) { ev.preventDefault(); send(el.dataset.answer); });
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const k = ev.key;
    if (k === 'ArrowLeft' || k === '1') { ev.preventDefault(); send('left'); }
    else if (k === 'ArrowRight' || k === '2') { ev.preventDefault(); send('right'); }
    else if (k === 'ArrowDown' || k === 'n' || k === 'N' || k === '0') { ev.preventDefault(); send('unsure'); }
  });
})();
"""

QUESTION_LABEL = {"photorealism": "photorealism", "caption": "caption match", "diversity": "diversity"}


def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><main>{body}</main>{js}</body></html>")


def start_page(study: str, rater: str = "", error: str = "") -> str:
    err = f"<p class=error>{e(error)}</p>" if error else ""
    return page(study, f"""
<h1>Image comparison study: {e(study)}</h1>
<p>You will see two images (or two sets of images) at a time and a question. Pick the one that answers
the question better, or <em>not sure</em> if you cannot tell. Use the arrow keys
(<b>←</b> left, <b>→</b> right, <b>↓</b> not sure) or click.</p>
<p>You can stop at any time and come back later with the same name: you will continue where you left off.</p>
{err}
<form method=get action="rate">
  <label>Your name: <input name=rater id=rater value="{e(rater)}" required maxlength=64 autofocus></label>
  <button type=submit>Start</button>
</form>""")


def rate_page(study: str, rater: str, pair: Any, question_text: str, caption: str | None,
              done: int, total: int, served_at: float) -> str:
    pct = 100.0 * done / max(total, 1)
    cap = f'<div class=caption id=caption>“{e(caption)}”</div>' if caption is not None else ""
    label = QUESTION_LABEL.get(pair["question"], pair["question"])
    body = f"""
<div class=progress><span id=progress>{done + 1} of {total}</span>
  <div class=bar><div style="width:{pct:.1f}%"></div></div><span>{e(label)} · rater {e(rater)}</span></div>
<div class=question id=question>{e(question_text)}</div>
{cap}
<form id=vote method=post action="vote">
  <input type=hidden name=rater value="{e(rater)}">
  <input type=hidden name=pair_id value="{pair['id']}">
  <input type=hidden name=served_at value="{served_at:.3f}">
  <input type=hidden name=time_ms value="">
  <input type=hidden name=answer value="">
  <div class=pair>
    <button type=submit name=answer value=left class=choice id=left data-answer=left title="left (←)">
      <img src="img/{pair['left_stimulus']}" alt="left image"></button>
    <button type=submit name=answer value=right class=choice id=right data-answer=right title="right (→)">
      <img src="img/{pair['right_stimulus']}" alt="right image"></button>
  </div>
  <div class=buttons>
    <button type=submit name=answer value=left id=btn-left data-answer=left>← Left</button>
    <button type=submit name=answer value=unsure id=btn-unsure data-answer=unsure>Not sure (↓)</button>
    <button type=submit name=answer value=right id=btn-right data-answer=right>Right →</button>
  </div>
</form>
<p class=hint>Keys: ← or 1 = left, → or 2 = right, ↓ or n = not sure.
  <a href="./?rater={quote(rater)}">Stop for now</a> — come back with the same name to continue.</p>"""
    return page(f"{study} — {done + 1}/{total}", body, KEYS_JS)


def done_page(study: str, rater: str, total: int) -> str:
    return page(study, f"""<h1 id=done>All done — thank you, {e(rater)}!</h1>
<p>You rated all {total} comparisons of <b>{e(study)}</b>. You can close this page.</p>""")


def message_page(title: str, message: str, link: str | None = None) -> str:
    a = f'<p><a href="{e(link)}">Continue</a></p>' if link else ""
    return page(title, f"<h1>{e(title)}</h1><p class=error>{e(message)}</p>{a}")


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]], table_id: str) -> str:
    if not rows:
        return "<p class=note>none yet</p>"
    head = "".join(f"<th class={'l' if i < 1 else ''}>{e(label)}</th>" for i, (_, label) in enumerate(cols))
    body = "".join(
        "<tr>" + "".join(f"<td class={'l' if isinstance(r.get(k), str) and not r[k].startswith('[') else ''}>"
                        f"{e(_fmt(r.get(k)))}</td>" for k, _ in cols)
        + "</tr>" for r in rows)
    return f"<table id={table_id}><tr>{head}</tr>{body}</table>"


def results_page(res: dict[str, Any], token: str) -> str:
    t = quote(token)
    win = [dict(r, pair=f"{r['system_a']} vs {r['system_b']}",
                ci=f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]") for r in res["win_rates"]]
    rank_html = ""
    for r in res["rankings"]:
        rows = [dict(s, ci=f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]") for s in r["systems"]]
        rank_html += (f"<h3>{e(r['source'])} · {e(QUESTION_LABEL.get(r['question'], r['question']))}</h3>"
                      + _table(rows, [("system", "system"), ("rank", "rank"), ("score", "BT score (log)"),
                                      ("ci", "95% bootstrap CI")], f"rank-{e(r['source'])}-{e(r['question'])}"))
    att = res["attention"]
    msgs = "".join(f"<li>{e(m)}</li>" for m in res["messages"])
    body = f"""
<h1>Results: {e(res['study'])}</h1>
<p class=note>Systems: {e(', '.join(res['systems']))}. Human votes: <b id=n-votes>{res['n_votes']}</b>
(comparisons {res['n_comparison_votes']}, attention checks {res['n_check_votes']}) from
<b id=n-raters>{len(res['raters'])}</b> rater(s).
Exports: <a href="export/results.json?token={t}">results.json</a> ·
<a href="export/results.csv?token={t}">results.csv</a> · <a href="export/votes.csv?token={t}">votes.csv</a></p>
<h2>Win rates</h2>
<p class=note>{e(res['tie_rule'])} Intervals: {e(res['interval_rule'])}</p>
{_table(win, [("source", "source"), ("question", "question"), ("pair", "A vs B"), ("n", "n"),
              ("wins_a", "A wins"), ("wins_b", "B wins"), ("ties", "not sure"), ("win_rate_a", "A win rate"),
              ("ci", "95% Wilson CI")], "win-rates")}
<h2>Bradley–Terry ranking</h2>
<p class=note>{e(res['ranking_rule'])}</p>
{rank_html or "<p class=note>only for studies with more than two systems</p>"}
<h2>Attention checks</h2>
<p id=attention>passed {att['passed']} of {att['total']} ({_fmt(att['pass_rate'])})</p>
<h2>Raters</h2>
{_table(res['raters'], [("rater", "rater"), ("votes", "votes"), ("comparisons", "comparisons"),
                        ("unsure", "not sure"), ("checks", "checks"), ("checks_passed", "checks passed"),
                        ("median_time_ms", "median time (ms)")], "raters")}
<h2>Inter-rater agreement</h2>
<p class=note>{e(res['agreement_rule'])}</p>
{_table(res['agreement'], [("question", "question"), ("items", "pairs rated ≥2×"), ("ratings", "ratings"),
                           ("fleiss_kappa", "Fleiss' κ"), ("krippendorff_alpha", "Krippendorff's α")], "agreement")}
<h2>Notes</h2><ul>{msgs or "<li>none</li>"}</ul>"""
    return page(f"Results: {res['study']}", body)
