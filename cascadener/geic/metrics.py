"""Span-level NER scores, plus the authors' lenient string-set score with its bug fixed.

Gold and predicted documents are paired by position; a pair whose texts differ, or lists of
different lengths, is an error (the original code paired by drifting keys and silently lost
sentences). Within a document, spans are a set: the same (start, end, label) twice counts once,
the same way conlleval counts each chunk once.

Conventions, per bucket (a type, a level, or everything):
* precision = tp / n_pred and recall = tp / n_gold; a 0/0 is 1.0 when the bucket has neither
  predictions nor gold (nothing to find, nothing wrongly found), else 0.0;
* F1 = 2PR / (P + R), and 0.0 when P + R = 0;
* macro averages P, R and F1 over every type seen in gold or predictions (its tp/n_pred/n_gold are
  the micro sums); with no types at all it equals micro.

Levels of a category tree: at level l every span, gold and predicted, is compared by its path cut
to l elements (`at_level`). A prediction whose walk down the tree stopped above l (the classifier
answered "unknown") is therefore wrong at l, never left out: leaving it out would raise precision
for answering less. A gold span labelled with a coarse node compares its whole path at finer levels.

Lenient (the authors' evaluate.py, corrected): per sentence, the set of (lowercased surface,
lowercased label) pairs; every predicted pair counts in the precision denominator, even one whose
string appears in no gold sentence (the original dropped those, so gold {kobe}, {paris} against
predictions {kobe, lakers}, {paris, france} scored P = 1.0 instead of 0.5). Lenient extraction
uses the lowercased surfaces alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Hashable, Sequence

from cascadener.geic.spans import Document, Span


@dataclass
class PRF:
    precision: float
    recall: float
    f1: float
    tp: int
    n_pred: int
    n_gold: int

    @classmethod
    def of(cls, tp: int, n_pred: int, n_gold: int) -> PRF:
        empty = n_pred == 0 and n_gold == 0
        p = tp / n_pred if n_pred else float(empty)
        r = tp / n_gold if n_gold else float(empty)
        return cls(p, r, 2 * p * r / (p + r) if p + r else 0.0, tp, n_pred, n_gold)


@dataclass
class Report:
    micro: PRF
    macro: PRF
    per_type: dict[str, PRF]
    per_level: dict[int, PRF]
    extraction: PRF
    lenient: PRF
    lenient_extraction: PRF
    sentences: int

    def to_dict(self) -> dict:
        """JSON-ready; per_level keys become strings, as JSON requires."""
        d = asdict(self)
        d["per_level"] = {str(k): v for k, v in d["per_level"].items()}
        return d

    def table(self) -> str:
        def row(name: str, m: PRF) -> str:
            return (f"{name:<28} {m.precision:>6.4f} {m.recall:>6.4f} {m.f1:>6.4f} "
                    f"{m.tp:>6} {m.n_pred:>6} {m.n_gold:>6}")
        lines = [f"{self.sentences} sentences",
                 f"{'':<28} {'P':>6} {'R':>6} {'F1':>6} {'tp':>6} {'pred':>6} {'gold':>6}",
                 row("micro (span, type)", self.micro), row("macro (over types)", self.macro)]
        lines += [row(f"  {t or '(no label)'}", m) for t, m in sorted(self.per_type.items())]
        lines += [row(f"level {lvl}", m) for lvl, m in sorted(self.per_level.items())]
        lines += [row("extraction (span only)", self.extraction),
                  row("lenient (string, type)", self.lenient),
                  row("lenient extraction (string)", self.lenient_extraction)]
        return "\n".join(lines)


Key = Callable[[Document, Span], Hashable]


def _count(gold: Sequence[Document], pred: Sequence[Document], key: Key,
           keep: Callable[[Span], bool] = lambda s: True) -> PRF:
    """Micro counts over documents of the set of `key`s of the spans passing `keep`."""
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred):
        gs = {key(g, s) for s in g.spans if keep(s)}
        ps = {key(p, s) for s in p.spans if keep(s)}
        tp, n_pred, n_gold = tp + len(gs & ps), n_pred + len(ps), n_gold + len(gs)
    return PRF.of(tp, n_pred, n_gold)


def _path(s: Span) -> tuple[str, ...]:
    """A span's hierarchy path; a flat label is a one-level path."""
    return s.path or ((s.label,) if s.label else ())


def at_level(docs: Sequence[Document], level: int) -> list[Document]:
    """The documents with every span's path cut to `level` elements and its label the last of them:
    what a tree of that depth would have answered. Shorter paths stay as they are."""
    if level < 1:
        raise ValueError(f"levels start at 1, got {level}")

    def cut(s: Span) -> Span:
        path = _path(s)[:level]
        return replace(s, label=path[-1] if path else s.label, path=path)
    return [replace(d, spans=[cut(s) for s in d.spans]) for d in docs]


def confusion(gold: Sequence[Document], pred: Sequence[Document]) -> dict[str, dict[str, int]]:
    """gold label -> predicted label -> count, over the mentions whose span both sides found
    (same start and end). The diagonal sums to micro tp; everything to extraction tp (one label
    per span on each side)."""
    _check_pairs(gold, pred)
    counts: dict[str, dict[str, int]] = {}
    for g, p in zip(gold, pred):
        found: dict[tuple[int, int], set[str]] = {}
        for s in p.spans:
            found.setdefault((s.start, s.end), set()).add(s.label)
        for start, end, label in {(s.start, s.end, s.label) for s in g.spans}:
            for answer in found.get((start, end), ()):
                row = counts.setdefault(label, {})
                row[answer] = row.get(answer, 0) + 1
    return counts


def _check_pairs(gold: Sequence[Document], pred: Sequence[Document]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predicted; they are paired by position")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if g.text != p.text:
            raise ValueError(f"pair {i} (gold id {g.id!r}, predicted id {p.id!r}) has different texts: "
                             f"{g.text[:60]!r} vs {p.text[:60]!r}")


def score(gold: Sequence[Document], pred: Sequence[Document]) -> Report:
    _check_pairs(gold, pred)
    exact: Key = lambda d, s: (s.start, s.end, s.label)
    micro = _count(gold, pred, exact)

    labels = sorted({s.label for d in (*gold, *pred) for s in d.spans})
    per_type = {t: _count(gold, pred, exact, lambda s: s.label == t) for t in labels}
    macro = micro
    if per_type:
        avg = {f: sum(getattr(m, f) for m in per_type.values()) / len(per_type)
               for f in ("precision", "recall", "f1")}
        macro = PRF(avg["precision"], avg["recall"], avg["f1"], micro.tp, micro.n_pred, micro.n_gold)

    # Level l compares (span, path[:l]): a type counts as right at level l only if every coarser
    # level is right too (see the module docstring for paths shorter than l).
    depth = max((len(_path(s)) for d in (*gold, *pred) for s in d.spans), default=0)
    per_level = {lvl: _count(gold, pred, lambda d, s: (s.start, s.end, _path(s)[:lvl]))
                 for lvl in range(1, depth + 1)}

    return Report(
        micro=micro, macro=macro, per_type=per_type, per_level=per_level,
        extraction=_count(gold, pred, lambda d, s: (s.start, s.end)),
        lenient=_count(gold, pred, lambda d, s: (s.surface(d.text).lower(), s.label.lower())),
        lenient_extraction=_count(gold, pred, lambda d, s: s.surface(d.text).lower()),
        sentences=len(gold))
