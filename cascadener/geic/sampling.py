"""Choosing sentences: stratified few-shot training sets and the stratified test subset.

Both sample whole sentences (Documents), never single mentions, and both are deterministic under
their seed (one `random.Random(seed)`, types and strata visited in sorted order). Results keep the
input order of the documents.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

from cascadener.geic.spans import Document

NO_ENTITY = ""   # stratum key of sentences without entities in `stratified_subset`


def types_of(doc: Document) -> set[str]:
    return {s.label for s in doc.spans}


def few_shot(docs: Sequence[Document], budget: int, seed: int) -> list[Document]:
    """At most `budget` sentences, stratified by entity type (paper eq. 4).

    Semantics: with m types and n_i sentences containing type i, each type gets at least
    s_i = min(floor(budget / m), n_i) sentences *containing* it. A sentence counts towards every
    type it contains, so one sentence can serve several types, and budget a type cannot use (n_i
    is small, or other types' sentences already cover it) goes to the types that still can.
    Sentences without entities are never chosen (they carry no type).

    Algorithm: repeatedly add a random unchosen sentence of the type with the fewest chosen
    sentences among types that still have unchosen ones (ties: rarer type, then name), until the
    budget or the sentences run out. Why the quotas hold: while a type t is below s_i it is always
    eligible, so every step serves a type whose count is below floor(budget / m) then; each type
    can be served that way at most floor(budget / m) times, so such steps number fewer than
    m * floor(budget / m) <= budget, and the loop cannot stop first.

    Hence: size == min(budget, number of sentences with entities); every type appears once the
    budget is at least m.
    """
    if budget < 0:
        raise ValueError(f"budget must be non-negative, got {budget}")
    rng = random.Random(seed)
    pool: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        for t in types_of(doc):
            pool.setdefault(t, []).append(i)
    order = sorted(pool, key=lambda t: (len(pool[t]), t))
    for t in sorted(pool):
        rng.shuffle(pool[t])
    chosen: set[int] = set()
    covered: Counter[str] = Counter()   # chosen sentences containing each type
    cursor: Counter[str] = Counter()    # pool[t][:cursor[t]] are all chosen already
    while len(chosen) < budget:
        open_ = [t for t in order if covered[t] < len(pool[t])]
        if not open_:
            break
        t = min(open_, key=covered.__getitem__)   # min keeps the first of equals: the rarer type
        while pool[t][cursor[t]] in chosen:
            cursor[t] += 1
        chosen.add(pool[t][cursor[t]])
        covered.update(types_of(docs[pool[t][cursor[t]]]))
    return [docs[i] for i in sorted(chosen)]


def stratified_subset(docs: Sequence[Document], n: int = 300, seed: int = 0) -> list[Document]:
    """`n` sentences (all of them if there are fewer), the paper's evaluation subset.

    Each sentence belongs to one stratum: its rarest entity type (by how many sentences contain
    the type; ties by name), or NO_ENTITY. Strata get seats in proportion to their size by largest
    remainder (ties by stratum key), so sentences without entities keep their share, and are then
    sampled uniformly. A stratum smaller than len(docs) / n may get no seat.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if n >= len(docs):
        return list(docs)
    freq = Counter(t for doc in docs for t in types_of(doc))
    strata: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        key = min(types_of(doc), key=lambda t: (freq[t], t), default=NO_ENTITY)
        strata.setdefault(key, []).append(i)
    keys = sorted(strata)
    exact = {k: n * len(strata[k]) / len(docs) for k in keys}
    seats = {k: int(exact[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (seats[k] - exact[k], k))
    for k in by_remainder[:n - sum(seats.values())]:
        seats[k] += 1
    rng = random.Random(seed)
    chosen = sorted(i for k in keys for i in rng.sample(strata[k], seats[k]))
    return [docs[i] for i in chosen]
