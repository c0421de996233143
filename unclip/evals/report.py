"""One self-contained HTML eval report, appendable section by section.

The report is data first: ``<name>.json`` beside ``<name>.html`` holds the list of sections, each a
title plus blocks (text, table, image grid, line plot, bar plot); every `Report.add` rewrites the
JSON and re-renders the whole HTML from it. Images are stored and embedded as base64 PNG and plots
are inline SVG drawn here, so the HTML opens offline with nothing beside it.

    report = Report("runs/evals/report.html")
    report.add("Caption match — tiny", [table_block(["attribute", "accuracy"], rows)])
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from unclip.io import atomic_write_json, atomic_write_text

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


# ---------------------------------------------------------------------------------------------
# Blocks (plain JSON-able dicts)
# ---------------------------------------------------------------------------------------------


def png_base64(image: Image.Image, max_size: int | None = 256) -> str:
    """PNG bytes of `image` (downscaled so the longer side ≤ max_size) as base64 text."""
    image = image.convert("RGB")
    if max_size and max(image.size) > max_size:
        f = max(image.size) / max_size
        image = image.resize((round(image.width / f), round(image.height / f)), Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def table_block(columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> dict[str, Any]:
    """Rows of cells (numbers are shown with 3 decimals)."""
    return {"type": "table", "columns": list(columns), "rows": [list(r) for r in rows], "note": note}


def image_grid_block(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[Sequence[Image.Image]]]],
                     max_size: int = 128, caption: str = "") -> dict[str, Any]:
    """Sample grid: one row per prompt (label, [images of system 1, images of system 2, ...])."""
    out = []
    for label, cells in rows:
        if len(cells) != len(columns):
            raise ValueError(f"image grid row {label!r} has {len(cells)} cells for {len(columns)} columns")
        out.append({"label": label, "cells": [[png_base64(im, max_size) for im in cell] for cell in cells]})
    return {"type": "grid", "columns": list(columns), "rows": out, "caption": caption}


def lines_block(title: str, series: Mapping[str, Sequence[tuple[float, float]]], xlabel: str = "step",
                ylabel: str = "loss", log_y: bool = False) -> dict[str, Any]:
    return {"type": "lines", "title": title, "series": {k: [list(map(float, p)) for p in v] for k, v in series.items()},
            "xlabel": xlabel, "ylabel": ylabel, "log_y": log_y}


def bars_block(title: str, groups: Sequence[str], series: Mapping[str, Sequence[float]],
               intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
               ylim: tuple[float, float] | None = (0.0, 1.0), reference: float | None = None,
               ylabel: str = "") -> dict[str, Any]:
    """Grouped bars: one group per label, one bar per series, optional (lo, hi) interval bars and a
    dashed horizontal reference line (e.g. 0.5 for win rates)."""
    return {"type": "bars", "title": title, "groups": list(groups),
            "series": {k: [float(x) for x in v] for k, v in series.items()},
            "intervals": {k: [list(map(float, i)) for i in v] for k, v in (intervals or {}).items()},
            "ylim": list(ylim) if ylim else None, "reference": reference, "ylabel": ylabel}


def loss_curves_blocks(curves: Mapping[str, Sequence[tuple[float, float]]], log_y: bool = True) -> list[dict[str, Any]]:
    """One loss plot per stage from {stage: [(step, loss), ...]}."""
    return [lines_block(f"{stage} loss", {stage: pts}, log_y=log_y and all(y > 0 for _, y in pts))
            for stage, pts in curves.items()]


# ---------------------------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------------------------


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


class _Frame:
    """Plot area mapping data to SVG pixels."""

    W, H, L, R, T, B = 520, 300, 60, 130, 30, 45

    def __init__(self, xlo, xhi, ylo, yhi):
        self.xlo, self.xhi = xlo, (xhi if xhi > xlo else xlo + 1)
        self.ylo, self.yhi = ylo, (yhi if yhi > ylo else ylo + 1)

    def x(self, v: float) -> float:
        return self.L + (v - self.xlo) / (self.xhi - self.xlo) * (self.W - self.L - self.R)

    def y(self, v: float) -> float:
        return self.H - self.B - (v - self.ylo) / (self.yhi - self.ylo) * (self.H - self.T - self.B)

    def axes(self, title: str, xlabel: str, ylabel: str, yticks, ytext=_fmt) -> list[str]:
        x0, x1, y0, y1 = self.L, self.W - self.R, self.H - self.B, self.T
        out = [f'<text x="{self.W / 2 - 40}" y="18" font-size="14" text-anchor="middle">{_esc(title)}</text>',
               f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>',
               f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>',
               f'<text x="{(x0 + x1) / 2}" y="{self.H - 8}" font-size="12" text-anchor="middle">{_esc(xlabel)}</text>',
               f'<text x="14" y="{(y0 + y1) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {(y0 + y1) / 2})">{_esc(ylabel)}</text>']
        for t in yticks:
            yy = self.y(t)
            out.append(f'<line x1="{x0 - 4}" y1="{yy:.1f}" x2="{x1}" y2="{yy:.1f}" stroke="#ddd"/>'
                       f'<text x="{x0 - 6}" y="{yy + 4:.1f}" font-size="10" text-anchor="end">{ytext(t)}</text>')
        return out

    def legend(self, names: Sequence[str]) -> list[str]:
        x = self.W - self.R + 10
        return [f'<rect x="{x}" y="{self.T + 16 * i}" width="10" height="10" fill="{_PALETTE[i % len(_PALETTE)]}"/>'
                f'<text x="{x + 14}" y="{self.T + 16 * i + 9}" font-size="11">{_esc(n)}</text>'
                for i, n in enumerate(names)]

    def svg(self, body: list[str]) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.W}" height="{self.H}" '
                f'viewBox="0 0 {self.W} {self.H}" font-family="sans-serif">' + "".join(body) + "</svg>")


def svg_lines(block: Mapping[str, Any]) -> str:
    """Line plot of {name: [(x, y), ...]}; log10 y axis when `log_y`."""
    log_y = block.get("log_y", False)
    tf = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    series = {k: [(x, tf(y)) for x, y in v if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]
              for k, v in block["series"].items()}
    pts = [p for v in series.values() for p in v] or [(0.0, 0.0)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    pad = 0.05 * (max(ys) - min(ys) or 1.0)
    f = _Frame(min(xs), max(xs), min(ys) - pad, max(ys) + pad)
    ytext = (lambda t: _fmt(10 ** t)) if log_y else _fmt
    body = f.axes(block["title"], block.get("xlabel", ""), block.get("ylabel", "") + (" (log)" if log_y else ""),
                  _nice_ticks(f.ylo, f.yhi), ytext)
    for t in _nice_ticks(f.xlo, f.xhi):
        body.append(f'<text x="{f.x(t):.1f}" y="{f.H - f.B + 14}" font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    for i, v in enumerate(series.values()):
        path = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in v)
        body.append(f'<polyline fill="none" stroke="{_PALETTE[i % len(_PALETTE)]}" stroke-width="1.5" '
                    f'points="{path}"/>')
    return f.svg(body + f.legend(list(series)))


def svg_bars(block: Mapping[str, Any]) -> str:
    """Grouped bar chart with optional interval whiskers and a dashed reference line."""
    groups, series = block["groups"], block["series"]
    intervals = block.get("intervals") or {}
    vals = [v for s in series.values() for v in s if math.isfinite(v)] or [0.0]
    vals += [b for iv in intervals.values() for pair in iv for b in pair if math.isfinite(b)]
    ylo, yhi = block["ylim"] if block.get("ylim") else (min(0.0, min(vals)), max(vals) * 1.1 or 1.0)
    f = _Frame(0, max(1, len(groups)), ylo, yhi)
    body = f.axes(block["title"], "", block.get("ylabel", ""), _nice_ticks(ylo, yhi))
    gw = (f.x(1) - f.x(0))
    bw = 0.8 * gw / max(1, len(series))
    for g, label in enumerate(groups):
        body.append(f'<text x="{f.x(g + 0.5):.1f}" y="{f.H - f.B + 14}" font-size="10" '
                    f'text-anchor="middle">{_esc(label)}</text>')
        for i, (name, values) in enumerate(series.items()):
            v = values[g] if g < len(values) and math.isfinite(values[g]) else ylo
            x = f.x(g) + 0.1 * gw + i * bw
            top, base = f.y(min(max(v, ylo), yhi)), f.y(max(ylo, 0.0) if ylo < 0 < yhi else ylo)
            body.append(f'<rect x="{x:.1f}" y="{min(top, base):.1f}" width="{bw * 0.9:.1f}" '
                        f'height="{abs(base - top):.1f}" fill="{_PALETTE[i % len(_PALETTE)]}">'
                        f'<title>{_esc(name)} {_esc(label)}: {v:.3f}</title></rect>')
            if name in intervals and g < len(intervals[name]):
                lo, hi = intervals[name][g]
                cx = x + bw * 0.45
                body.append(f'<path d="M{cx:.1f} {f.y(lo):.1f} V{f.y(hi):.1f} M{cx - 4:.1f} {f.y(lo):.1f} '
                            f'H{cx + 4:.1f} M{cx - 4:.1f} {f.y(hi):.1f} H{cx + 4:.1f}" stroke="#000" fill="none"/>')
    if block.get("reference") is not None:
        yy = f.y(block["reference"])
        body.append(f'<line x1="{f.L}" y1="{yy:.1f}" x2="{f.W - f.R}" y2="{yy:.1f}" stroke="#555" '
                    'stroke-dasharray="4 3"/>')
    return f.svg(body + f.legend(list(series)))


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}td.num{text-align:right;font-family:monospace}.note{color:#666;font-size:12px}
.grid td{vertical-align:top}.grid img{margin:1px;image-rendering:pixelated}section{margin-bottom:2.5em}
nav li{font-size:13px}"""


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f'<td class="num">{"—" if not math.isfinite(v) else f"{v:.3f}"}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{_esc(v)}</td>"


