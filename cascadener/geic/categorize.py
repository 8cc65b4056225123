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

Across datasets (`views`, for the joint format and training mixtures) the list is chosen once per
sentence, as at inference, where the extraction prompt and every mention's first question share
it: the dataset's top-level types, reduced, extended with other datasets' types that cannot
describe this dataset's mentions (their coarse *kind* differs), renamed by synonyms, merged into
a bucket, or at another granularity (a node replaced by its children, or a dataset's fine types
folded into their kind, politician -> person), or nested: finer nodes offered beside the node they
are under (person and politician), where the most specific offered type answers. A mention whose
type is not offered is not marked in the extraction answer, and its classification answer is UNKNOWN.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from cascadener.geic.hierarchy import UNKNOWN, Hierarchy, NodePath
from cascadener.geic.spans import Document, Span

BUCKETS = ("other", "miscellaneous")   # names a merged bucket may take, first unused wins

Question = tuple[list[str], str]          # (candidate list, answer)


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
    """Probability of applying each step to an example (in views, to a sentence's list).
    `Dynamic.static()` gives the plain lists."""
    mix: float = 0.2
    reduce: float = 0.3
    merge: float = 0.2
    synonym: float = 0.2
    unknown: float = 0.1
    extend: float = 0.3          # views only: add types of other datasets
    nest: float = 0.4            # views only: offer nodes below an offered node beside it (finer answers)
    hint: float = 0.5            # views only: offer "unknown" although every mention's type is listed
    plain: float = 0.0           # views only: the source's own list untouched, as inference offers it
    shuffle: bool = True

    @classmethod
    def static(cls) -> Dynamic:
        return cls(mix=0.0, reduce=0.0, merge=0.0, synonym=0.0, unknown=0.0, extend=0.0, nest=0.0, hint=0.0,
                   shuffle=False)


def mix_granularity(cands: list[str], answer: str, finer: Mapping[str, list[str]],
                    deeper: str | None, rng: random.Random) -> Question:
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


def reduce_options(cands: list[str], answer: str, rng: random.Random) -> Question:
    """Keep the answer and a random, non-empty subset of the others, in their order."""
    others = [c for c in cands if c != answer]
    if len(others) < 2:
        return cands, answer
    keep = set(rng.sample(others, rng.randint(1, len(others) - 1)))
    return [c for c in cands if c == answer or c in keep], answer


def merge_other(cands: list[str], answer: str, rng: random.Random) -> Question:
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
                 rng: random.Random) -> Question:
    """Swap each candidate that has synonyms, with probability 1/2, for one not already listed."""
    out = list(cands)
    for i, c in enumerate(cands):
        alts = [s for s in synonyms.get(c, []) if s not in out]
        if alts and rng.random() < 0.5:
            out[i] = rng.choice(alts)
            if c == answer:
                answer = out[i]
    return out, answer


def make_unknown(cands: list[str], answer: str) -> Question:
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


def descend(text: str, span: Span, path: tuple[str, ...], start: int,
            walk: Sequence[tuple[tuple[str, ...], str]], hierarchy: Hierarchy, rng: random.Random,
            dynamic: Dynamic, synonyms: Mapping[str, Sequence[str]]) -> list[Example]:
    """The mention's examples at levels start..len(path) of its path, after the walk so far."""
    out: list[Example] = []
    walk = list(walk)
    for level in range(start, len(path) + 1):
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
            cands, answer = use_synonyms(cands, answer, synonyms, rng)
        if rng.random() < dynamic.unknown:
            cands, answer = make_unknown(cands, answer)
        if dynamic.shuffle:
            rng.shuffle(cands)
        out.append(Example(text, span, level, tuple(cands), answer, tuple(walk)))
        node = path[level - 1]
        walk.append((tuple(cands), node) if answer == node else (tuple(hierarchy.children(parent)), node))
    return out


def examples(docs: Sequence[Document], hierarchy: Hierarchy, seed: int,
             dynamic: Dynamic = Dynamic()) -> list[Example]:
    """One example per gold mention per level of its path, in document and text order.

    Each example also carries the walk down to its level as the cascade would have taken it: the
    lists and answers of the coarser levels (an answer that a rewrite moved off the path, to a
    bucket, a synonym, a finer node or UNKNOWN, is recorded as the plain list and the path's node,
    since the cascade goes deeper only after answering a node of the path)."""
    rng = random.Random(seed)
    return [e for doc in docs for span in sorted(doc.spans)
            for e in descend(doc.text, span, mention_path(span, hierarchy), 1, (), hierarchy, rng, dynamic,
                             hierarchy.synonyms)]


