"""Training on a mixture of datasets (train.py --mixture FILE): which sentences, under which lists.

The file (TOML, or JSON with the same keys) names the sources; every key but `path` is optional:

    [dynamic]                                  # geic.categorize.Dynamic probabilities (per sentence)
    extend = 0.3

    [[source]]
    name = "wikiann-zh"                        # default: the path
    path = "wikiann/zh/train-zh.tsv"           # relative to $CASCADENER_DATA (unset: to this file), or absolute
    format = "conll"                           # auto (by extension), conll, geic or jsonl; or a column
                                               # file's tag scheme: iob1, iob2, iobes (default: detected)
    lang = "zh"                                # zh and ja tokens join without spaces
    labels = { PER = "person" }                # type code -> readable name (defaults: data/labels.py)
    first = 600                                # keep only the first N sentences (before sampling)
    sentences = 500                            # a stratified sample of N of them (paper eq. 4); default all
    categories = "dynamicner/DynamicNER.json"  # the source's category tree (default: its types, flat)
    weight = 1.0                               # lists per sentence: 1.5 = every sentence once, half twice

Each sentence becomes one or more *views* (geic.categorize.views): an offered type list drawn by
dynamic categorization across the sources, the extraction answer marking the mentions of offered
types, and one classification question per mention and level. A source's views come from its own
seeded generator: resizing one source (sentences, weight) leaves the others' views as they were,
and adding one changes them only through its types joining their distractors. The sources'
examples are interleaved by the step plan (batches.py), which shuffles the whole set.
"""
from __future__ import annotations

import json
import os
import random
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from cascadener.data import FORMATS, read_documents
from cascadener.data.tags import SCHEMES
from cascadener.data.labels import dataset_types, readable_labels
from cascadener.geic.categorize import Dynamic, View, type_kinds, views
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.sampling import few_shot
from cascadener.geic.spans import Document

DATA_ENV = "CASCADENER_DATA"


class MixtureError(ValueError):
    """A mixture file that cannot be used; the message names the file and the source."""


@dataclass(frozen=True)
class Source:
    path: Path
    name: str = ""
    format: str = "auto"
    scheme: str = "auto"
    lang: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    first: int | None = None
    sentences: int | None = None
    categories: Path | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Mixture:
    sources: tuple[Source, ...]
    dynamic: Dynamic = Dynamic()


# --- the file -------------------------------------------------------------------------------------

def resolve(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


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
    raw = data.get("source", [])
    if not isinstance(raw, list) or not raw:
        raise MixtureError(f"{where}: no [[source]] entries")
    sources = tuple(parse_source(s, f"{where}: source {i + 1}", root) for i, s in enumerate(raw))
    dupes = sorted({s.name for s in sources if [t.name for t in sources].count(s.name) > 1})
    if dupes:
        raise MixtureError(f"{where}: two sources are named {dupes[0]!r}; give them distinct names")
    return Mixture(sources, Dynamic(**dyn))


def parse_source(raw: Any, where: str, root: Path) -> Source:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("path"), str):
        raise MixtureError(f"{where}: a source needs a path")
    where = f"{where} ({raw.get('name') or raw['path']})"
    allowed = {f.name for f in fields(Source)} - {"scheme"}     # a scheme is given as the format
    extra = sorted(set(raw) - allowed)
    if extra:
        raise MixtureError(f"{where}: unknown key {extra[0]!r} (expected {', '.join(sorted(allowed))})")
    for key in ("first", "sentences"):
        if key in raw and (not isinstance(raw[key], int) or raw[key] < 1):
            raise MixtureError(f"{where}: {key} must be a positive integer, got {raw[key]!r}")
    weight = raw.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or not 0 < weight <= 100:
        raise MixtureError(f"{where}: weight must be a number in (0, 100], got {weight!r}")
    fmt = raw.get("format", "auto")
    if fmt not in ("auto", *FORMATS, *SCHEMES):
        raise MixtureError(f"{where}: format must be auto or one of {', '.join((*FORMATS, *SCHEMES))}, got {fmt!r}")
    labels = raw.get("labels", {})
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise MixtureError(f"{where}: labels is a table of code = \"name\"")
    return Source(path=resolve(raw["path"], root), name=raw.get("name") or raw["path"],
                  format="conll" if fmt in SCHEMES else fmt, scheme=fmt if fmt in SCHEMES else "auto",
                  lang=raw.get("lang"),
                  labels=dict(labels), first=raw.get("first"), sentences=raw.get("sentences"),
                  categories=resolve(raw["categories"], root) if raw.get("categories") else None,
                  weight=float(weight))