def render_block(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return "".join(f"<p>{_esc(p)}</p>" for p in str(block["text"]).split("\n\n"))
    if kind == "table":
        head = "".join(f"<th>{_esc(c)}</th>" for c in block["columns"])
        rows = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in block["rows"])
        note = f'<p class="note">{_esc(block["note"])}</p>' if block.get("note") else ""
        return f"<table><tr>{head}</tr>{rows}</table>{note}"
    if kind == "grid":
        head = "<th>prompt</th>" + "".join(f"<th>{_esc(c)}</th>" for c in block["columns"])
        rows = "".join(
            f"<tr><td>{_esc(r['label'])}</td>" + "".join(
                "<td>" + "".join(f'<img alt="{_esc(r["label"])}" src="data:image/png;base64,{b}"/>' for b in cell)
                + "</td>" for cell in r["cells"]) + "</tr>" for r in block["rows"])
        cap = f'<p class="note">{_esc(block["caption"])}</p>' if block.get("caption") else ""
        return f'<table class="grid"><tr>{head}</tr>{rows}</table>{cap}'
    if kind == "lines":
        return f"<figure>{svg_lines(block)}</figure>"
    if kind == "bars":
        return f"<figure>{svg_bars(block)}</figure>"
    raise ValueError(f"unknown report block type {kind!r}; expected text, table, grid, lines or bars")


