"""Fuse k extraction runs into one span set: the union, longest span wins on overlap (paper eq. 2).

The authors' merge replaced the *first* overlapping entity it met and never rechecked, so its
result depended on run order and could still overlap. Here the candidates are ranked once by a
total order and accepted greedily, which makes the result a function of the *set* of runs.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import replace
from typing import Sequence

from cascadener.geic.spans import Span


def fuse(runs: Sequence[Sequence[Span]], min_votes: int = 1) -> list[Span]:
    """Non-overlapping spans from the union of `runs`, in text order.

    A candidate is a distinct span (start, end, label, path); its votes are the number of runs
    that contain it (a run repeating a span votes once). Candidates with fewer than `min_votes`
    votes are discarded (min_votes=1 is the paper's plain union; higher values are our extension).
    The rest are taken longest first, ties broken by more votes, then earlier start, then label and
    path, and a candidate is kept when it overlaps nothing kept so far. Each kept span's score is
    its vote share votes / len(runs).
    """
    if min_votes < 1:
        raise ValueError(f"min_votes must be at least 1, got {min_votes}")
    votes = Counter(span for run in runs for span in set(run))
    ranked = sorted((s for s, v in votes.items() if v >= min_votes),
                    key=lambda s: (s.start - s.end, -votes[s], s.start, s.label, s.path))
    kept: list[Span] = []           # in text order and disjoint: a candidate can only overlap its neighbours
    for cand in ranked:
        at = bisect_left(kept, cand.start, key=lambda k: k.start)
        if (at == len(kept) or cand.end <= kept[at].start) and (at == 0 or kept[at - 1].end <= cand.start):
            kept.insert(at, replace(cand, score=votes[cand] / len(runs)))
    return kept
