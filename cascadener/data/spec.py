"""A labelled dataset file and how to read and cut it: what a training mixture's source
(training/mixture.py) and an evaluation suite's test set (evaluation/suite.py) have in common, so
both files take the same keys with the same meaning:

    path = "crossner/ai/dev.txt"     # required; relative paths resolve under a root (see resolve)
    name = "CrossNER AI"             # default: the path
    format = "conll"                 # auto (by extension), conll, geic or jsonl
    scheme = "iob2"                  # a column file's tag scheme: auto, iob1, iob2, iobes
    lang = "zh"                      # zh and ja tokens join without spaces
    label_map = { PER = "person" }   # type code -> the name the classifier reads, or a JSON file
    categories = "tree.json"         # a category tree (default: the data's own types, flat)
    sentences = [601, 900]           # a range, 1-based and inclusive, in file order, before sampling
    sample = 300                     # a stratified sample of that many (paper eq. 4)

Each kind of file adds its own keys (a source's weight; a test set's levels, demonstrations...).
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

from cascadener.data import FORMATS, read_documents
from cascadener.data.labels import load_label_map, readable_labels
from cascadener.data.tags import SCHEMES
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.spans import Document


@dataclass(frozen=True)
class DatasetSpec:
    path: str
    name: str = ""
    format: str = "auto"
    scheme: str = "auto"
    lang: str | None = None
    label_map: Mapping[str, str] | str | None = None   # code -> name, or a JSON file of them
    categories: str | None = None                      # a category tree file
    sentences: tuple[int, int] | None = None           # 1-based, inclusive, before sampling
    sample: int | None = None                          # stratified sample size (paper eq. 4)

    @property
    def title(self) -> str:
        return self.name or self.path


Spec = TypeVar("Spec", bound=DatasetSpec)


def read_table(path: str | Path, error: type[ValueError]) -> dict:
    """A .toml or .json file's top-level table; a bad file raises `error` naming it (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{path}: cannot read the file ({e.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: invalid TOML ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: the file holds {type(data).__name__}, not a table of keys")
    return data


def parse_spec(record: Any, where: str, cls: type[Spec], error: type[ValueError]) -> Spec:
    """`cls` from one record (a TOML table or JSON object), the common keys checked here; lists
    become tuples. `cls` checks its own keys in __post_init__ or after this returns."""
    if not isinstance(record, Mapping):
        raise error(f"{where}: not a table/object")
    keys = {f.name for f in fields(cls)}
    unknown = sorted(set(record) - keys)
    if unknown:
        raise error(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(sorted(keys))}")
    if not isinstance(record.get("path"), str):
        raise error(f"{where}: 'path' (the data file) is required and must be a string")
    r = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    if r.get("format", "auto") not in ("auto", *FORMATS):
        raise error(f"{where}: format {r['format']!r} is not auto or one of {', '.join(FORMATS)}")
    if r.get("scheme", "auto") not in ("auto", *SCHEMES):
        raise error(f"{where}: scheme {r['scheme']!r} is not auto or one of {', '.join(SCHEMES)}")
    label_map = r.get("label_map")
    if not (label_map is None or isinstance(label_map, str)
            or isinstance(label_map, Mapping) and all(isinstance(v, str) for v in label_map.values())):
        raise error(f"{where}: label_map is a table of code = \"name\", or a JSON file of them")
    sentences = r.get("sentences")
    if sentences is not None and not (isinstance(sentences, tuple) and len(sentences) == 2
                                      and all(isinstance(n, int) for n in sentences)
                                      and 1 <= sentences[0] <= sentences[1]):
        raise error(f"{where}: sentences must be [first, last] with 1 <= first <= last, got {record['sentences']!r}")
    sample = r.get("sample")
    if sample is not None and (not isinstance(sample, int) or sample < 1):
        raise error(f"{where}: sample must be a whole number >= 1, got {sample!r}")
    return cls(**r)


def resolve(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


@dataclass
class Labelled:
    documents: list[Document]     # every sentence of the file, labels readable
    given: Hierarchy | None       # the spec's category tree, or `given`
    names: dict[str, str]         # the label map applied
    dropped: list                 # entities the reader could not place (data.base.Problem)


def read_labelled(spec: DatasetSpec, root: Path, given: Hierarchy | None = None) -> Labelled:
    """Read the spec's file and name its labels (the label map; a name the tree knows stays as it
    is). `given` is a tree offered in another way (a test set's flat list of labels).
    Raises DataError/OSError naming the file and line."""
    names = (dict(spec.label_map) if isinstance(spec.label_map, Mapping)
             else load_label_map(resolve(spec.label_map, root)) if spec.label_map else {})
    tree = Hierarchy.load(resolve(spec.categories, root)) if spec.categories else given
    read = read_documents(resolve(spec.path, root), spec.format, spec.lang, spec.scheme)
    return Labelled(readable_labels(read.documents, tree, names), tree, names, read.dropped)


def in_range(docs: list[Document], spec: DatasetSpec, error: type[ValueError]) -> list[Document]:
    """The spec's `sentences` range of the documents (all of them without one)."""
    if not spec.sentences:
        return docs
    first, last = spec.sentences
    if last > len(docs):
        raise error(f"{spec.title}: sentences {first}-{last} asked, but {spec.path} has {len(docs)}")
    return docs[first - 1:last]
