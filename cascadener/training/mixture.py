"""Training on a mixture of datasets (train.py --mixture FILE): which sentences, under which lists.

The file (TOML, or JSON with the same keys) names the sources. A source is a dataset spec
(data/spec.py: the keys an evaluation suite's test sets take too) with a weight:

    [dynamic]                                  # geic.categorize.Dynamic probabilities (per sentence)
    extend = 0.3
    plain = 0.3                                # that share of sentences sees its source's own list untouched

    [[source]]
    name = "wikiann-zh"                        # default: the path
    path = "wikiann/zh/train-zh.tsv"           # relative to $CASCADENER_DATA (unset: to this file), or absolute
    format = "conll"                           # auto (by extension), conll, geic or jsonl
    scheme = "iob2"                            # a column file's tag scheme (default: detected)
    lang = "zh"                                # zh and ja tokens join without spaces
    label_map = { PER = "person" }             # type code -> readable name (defaults: data/labels.py)
    sentences = [1, 600]                       # only these sentences, 1-based, inclusive (before sampling)
    sample = 500                               # a stratified sample of that many (paper eq. 4); default all
    categories = "dynamicner/DynamicNER.json"  # the source's category tree (default: its types, flat)
    weight = 1.0                               # lists per sentence: 1.5 = every sentence once, half twice
    plain = 0.3                                # this source's plain share (default: [dynamic] plain)

Each sentence becomes one or more *views* (geic.categorize.views): an offered type list drawn by
dynamic categorization across the sources, the extraction answer marking the mentions of offered
types, and one classification question per mention and level. A source's `plain` overrides the
mixture's share for its own sentences. A source's views come from its own seeded generator:
resizing one source (sample, weight, plain) leaves the others' views as they were, and adding one
changes them only through its types joining their distractors. The sources' examples are
interleaved by the step plan (batches.py), which shuffles the whole set.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from cascadener.data.labels import dataset_types
from cascadener.data.spec import DatasetSpec, in_range, parse_spec, read_labelled, read_table, resolve
from cascadener.geic.categorize import Dynamic, View, type_kinds, views
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.sampling import few_shot
from cascadener.geic.spans import Document

DATA_ENV = "CASCADENER_DATA"


class MixtureError(ValueError):
    """A mixture file that cannot be used; the message names the file and the source."""


@dataclass(frozen=True)
class Source(DatasetSpec):
    weight: float = 1.0
    plain: float | None = None      # this source's Dynamic.plain; None: the mixture's


@dataclass(frozen=True)
class Mixture:
    sources: tuple[Source, ...]
    root: Path                      # where relative paths resolve
    dynamic: Dynamic = Dynamic()


# --- the file -------------------------------------------------------------------------------------

def parse_mixture(data: Any, where: str, root: Path) -> Mixture:
    """The mixture a parsed file describes; relative paths are taken from `root`."""
    if not isinstance(data, Mapping):
        raise MixtureError(f"{where}: a mixture is a table with [[source]] entries")
    unknown = sorted(set(data) - {"source", "dynamic"})
    if unknown:
        raise MixtureError(f"{where}: unknown key {unknown[0]!r} (expected [[source]] and [dynamic])")
    dyn = data.get("dynamic", {})
    names = {f.name for f in fields(Dynamic)}
    if not isinstance(dyn, Mapping) or set(dyn) - names:
        raise MixtureError(f"{where}: [dynamic] takes {', '.join(sorted(names))}")
    for key, value in dyn.items():
        if key == "shuffle" and not isinstance(value, bool):
            raise MixtureError(f"{where}: [dynamic] shuffle must be true or false, got {value!r}")
        if key != "shuffle" and not is_probability(value):
            raise MixtureError(f"{where}: [dynamic] {key} is a probability in [0, 1], got {value!r}")
    raw = data.get("source", [])
    if not isinstance(raw, list) or not raw:
        raise MixtureError(f"{where}: no [[source]] entries")
    sources = tuple(parse_source(s, f"{where}: source {i + 1}") for i, s in enumerate(raw))
    dupes = sorted({s.title for s in sources if [t.title for t in sources].count(s.title) > 1})
    if dupes:
        raise MixtureError(f"{where}: two sources are named {dupes[0]!r}; give them distinct names")
    return Mixture(sources, root, Dynamic(**dyn))


def parse_source(raw: Any, where: str) -> Source:
    if isinstance(raw, Mapping):
        where = f"{where} ({raw.get('name') or raw.get('path')})"
    src = parse_spec(raw, where, Source, MixtureError)
    if not isinstance(src.weight, (int, float)) or not 0 < src.weight <= 100:
        raise MixtureError(f"{where}: weight must be a number in (0, 100], got {src.weight!r}")
    if src.plain is not None and not is_probability(src.plain):
        raise MixtureError(f"{where}: plain is a probability in [0, 1], got {src.plain!r}")
    return src


def is_probability(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


def read_mixture(path: str | Path) -> Mixture:
    """A .toml or .json mixture file; paths relative to $CASCADENER_DATA, else to the file's folder."""
    path = Path(path)
    root = Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else path.resolve().parent
    return parse_mixture(read_table(path, MixtureError), str(path), root)