def render_html(title: str, sections: Sequence[Mapping[str, Any]]) -> str:
    toc = "".join(f'<li><a href="#{_esc(s["id"])}">{_esc(s["title"])}</a></li>' for s in sections)
    body = "".join(f'<section id="{_esc(s["id"])}"><h2>{_esc(s["title"])}</h2>'
                   + "".join(render_block(b) for b in s["blocks"]) + "</section>" for s in sections)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><nav><ul>{toc}</ul></nav>{body}</body></html>\n")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


class Report:
    """An HTML report at `path` with its sections kept in ``path.with_suffix('.json')``."""

    def __init__(self, path: str | Path, title: str = "unclip evals"):
        self.path = Path(path)
        self.json_path = self.path.with_suffix(".json")
        self.title = title
        self.sections: list[dict[str, Any]] = []
        if self.json_path.exists():
            try:
                data = json.loads(self.json_path.read_text())
                self.title, self.sections = data.get("title", title), list(data["sections"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"report sections file {self.json_path} is not a report JSON "
                                 f"({{'title', 'sections': [...]}}): {e}") from e

    def add(self, title: str, blocks: Sequence[Mapping[str, Any]], section_id: str | None = None) -> None:
        """Append a section (a section with the same id is replaced in place), then save and re-render."""
        for b in blocks:
            render_block(b)  # fail before writing anything
        section = {"id": section_id or _slug(title), "title": title, "blocks": [dict(b) for b in blocks]}
        for i, s in enumerate(self.sections):
            if s["id"] == section["id"]:
                self.sections[i] = section
                break
        else:
            self.sections.append(section)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.json_path, {"title": self.title, "sections": self.sections})
        atomic_write_text(self.path, render_html(self.title, self.sections))
