"""Run a CascadeNER pipeline over labelled data and score it: what `eval.py --data` does.

Gold labels are renamed to readable words first (PER -> person; see data/labels.py), because the
classifier reads the label list as words. With a category tree, gold spans get their full path so
the report can score every level.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Sequence

from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.metrics import Report, score
from cascadener.geic.spans import Document
from cascadener.ner.pipeline import CascadeNER, Stats


@dataclass
class ModelRun:
    report: Report
    predictions: list[Document]
    seconds: float
    stats: Stats

    def to_dict(self) -> dict:
        return self.report.to_dict() | {
            "seconds": round(self.seconds, 3),
            "sentences_per_second": round(len(self.predictions) / self.seconds, 4) if self.seconds else None,
            "pipeline": vars(self.stats) | {"seconds": round(self.stats.seconds, 3)},
        }


def with_paths(docs: Sequence[Document], tree: Hierarchy) -> list[Document]:
    """Gold spans labelled with a node of the tree carry its path (coarse -> fine)."""
    if tree.depth() < 2:
        return [replace(d, spans=[replace(s, path=(s.label,)) for s in d.spans]) for d in docs]
    out = []
    for d in docs:
        spans = []
        for s in d.spans:
            try:
                spans.append(replace(s, path=tree.path(s.label)))
            except (KeyError, ValueError):
                spans.append(s)      # a label off the tree can only be wrong; keep it as gold anyway
        out.append(replace(d, spans=spans))
    return out


def run(ner: CascadeNER, gold: Sequence[Document], tree: Hierarchy, chunk: int = 1024,
        progress: bool = True) -> ModelRun:
    gold = with_paths(gold, tree)
    predictions: list[Document] = []
    start = time.perf_counter()
    for n in range(0, len(gold), chunk):
        texts = gold[n:n + chunk]
        for g, p in zip(texts, ner.predict_batch([d.text for d in texts], categories=tree, lang=texts[0].lang)):
            predictions.append(replace(p, lang=g.lang, id=g.id))
        if progress:
            secs = time.perf_counter() - start
            print(f"\r{len(predictions)}/{len(gold)} sentences, {len(predictions) / secs:.2f}/s",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    seconds = time.perf_counter() - start
    return ModelRun(score(gold, predictions), predictions, seconds, ner.stats)
