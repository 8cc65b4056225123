"""Dynamic categorization: classifier training examples whose type lists vary like real users' do.

For each gold mention and each level of its hierarchy path, the static example asks to choose the
mention's type at that level among the children of its parent (the roots at level 1), as the
cascade does at inference. Dynamic categorization then rewrites the list so the classifier does not
memorise one fixed label set:

* mix:     replace a candidate by its children (one list, two granularities);
* reduce:  keep only some candidates, always the answer;
* merge:   fold several candidates into one "other" / "miscellaneous" bucket;
* synonym: swap candidates for synonyms from the hierarchy's synonym map;
* unknown: remove the answer, so the right reply is UNKNOWN (the paper's zero-shot case).

Each step is a small function of (candidates, answer) that keeps the invariant: the answer is in
the list, or it is UNKNOWN and UNKNOWN is not. All randomness comes from one `random.Random(seed)`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

from cascadener.geic.hierarchy import UNKNOWN, Hierarchy
from cascadener.geic.spans import Document, Span

BUCKETS = ("other", "miscellaneous")   # names a merged bucket may take, first unused wins

Options = tuple[list[str], str]          # (candidate list, answer)


@dataclass(frozen=True)
class Example:
    text: str                    # the sentence
    span: Span                   # the mention
    level: int                   # hierarchy level the list was built for (1 = roots)
    candidates: tuple[str, ...]
    answer: str                  # one of candidates, or UNKNOWN when it is not offered
    history: tuple[tuple[tuple[str, ...], str], ...] = ()   # (candidates, answer) at the coarser levels


@dataclass(frozen=True)
class Dynamic:
    """Probability of applying each step to an example. `Dynamic.static()` gives the plain lists."""
    mix: float = 0.2
    reduce: float = 0.3
    merge: float = 0.2
    synonym: float = 0.2
    unknown: float = 0.1
    shuffle: bool = True

    @classmethod
    def static(cls) -> Dynamic:
        return cls(mix=0.0, reduce=0.0, merge=0.0, synonym=0.0, unknown=0.0, shuffle=False)


def mix_granularity(cands: list[str], answer: str, finer: Mapping[str, list[str]],
                    deeper: str | None, rng: random.Random) -> Options:
    """Replace one candidate by its children (`finer[c]`). Expanding the answer's own node moves the
    answer one level down, to `deeper` (the next name on the mention's path), so it is allowed
    only when the path goes deeper. Children whose names already appear in the list are skipped."""
    def expandable(c: str) -> bool:
        kids = finer.get(c, [])
        clash = set(kids) & (set(cands) - {c})
        return bool(kids) and not clash and (c != answer or deeper in kids)
    options = [c for c in cands if expandable(c)]
    if not options:
        return cands, answer
    pick = rng.choice(options)
    i = cands.index(pick)
    return cands[:i] + finer[pick] + cands[i + 1:], (deeper if pick == answer else answer)


def reduce_options(cands: list[str], answer: str, rng: random.Random) -> Options:
    """Keep the answer and a random, non-empty subset of the others, in their order."""
    others = [c for c in cands if c != answer]
    if len(others) < 2:
        return cands, answer
    keep = set(rng.sample(others, rng.randint(1, len(others) - 1)))
    return [c for c in cands if c == answer or c in keep], answer


def merge_other(cands: list[str], answer: str, rng: random.Random) -> Options:
    """Fold 2..n-1 candidates into one bucket named by the first unused name in BUCKETS; an
    answer that was folded becomes the bucket. At least one candidate stays unmerged."""
    bucket = next((b for b in BUCKETS if b not in cands), None)
    if bucket is None or len(cands) < 3:
        return cands, answer
    merged = set(rng.sample(cands, rng.randint(2, len(cands) - 1)))
    first = min(cands.index(c) for c in merged)
    out = [c for c in cands[:first] if c not in merged] + [bucket]
    out += [c for c in cands[first:] if c not in merged]
    return out, (bucket if answer in merged else answer)


def use_synonyms(cands: list[str], answer: str, synonyms: Mapping[str, list[str]],
                 rng: random.Random) -> Options:
    """Swap each candidate that has synonyms, with probability 1/2, for one not already listed."""
    out = list(cands)
    for i, c in enumerate(cands):
        alts = [s for s in synonyms.get(c, []) if s not in out]
        if alts and rng.random() < 0.5:
            out[i] = rng.choice(alts)
            if c == answer:
                answer = out[i]
    return out, answer


def make_unknown(cands: list[str], answer: str) -> Options:
    """Withdraw the answer from a list of two or more; the right reply becomes UNKNOWN."""
    if answer not in cands or len(cands) < 2:
        return cands, answer
    return [c for c in cands if c != answer], UNKNOWN


def mention_path(span: Span, hierarchy: Hierarchy) -> tuple[str, ...]:
    """The span's path, from Span.path when set (checked against the tree), else from its label."""
    if not span.path:
        return hierarchy.path(span.label)
    for depth in range(len(span.path)):
        if span.path[depth] not in hierarchy.children(span.path[:depth]):
            raise KeyError(f"span path {span.path} is not a path of the hierarchy")
    return span.path


def examples(docs: Sequence[Document], hierarchy: Hierarchy, seed: int,
             dynamic: Dynamic = Dynamic()) -> list[Example]:
    """One example per gold mention per level of its path, in document and text order.

    Each example also carries the walk down to its level as the cascade would have taken it: the
    lists and answers of the coarser levels (an answer that a rewrite moved off the path, to a
    bucket, a synonym, a finer node or UNKNOWN, is recorded as the plain list and the path's node,
    since the cascade goes deeper only after answering a node of the path)."""
    rng = random.Random(seed)
    out: list[Example] = []
    for doc in docs:
        for span in sorted(doc.spans):
            path = mention_path(span, hierarchy)
            walk: list[tuple[tuple[str, ...], str]] = []
            for level in range(1, len(path) + 1):
                parent = path[:level - 1]
                cands = hierarchy.children(parent)
                answer = path[level - 1]
                if rng.random() < dynamic.mix:
                    finer = {c: hierarchy.children(parent + (c,)) for c in cands}
                    deeper = path[level] if level < len(path) else None
                    cands, answer = mix_granularity(cands, answer, finer, deeper, rng)
                if rng.random() < dynamic.reduce:
                    cands, answer = reduce_options(cands, answer, rng)
                if rng.random() < dynamic.merge:
                    cands, answer = merge_other(cands, answer, rng)
                if rng.random() < dynamic.synonym:
                    cands, answer = use_synonyms(cands, answer, hierarchy.synonyms, rng)
                if rng.random() < dynamic.unknown:
                    cands, answer = make_unknown(cands, answer)
                if dynamic.shuffle:
                    rng.shuffle(cands)
                out.append(Example(doc.text, span, level, tuple(cands), answer, tuple(walk)))
                node = path[level - 1]
                walk.append((tuple(cands), node) if answer == node else (tuple(hierarchy.children(parent)), node))
    return out