def read_mixture(path: str | Path) -> Mixture:
    """A .toml or .json mixture file; paths relative to $CASCADENER_DATA, else to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MixtureError(f"{path}: cannot read the mixture file ({e.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise MixtureError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except tomllib.TOMLDecodeError as e:
        raise MixtureError(f"{path}: invalid TOML ({e})") from None
    root = Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else path.resolve().parent
    return parse_mixture(data, str(path), root)


# --- the sentences --------------------------------------------------------------------------------

@dataclass
class Loaded:
    source: Source
    docs: list[Document]            # the sentences trained on
    tree: Hierarchy
    read: int                       # sentences read (after `first`)
    left_out: int = 0               # sentences left out: overlapping mentions (one marking can't hold
                                    # them), or a mention the reader could not place


def overlapping(doc: Document) -> bool:
    spans = sorted(doc.spans)
    return any(a.end > b.start for a, b in zip(spans, spans[1:]))


def load_source(src: Source, seed: int) -> Loaded:
    """Read, slice, name the labels, then sample (eq. 4). Mentions off the tree raise MixtureError."""
    if not src.path.exists():
        raise MixtureError(f"source {src.name}: no file {src.path} (is ${DATA_ENV} set?)")
    tree = Hierarchy.load(src.categories) if src.categories else None
    result = read_documents(src.path, src.format, src.lang, src.scheme)
    docs = readable_labels(result.documents[:src.first], tree, src.labels)
    if tree is None and not dataset_types(docs):
        raise MixtureError(f"source {src.name}: {src.path} has no labelled mention")
    tree = tree or Hierarchy.flat(dataset_types(docs))
    for d in docs:
        for s in d.spans:
            try:
                tree.path(s.label)
            except (KeyError, ValueError) as e:
                raise MixtureError(f"source {src.name}: sentence {d.id or '?'}: {e}") from None
    # A sentence that lost a mention (one the reader could not place) would teach leaving it unmarked.
    lost = {p.where for p in result.dropped}
    kept = [d for d in docs if not overlapping(d) and d.id not in lost]
    chosen = few_shot(kept, src.sentences, seed) if src.sentences is not None else kept
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
        docs = [d for d, r in zip(part.docs, repeats(len(part.docs), part.source.weight, f"{seed}-{part.source.name}"))
                for _ in range(r)]
        out += [(part.source.name, v) for v in views(docs, part.tree, f"{seed}-{part.source.name}", dynamic, others)]
    return out


def load_mixture(mixture: Mixture, seed: int) -> tuple[list[Loaded], list[tuple[str, View]]]:
    loaded = [load_source(s, seed) for s in mixture.sources]
    return loaded, mixture_views(loaded, seed, mixture.dynamic)


def describe(loaded: Sequence[Loaded], counts: Mapping[str, int]) -> str:
    """One line per source: sentences trained on and read, weight, examples, types."""
    rows = [f"  {p.source.name}: {len(p.docs)} of {p.read} sentences"
            f"{f' ({p.left_out} with overlapping or unplaced mentions left out)' if p.left_out else ''}, "
            f"weight {p.source.weight:g}, {counts.get(p.source.name, 0)} examples, "
            f"{len(p.tree.paths())} types" for p in loaded]
    return "\n".join(rows)
