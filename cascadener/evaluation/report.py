"""A suite's results for people and tools: the text table, the JSON report and one HTML page.

The table has the shape of the paper's Tables 2/3, one row per test set (and level): span-level
P/R/F1 (start, end, type), extraction-only F1 (spans, no type), the authors' lenient F1 (string,
type; their evaluate.py with its bug fixed, see geic/metrics.py) and sentences/s. The HTML page is
one self-contained file (inline CSS, no scripts, nothing fetched): the table, then per set the F1
of each type as bars and the confusion of types on the mentions whose span was found.
"""
from __future__ import annotations

import html
from typing import Any

from cascadener.evaluation.suite import Row, SetResult, SuiteResult
from cascadener.geic.metrics import PRF
from cascadener.ner.render import label_color

MATRIX_TYPES = 24      # the confusion matrix shows the most frequent gold types, the rest as one line


# ---- text -------------------------------------------------------------------------------------------

def table(result: SuiteResult) -> str:
    name_width = max([len("dataset"), len("average"), *(len(r.name) for r in result.rows)])
    head = (f"{'dataset':<{name_width}} {'sents':>6} {'P':>6} {'R':>6} {'F1':>6} {'extr F1':>7} "
            f"{'lenient':>7} {'sent/s':>7}")
    lines = [head, "-" * len(head)]
    for r in result.rows:
        speed = r.sentences_per_second
        lines.append(f"{r.name:<{name_width}} {r.report.sentences:>6} {r.span.precision:>6.4f} "
                     f"{r.span.recall:>6.4f} {r.span.f1:>6.4f} {r.report.extraction.f1:>7.4f} "
                     f"{r.report.lenient.f1:>7.4f} {speed if speed is not None else float('nan'):>7.2f}")
    avg = result.average()
    if avg:
        lines.append("-" * len(head))
        lines.append(f"{'average':<{name_width}} {avg['sentences']:>6} {avg['precision']:>6.4f} "
                     f"{avg['recall']:>6.4f} {avg['f1']:>6.4f} {avg['extraction_f1']:>7.4f} "
                     f"{avg['lenient_f1']:>7.4f} {avg['sentences_per_second'] or float('nan'):>7.2f}")
    return "\n".join(lines)


# ---- JSON -------------------------------------------------------------------------------------------

def _prf(m: PRF) -> dict[str, Any]:
    return {"precision": m.precision, "recall": m.recall, "f1": m.f1, "tp": m.tp, "n_pred": m.n_pred,
            "n_gold": m.n_gold}


def row_dict(row: Row) -> dict[str, Any]:
    """The row's headline scores, then its full report (micro, per type, per level, ...)."""
    speed = row.sentences_per_second
    return {"name": row.name, "level": row.level, "span": _prf(row.span),
            "extraction_f1": row.report.extraction.f1, "lenient_f1": row.report.lenient.f1,
            "seconds": round(row.seconds, 3), "sentences_per_second": round(speed, 4) if speed else None,
            **row.report.to_dict(), "confusion": row.confusion}


def set_dict(s: SetResult) -> dict[str, Any]:
    spec = s.spec
    return {"name": spec.title, "path": spec.path, "lang": spec.lang, "labels": s.labels,
            "categories": spec.categories, "levels": list(spec.levels) or None,
            "sentences": s.run.report.sentences, "sample": spec.sample, "seed": spec.seed,
            "slice": list(spec.sentences) if spec.sentences else None, "demos": spec.demos,
            "gold_entities_not_placed": s.dropped, "seconds": round(s.run.seconds, 3),
            "pipeline": vars(s.run.stats) | {"seconds": round(s.run.stats.seconds, 3)},
            "rows": [row_dict(r) for r in s.rows]}


def to_dict(result: SuiteResult, **meta: Any) -> dict[str, Any]:
    """JSON-ready: suite name, `meta` (model, options, command), the sets with their rows, the average."""
    return {"suite": result.name, **meta, "sets": [set_dict(s) for s in result.sets], "average": result.average()}