# --- across datasets: one list per sentence ----------------------------------------------------

# Other names for a type, used to rename an offered type (and to see that two names are one type).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("people", "human", "individual"),
    "organization": ("organisation", "company", "institution"),
    "location": ("place", "geographical location"),
    "miscellaneous": ("misc",),
    "country": ("nation",),
    "city": ("town",),
    "facility": ("building",),
    "politician": ("political figure",),
    "writer": ("author",),
    "musical artist": ("musician",),
    "scientist": ("researcher",),
    "band": ("music group",),
    "political party": ("party",),
    "university": ("college",),
    "award": ("prize",),
    "algorithm": ("method",),
    "field": ("discipline", "research field"),
    "metrics": ("metric", "evaluation metric"),
}

# The coarse kind of a type name: two types of one kind may describe the same mention, so a type
# of another dataset is offered only when its kind is none of this dataset's kinds. Names not here
# are their own kind; a node of a deeper tree takes the kind of its first listed ancestor.
MISC = "miscellaneous"
KINDS: dict[str, str] = {
    **{n: "person" for n in ("person", "politician", "writer", "musical artist", "scientist")},
    **{n: "location" for n in ("location", "country", "city")},
    **{n: "organization" for n in ("organization", "university", "band", "political party", "group",
                                   "magazine", "corporation")},
    **{n: "facility" for n in ("facility",)},
    **{n: "event" for n in ("event", "election")},
    **{n: "award" for n in ("award",)},
    **{n: "art" for n in ("art", "book", "poem", "song", "album", "literary genre", "music genre",
                          "creative work")},
    **{n: "product" for n in ("product", "musical instrument")},
    **{n: "science entity" for n in ("science entity", "algorithm", "field", "task", "metrics",
                                     "programming language", "conference", "academic journal", "protein",
                                     "enzyme", "chemical compound", "chemical element", "astronomical object",
                                     "theory")},
    **{n: MISC for n in (MISC, "other")},
}
# Kinds whose mentions overlap in practice (an airport is a location in CoNLL and WikiANN).
RELATED: dict[str, tuple[str, ...]] = {"location": ("facility",), "facility": ("location", "organization"),
                                       "organization": ("facility",)}


def canonical(name: str, synonyms: Mapping[str, Sequence[str]] = SYNONYMS) -> str:
    return next((n for n, alts in synonyms.items() if name in alts), name)


def kind(path: NodePath) -> str:
    """The kind of a node: that of the finest name on its path KINDS knows, else its root's name."""
    for name in reversed(path):
        if canonical(name) in KINDS:
            return KINDS[canonical(name)]
    return canonical(path[0])


# DynamicNER leaves that name a type only under their parent ("air" is a vehicle).
VAGUE = frozenset({"air", "water", "rail", "bike", "car", "nuclear", "energy", "element", "compound",
                   "reaction", "household"})


def type_kinds(hierarchy: Hierarchy) -> dict[str, str]:
    """Each node name of a tree that can stand alone as another dataset's type, with its kind
    (not catch-alls, "other ..." nodes, names that repeat in the tree, or VAGUE ones)."""
    dup = hierarchy.duplicates()
    return {p[-1]: kind(p) for p in hierarchy.paths()
            if kind(p) != MISC and not p[-1].startswith("other") and p[-1] not in dup and p[-1] not in VAGUE}


@dataclass(frozen=True)
class Offer:
    name: str                       # what the list shows
    nodes: frozenset[NodePath]      # the tree nodes whose mentions answer `name` (none: another dataset's type)


@dataclass(frozen=True)
class View:
    """One sentence under one offered list: what the joint format trains on."""
    text: str
    types: tuple[str, ...]          # the offered list (extraction prompt and every mention's first question)
    zero_shot: bool                 # whether the prompts allow UNKNOWN
    mentions: tuple[Span, ...]      # every gold mention, in text order
    marked: tuple[Span, ...]        # the mentions of offered types, labelled by the offered name
    examples: tuple[Example, ...]   # each mention's first question (UNKNOWN when not offered), then deeper levels


def answer_for(offers: Sequence[Offer], path: NodePath) -> str:
    """The name offered for the deepest node of the path on offer, else UNKNOWN: when a node and
    one of its children are both offered (nest), the more specific one answers."""
    best, depth = UNKNOWN, 0
    for o in offers:
        for node in o.nodes:
            if depth < len(node) <= len(path) and path[:len(node)] == node:
                best, depth = o.name, len(node)
    return best


