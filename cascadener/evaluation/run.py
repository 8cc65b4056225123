"""Run a CascadeNER pipeline over labelled documents and score what it tags.

Library code: it returns a `ModelRun` and reports progress through a callback; printing is the
CLI's business. Gold documents come in with readable labels and, under a category tree, full
paths (`data.labels.with_paths`), so the report can score every level.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.metrics import Report, score
from cascadener.geic.spans import Document
from cascadener.ner.pipeline import CascadeNER, Stats

Progress = Callable[[int, int, float], None]    # (sentences done, sentences in all, seconds so far)


@dataclass
class ModelRun:
    gold: list[Document]
    predictions: list[Document]
    report: Report
    seconds: float
    stats: Stats                   # this run's counters only

    @property
    def sentences_per_second(self) -> float | None:
        return len(self.predictions) / self.seconds if self.seconds else None

    def to_dict(self) -> dict:
        speed = self.sentences_per_second
        return self.report.to_dict() | {
            "seconds": round(self.seconds, 3),
            "sentences_per_second": round(speed, 4) if speed else None,
            "pipeline": vars(self.stats) | {"seconds": round(self.stats.seconds, 3)},
        }


def run(ner: CascadeNER, gold: Sequence[Document], tree: Hierarchy, chunk: int = 1024,
        progress: Progress | None = None) -> ModelRun:
    """Tag the texts of `gold` (paths already set, see `data.labels.with_paths`) with the labels of `tree`."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    ner = replace(ner, stats=Stats())      # the same engines, counters of this run alone
    predictions: list[Document] = []
    start = time.perf_counter()
    for n in range(0, len(gold), chunk):
        texts = gold[n:n + chunk]
        for g, p in zip(texts, ner.predict_batch([d.text for d in texts], categories=tree, lang=texts[0].lang)):
            predictions.append(replace(p, lang=g.lang, id=g.id))
        if progress is not None:
            progress(len(predictions), len(gold), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    return ModelRun(list(gold), predictions, score(gold, predictions), seconds, ner.stats)