# ---- HTML -------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { padding: .2em .6em; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
tr.average td { font-weight: bold; border-top: 2px solid #999; }
.bars td.bar, .bars th.bar { width: 22em; text-align: left; }
.bar span { display: inline-block; height: .9em; vertical-align: middle; border: 1px solid #888; }
.confusion td, .confusion th { border: 1px solid #ddd; min-width: 2.2em; text-align: center; }
.confusion th.gold { text-align: left; }
.confusion th.pred { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; max-height: 12em; }
.confusion td.diag { outline: 2px solid #2a2; }
.note { color: #666; }
"""


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _summary(result: SuiteResult) -> str:
    head = ("<tr><th>dataset</th><th>sentences</th><th>P</th><th>R</th><th>F1</th>"
            "<th>extraction F1</th><th>lenient F1</th><th>sentences/s</th></tr>")
    rows = [f"<tr><td>{html.escape(r.name)}</td><td>{r.report.sentences}</td><td>{_num(r.span.precision)}</td>"
            f"<td>{_num(r.span.recall)}</td><td>{_num(r.span.f1)}</td><td>{_num(r.report.extraction.f1)}</td>"
            f"<td>{_num(r.report.lenient.f1)}</td><td>{_num(r.sentences_per_second, 2)}</td></tr>"
            for r in result.rows]
    avg = result.average()
    if avg:
        rows.append(f"<tr class=\"average\"><td>average</td><td>{avg['sentences']}</td><td>{_num(avg['precision'])}</td>"
                    f"<td>{_num(avg['recall'])}</td><td>{_num(avg['f1'])}</td><td>{_num(avg['extraction_f1'])}</td>"
                    f"<td>{_num(avg['lenient_f1'])}</td><td>{_num(avg['sentences_per_second'], 2)}</td></tr>")
    return f"<table class=\"summary\">{head}{''.join(rows)}</table>"


def _bars(row: Row) -> str:
    """Per-type F1 as a bar, P/R/F1 and counts as numbers; types by gold frequency."""
    types = sorted(row.report.per_type.items(), key=lambda kv: (-kv[1].n_gold, kv[0]))
    lines = []
    for label, m in types:
        width = round(20 * m.f1, 2)
        lines.append(f"<tr><td>{html.escape(label or '(no label)')}</td>"
                     f"<td class=\"bar\"><span style=\"width:{width}em;background:{label_color(label)}\"></span> "
                     f"{_num(m.f1)}</td><td>{_num(m.precision)}</td><td>{_num(m.recall)}</td>"
                     f"<td>{m.tp}</td><td>{m.n_pred}</td><td>{m.n_gold}</td></tr>")
    head = "<tr><th>type</th><th class=\"bar\">F1</th><th>P</th><th>R</th><th>tp</th><th>pred</th><th>gold</th></tr>"
    return f"<table class=\"bars\">{head}{''.join(lines)}</table>"


def _matrix(row: Row) -> str:
    """Gold type (rows) x predicted type (columns) over mentions whose span both sides found; shaded by
    the share of the gold row, the diagonal outlined. The most frequent gold types get rows (the rest
    one row) and columns; other answers get columns up to half as many again, then one column."""
    counts = row.confusion
    if not counts:
        return "<p class=\"note\">no mention was found at its gold span</p>"
    gold_total = {g: sum(r.values()) for g, r in counts.items()}
    shown = sorted(gold_total, key=lambda g: (-gold_total[g], g))[:MATRIX_TYPES]
    rest = [g for g in gold_total if g not in shown]
    pred_total: dict[str, int] = {}
    for r in counts.values():
        for p, n in r.items():
            pred_total[p] = pred_total.get(p, 0) + n
    # the gold types shown, in the same order, so the diagonal is the diagonal; then the other answers
    columns = shown + sorted(set(pred_total) - set(shown), key=lambda p: (-pred_total[p], p))[:MATRIX_TYPES // 2]
    other_col = any(p not in columns for p in pred_total)

    def cells(gold: list[str], label: str) -> str:
        merged: dict[str, int] = {}
        for g in gold:
            for p, n in counts[g].items():
                key = p if p in columns else "(other)"
                merged[key] = merged.get(key, 0) + n
        total = sum(merged.values())
        out = [f"<th class=\"gold\">{html.escape(label or '(no label)')} <span class=\"note\">{total}</span></th>"]
        for p in columns + (["(other)"] if other_col else []):
            n = merged.get(p, 0)
            shade = round(255 - 180 * n / total) if total else 255
            diag = " class=\"diag\"" if len(gold) == 1 and p == gold[0] else ""
            out.append(f"<td{diag} style=\"background:rgb({shade},{shade},255)\">{n or ''}</td>")
        return "<tr>" + "".join(out) + "</tr>"

    head = "<tr><th>gold \\ predicted</th>" + "".join(
        f"<th class=\"pred\">{html.escape(p or '(no label)')}</th>" for p in columns + (["(other)"] if other_col else [])) + "</tr>"
    body = [cells([g], g) for g in shown]
    if rest:
        body.append(cells(rest, f"({len(rest)} other types)"))
    return f"<table class=\"confusion\">{head}{''.join(body)}</table>"


def page(result: SuiteResult, subtitle: str = "") -> str:
    """The whole report as one HTML document."""
    parts = [f"<h1>{html.escape(result.name)}</h1>"]
    if subtitle:
        parts.append(f"<p class=\"note\">{html.escape(subtitle)}</p>")
    parts.append(_summary(result))
    parts.append("<p class=\"note\">P/R/F1: exact span and type. Extraction F1: spans alone. Lenient F1: "
                 "(lowercased string, type) sets per sentence, the authors' metric with its bug fixed. "
                 "Levels compare type paths cut to the level.</p>")
    for s in result.sets:
        for row in s.rows:
            parts.append(f"<h2>{html.escape(row.name)}</h2>")
            parts.append(f"<p class=\"note\">{html.escape(s.spec.path)}: {row.report.sentences} sentences; "
                         f"labels offered: {html.escape(', '.join(s.labels))}</p>")
            parts.append("<h3>F1 per type</h3>" + _bars(row))
            found = row.report.extraction
            parts.append(f"<h3>Types on found spans (gold rows, predicted columns)</h3><p class=\"note\">"
                         f"{found.tp} of {found.n_gold} gold mentions were found at their span</p>" + _matrix(row))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(result.name)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
