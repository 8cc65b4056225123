"""Score saved predictions against gold files, no model involved (the logic behind ``eval.py``).

Both files may be any format :mod:`cascadener.data` reads (column files, GEIC JSON, JSONL), each
detected on its own; documents are paired by position and must have the same text. For column
files that means the same tokens, sentence by sentence; the tags are decoded as conlleval does,
so on BIO input the span scores equal conlleval's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cascadener.data import DataError, ReadResult, read_documents
from cascadener.geic.metrics import Report, score


@dataclass
class ScoredFiles:
    report: Report
    gold: ReadResult
    pred: ReadResult


def read_pair(pred_path: str | Path, gold_path: str | Path, *, lang: str | None = None,
              scheme: str = "auto") -> tuple[ReadResult, ReadResult]:
    """(predictions, gold), checked to pair up document by document."""
    pred = read_documents(pred_path, lang=lang, scheme=scheme)
    gold = read_documents(gold_path, lang=lang, scheme=scheme)
    if not gold.documents:      # else empty files would score a perfect F1 over nothing
        also = "" if pred.documents else f" (and the predictions {pred_path} hold none either)"
        raise DataError(str(gold_path), None, f"no documents: nothing to score{also}")
    if len(pred.documents) != len(gold.documents):
        raise DataError(str(pred_path), None, f"{len(pred.documents)} documents, but the gold file {gold_path} "
                                              f"has {len(gold.documents)}; they are paired by position")
    for i, (p, g) in enumerate(zip(pred.documents, gold.documents), 1):
        if p.text != g.text:
            raise DataError(str(pred_path), None, f"document {i} ({p.id or 'no id'}) does not match gold document "
                                                  f"{i} ({g.id or 'no id'}): {p.text[:60]!r} vs {g.text[:60]!r}")
    return pred, gold


def evaluate_files(pred_path: str | Path, gold_path: str | Path, *, lang: str | None = None,
                   scheme: str = "auto") -> ScoredFiles:
    """Scores plus what the readers repaired or dropped on each side."""
    pred, gold = read_pair(pred_path, gold_path, lang=lang, scheme=scheme)
    return ScoredFiles(score(gold.documents, pred.documents), gold, pred)


def notes(scored: ScoredFiles) -> list[str]:
    """One line per reader intervention that affects what was scored."""
    lines = []
    for side, result in (("gold", scored.gold), ("predicted", scored.pred)):
        if result.repaired:
            first = result.repaired[0]
            lines.append(f"note: {len(result.repaired)} {side} entities were not well-formed "
                         f"{(result.scheme or '').upper()} and were decoded leniently, as conlleval does "
                         f"(first: {first.where}: {first.reason})")
        if result.dropped:
            first = result.dropped[0]
            lines.append(f"note: {len(result.dropped)} {side} entities could not be placed in their text and are "
                         f"not scored (first: {first.where}: {first.mention!r}: {first.reason})")
    return lines


def write_report(scored: ScoredFiles, path: str | Path, **sources: str) -> None:
    """``Report.to_dict()`` plus the file names and reader notes, as JSON."""
    data = {**scored.report.to_dict(), "files": sources, "notes": notes(scored)}
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