def regranulate(offers: list[Offer], hierarchy: Hierarchy, rng: random.Random) -> list[Offer]:
    """Mixed granularity: one node replaced by its children (deeper trees), or all the offered
    types of one kind folded into the kind's name (several, or one whose name differs:
    politician -> person)."""
    names = {o.name for o in offers}
    finer = [i for i, o in enumerate(offers) if len(o.nodes) == 1 and hierarchy.children(min(o.nodes))
             and not set(hierarchy.children(min(o.nodes))) & names]
    by_kind: dict[str, list[int]] = {}
    for i, o in enumerate(offers):
        if o.nodes:
            by_kind.setdefault(kind(min(o.nodes)), []).append(i)
    folds = [group for k, group in sorted(by_kind.items())
             if k != MISC and (len(group) > 1 or offers[group[0]].name != k)
             and (k not in names or k in {offers[i].name for i in group})]
    choices = [("finer", [i]) for i in finer] + [("fold", g) for g in folds]
    if not choices:
        return offers
    how, pick = rng.choice(choices)
    first = pick[0]
    if how == "finer":
        (node,) = offers[first].nodes
        children = [Offer(c, frozenset({node + (c,)})) for c in hierarchy.children(node)]
        return offers[:first] + children + offers[first + 1:]
    folded = Offer(kind(min(offers[first].nodes)), frozenset().union(*(offers[i].nodes for i in pick)))
    return [folded if i == first else o for i, o in enumerate(offers) if i not in pick or i == first]


def nest(offers: list[Offer], hierarchy: Hierarchy, paths: Sequence[NodePath], rng: random.Random) -> list[Offer]:
    """Specific beside general: one to three nodes below an offered node (children or deeper)
    join the list after it, the node staying on it (as CrossNER offers "politician" beside
    "person"). A mention under an added node answers it, the node's other mentions the node.
    Nodes the sentence's mentions are under are preferred, so the rule is seen at work."""
    names, dup = {o.name for o in offers}, hierarchy.duplicates()
    nodes = [min(o.nodes) for o in offers if len(o.nodes) == 1 and hierarchy.children(min(o.nodes))]
    if not nodes:
        return offers

    def used(node: NodePath) -> bool:
        return any(p[:len(node)] == node for p in paths)
    node = rng.choice([n for n in nodes if used(n)] or nodes)
    below = [p for p in hierarchy.paths() if len(p) > len(node) and p[:len(node)] == node
             and p[-1] not in names and p[-1] not in dup]
    if not below:
        return offers
    on_paths = [p for p in below if used(p)]
    picks = set(rng.sample(on_paths, rng.randint(1, min(2, len(on_paths))))) if on_paths else set()
    rest = [p for p in below if p not in picks]
    if rest:
        picks |= set(rng.sample(rest, rng.randint(0 if picks else 1, min(3 - len(picks), len(rest)))))
    i = next(j for j, o in enumerate(offers) if o.nodes == {node})
    added = [Offer(p[-1], frozenset({p})) for p in below if p in picks]
    return offers[:i + 1] + added + offers[i + 1:]


def withdraw(offers: list[Offer], paths: Sequence[NodePath], rng: random.Random) -> list[Offer]:
    """Zero-shot: take one offered type that some mention has off the list (if another remains)."""
    used = [i for i, o in enumerate(offers) if any(answer_for([o], p) != UNKNOWN for p in paths)]
    if not used or len(offers) < 2:
        return offers
    drop = rng.choice(used)
    return [o for i, o in enumerate(offers) if i != drop]


def drop_unused(offers: list[Offer], paths: Sequence[NodePath], rng: random.Random) -> list[Offer]:
    """Reduce: leave out a random non-empty subset of the types no mention has, keeping one type."""
    unused = [i for i, o in enumerate(offers) if all(answer_for([o], p) == UNKNOWN for p in paths)]
    most = min(len(unused), len(offers) - 1)
    if most < 1:
        return offers
    drop = set(rng.sample(unused, rng.randint(1, most)))
    return [o for i, o in enumerate(offers) if i not in drop]


def extend(offers: list[Offer], foreign: Sequence[str], rng: random.Random) -> list[Offer]:
    """Add one to three types of other datasets, none a name (or synonym of a name) on the list."""
    taken = {canonical(o.name) for o in offers}
    free = [n for n in foreign if canonical(n) not in taken]
    if not free:
        return offers
    return offers + [Offer(n, frozenset()) for n in rng.sample(free, rng.randint(1, min(3, len(free))))]