# --- the sentences --------------------------------------------------------------------------------

@dataclass
class Loaded:
    source: Source
    docs: list[Document]            # the sentences trained on
    tree: Hierarchy
    read: int                       # sentences read (in the range)
    left_out: int = 0               # sentences left out: overlapping mentions (one marking can't hold
                                    # them), or a mention the reader could not place


def overlapping(doc: Document) -> bool:
    spans = sorted(doc.spans)
    return any(a.end > b.start for a, b in zip(spans, spans[1:]))


def load_source(src: Source, root: Path, seed: int) -> Loaded:
    """Read, name the labels, cut the range, then sample (eq. 4). Mentions off the tree raise MixtureError."""
    path = resolve(src.path, root)
    if not path.exists():
        raise MixtureError(f"source {src.title}: no file {path} (is ${DATA_ENV} set?)")
    read = read_labelled(src, root)
    docs = in_range(read.documents, src, MixtureError)
    if read.given is None and not dataset_types(docs):
        raise MixtureError(f"source {src.title}: {path} has no labelled mention")
    tree = read.given or Hierarchy.flat(dataset_types(docs))
    for d in docs:
        for s in d.spans:
            try:
                tree.path(s.label)
            except (KeyError, ValueError) as e:
                raise MixtureError(f"source {src.title}: sentence {d.id or '?'}: {e}") from None
    # A sentence that lost a mention (one the reader could not place) would teach leaving it unmarked.
    lost = {p.where for p in read.dropped}
    kept = [d for d in docs if not overlapping(d) and d.id not in lost]
    chosen = few_shot(kept, src.sample, seed) if src.sample is not None else kept
    return Loaded(src, chosen, tree, len(docs), len(docs) - len(kept))


def repeats(n: int, weight: float, seed: int | str) -> list[int]:
    """How many views each of n sentences gets: floor(weight), plus one for a seeded
    round(frac(weight) * n) of them, so the total is n * weight rounded."""
    whole, extra = int(weight), round((weight - int(weight)) * n)
    more = set(random.Random(f"repeats-{seed}").sample(range(n), extra))
    return [whole + (i in more) for i in range(n)]


def mixture_views(loaded: Sequence[Loaded], seed: int, dynamic: Dynamic) -> list[tuple[str, View]]:
    """Every source's views, source by source: the other sources' types are its distractors."""
    kinds = [type_kinds(part.tree) for part in loaded]
    out: list[tuple[str, View]] = []
    for i, part in enumerate(loaded):
        others = {n: k for j, ks in enumerate(kinds) if j != i for n, k in ks.items()}
        docs = [d for d, r in zip(part.docs, repeats(len(part.docs), part.source.weight, f"{seed}-{part.source.title}"))
                for _ in range(r)]
        dyn = dynamic if part.source.plain is None else replace(dynamic, plain=part.source.plain)
        out += [(part.source.title, v) for v in views(docs, part.tree, f"{seed}-{part.source.title}", dyn, others)]
    return out


def load_mixture(mixture: Mixture, seed: int) -> tuple[list[Loaded], list[tuple[str, View]]]:
    loaded = [load_source(s, mixture.root, seed) for s in mixture.sources]
    return loaded, mixture_views(loaded, seed, mixture.dynamic)


def describe(loaded: Sequence[Loaded], counts: Mapping[str, int]) -> str:
    """One line per source: sentences trained on and read, weight, examples, types."""
    rows = [f"  {p.source.title}: {len(p.docs)} of {p.read} sentences"
            f"{f' ({p.left_out} with overlapping or unplaced mentions left out)' if p.left_out else ''}, "
            f"weight {p.source.weight:g}, {counts.get(p.source.title, 0)} examples, "
            f"{len(p.tree.paths())} types" for p in loaded]
    return "\n".join(rows)
