"""Readable names for datasets' type codes: the classifier reads labels as words, so PER -> person.

A user's own map (JSON object code -> name) overrides or extends these; codes not listed become
lower-case words with underscores/hyphens as spaces.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.spans import Document
from cascadener.data import load_documents

READABLE = {
    # CoNLL-2003, WikiANN, MultiCoNER
    "PER": "person", "LOC": "location", "ORG": "organization", "MISC": "miscellaneous",
    "GRP": "group", "CORP": "corporation", "PROD": "product", "CW": "creative work",
    # CrossNER
    "misc": "miscellaneous", "organisation": "organization", "programlang": "programming language",
    "academicjournal": "academic journal", "astronomicalobject": "astronomical object",
    "chemicalcompound": "chemical compound", "chemicalelement": "chemical element",
    "literarygenre": "literary genre", "musicalartist": "musical artist",
    "musicalinstrument": "musical instrument", "musicgenre": "music genre",
    "politicalparty": "political party",
}


def readable(code: str, overrides: dict[str, str] | None = None) -> str:
    if overrides and code in overrides:
        return overrides[code]
    return READABLE.get(code, code.replace("_", " ").replace("-", " ").lower())


def load_label_map(path: str | Path) -> dict[str, str]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON in label map ({e.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: a label map is a JSON object of code -> name strings")
    return data


def dataset_types(docs: Iterable[Document]) -> list[str]:
    """The type codes a dataset uses, in order of first appearance."""
    return list(dict.fromkeys(s.label for d in docs for s in d.spans if s.label))


def relabel(docs: Sequence[Document], names: dict[str, str]) -> list[Document]:
    """Documents with every span's label (and path) replaced by its readable name."""
    def rename(label: str) -> str:
        return names.get(label, label)
    return [replace(d, spans=[replace(s, label=rename(s.label), path=tuple(rename(p) for p in s.path))
                              for s in d.spans]) for d in docs]


def on_tree(tree: Hierarchy, name: str) -> bool:
    try:
        tree.path(name)
    except (KeyError, ValueError):
        return False
    return True


def readable_labels(docs: Sequence[Document], tree: Hierarchy | None,
                    overrides: dict[str, str] | None = None) -> list[Document]:
    """Type codes -> the words the classifier reads (PER -> person). A label the category tree
    knows stays as it is: readable() would turn e.g. DynamicNER's "non-fiction" into "non fiction"."""
    names = {c: c if tree is not None and on_tree(tree, c) and c not in (overrides or {})
             else readable(c, overrides) for c in dataset_types(docs)}
    return relabel(docs, names)


def load_labelled(path: str | Path, tree: Hierarchy | None = None, overrides: dict[str, str] | None = None,
                  lang: str | None = None, scheme: str = "auto") -> list[Document]:
    return readable_labels(load_documents(path, lang=lang, scheme=scheme), tree, overrides)


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