def merge_offers(offers: list[Offer], rng: random.Random) -> list[Offer]:
    """Fold some offered types into a catch-all: the list's own (miscellaneous), else a new bucket
    named by the first name of BUCKETS not on the list. At least two names stay on the list."""
    names = [o.name for o in offers]
    own = next((i for i, o in enumerate(offers) if o.nodes and kind(min(o.nodes)) == MISC), None)
    bucket = names[own] if own is not None else next((b for b in BUCKETS if b not in names), None)
    rest = [i for i in range(len(offers)) if i != own]
    low, high = (2, len(offers) - 1) if own is None else (1, len(offers) - 2)
    if bucket is None or low > high:
        return offers
    folded = set(rng.sample(rest, rng.randint(low, high)))
    folded |= {own} if own is not None else set()
    first = min(folded)
    merged = Offer(bucket, frozenset().union(*(offers[i].nodes for i in folded)))
    return [merged if i == first else o for i, o in enumerate(offers) if i not in folded or i == first]


def rename(offers: list[Offer], synonyms: Mapping[str, Sequence[str]], rng: random.Random) -> list[Offer]:
    """Each offered type that has synonyms takes one, not already listed, with probability 1/2:
    one name per type, so every mention of it in the sentence answers the same name."""
    out = list(offers)
    for i, o in enumerate(offers):
        alts = [a for a in synonyms.get(o.name, ()) if a not in {x.name for x in out}]
        if alts and rng.random() < 0.5:
            out[i] = Offer(rng.choice(alts), o.nodes)
    return out


def views(docs: Sequence[Document], hierarchy: Hierarchy, seed: int | str, dynamic: Dynamic = Dynamic(),
          others: Mapping[str, str] | None = None,
          synonyms: Mapping[str, Sequence[str]] = SYNONYMS) -> list[View]:
    """One view per document (repeat a document for more). `others`: other datasets' types with
    their kinds (type_kinds); those of this tree's kinds (or related ones) are never offered, and
    none in a sentence with a catch-all mention, which could be any of them."""
    rng = random.Random(seed)
    own = {kind(p) for p in hierarchy.paths()} - {MISC}
    blocked = own | {r for k in own for r in RELATED.get(k, ())}
    own_names = {canonical(p[-1]) for p in hierarchy.paths()}
    foreign = sorted(n for n, k in (others or {}).items() if k not in blocked and canonical(n) not in own_names)
    return [_view(doc, hierarchy, rng, dynamic, foreign, synonyms) for doc in docs]


def _view(doc: Document, hierarchy: Hierarchy, rng: random.Random, dynamic: Dynamic, foreign: Sequence[str],
          synonyms: Mapping[str, Sequence[str]]) -> View:
    spans = sorted(doc.spans)
    paths = [mention_path(s, hierarchy) for s in spans]
    # Only a nonzero share draws, so a recipe without one keeps every view it had.
    if dynamic.plain and rng.random() < dynamic.plain:
        dynamic = replace(Dynamic.static(), shuffle=dynamic.shuffle)
    offers = [Offer(r, frozenset({(r,)})) for r in hierarchy.roots]
    if rng.random() < dynamic.mix:
        offers = regranulate(offers, hierarchy, rng)
    if rng.random() < dynamic.nest:
        offers = nest(offers, hierarchy, paths, rng)
    if rng.random() < dynamic.reduce:
        offers = drop_unused(offers, paths, rng)
    if rng.random() < dynamic.unknown:
        offers = withdraw(offers, paths, rng)
    if rng.random() < dynamic.extend and not any(kind(p) == MISC for p in paths):
        offers = extend(offers, foreign, rng)
    if rng.random() < dynamic.merge:
        offers = merge_offers(offers, rng)
    if rng.random() < dynamic.synonym:
        offers = rename(offers, synonyms, rng)
    if dynamic.shuffle:
        rng.shuffle(offers)
    types = tuple(o.name for o in offers)
    answers = [answer_for(offers, p) for p in paths]
    zero_shot = UNKNOWN in answers or rng.random() < dynamic.hint
    below = dynamic if zero_shot else replace(dynamic, unknown=0.0)
    out: list[Example] = []
    for span, path, answer in zip(spans, paths, answers):
        out.append(Example(doc.text, span, 1, types, answer))
        offer = next((o for o in offers if o.name == answer), None)
        if offer is not None and len(offer.nodes) == 1 and min(offer.nodes)[-1] == answer:
            depth = len(min(offer.nodes))       # go down the tree only from a plain node of the path
            out += descend(doc.text, span, path, depth + 1, [(types, answer)], hierarchy, rng, below, synonyms)
    marked = tuple(replace(s, label=a, path=()) for s, a in zip(spans, answers) if a != UNKNOWN)
    return View(doc.text, types, zero_shot, tuple(spans), marked, tuple(out))
