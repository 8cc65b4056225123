"""NER data in and out: CoNLL column files, the authors' GEIC JSON, and the project's JSONL.

All readers produce :class:`~cascadener.geic.spans.Document` objects (column files give the
:class:`TokenizedDocument` subclass, which also keeps token offsets). Nothing here imports torch.

Format names: ``conll`` (any column file: CoNLL-2003, WikiANN, CrossNER), ``geic`` (``.json``),
``jsonl`` (``.jsonl``). ``format="auto"`` goes by extension; for other extensions it looks at the
first non-blank line: a JSON object with a ``"text"`` key means JSONL, a lone ``{`` or another
JSON object means GEIC JSON, anything else a column file.

Files are UTF-8, with or without a byte-order mark; one that is not is refused with the file and
the first line that is not (:func:`~.base.not_utf8`).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

from cascadener.geic.spans import Document
from cascadener.data.base import DataError, Problem, ReadResult, not_utf8
from cascadener.data.conll import TokenizedDocument, read_conll, tokenize, write_conll
from cascadener.data.geic_json import read_geic_json, resolve_mentions, write_geic_json
from cascadener.data.jsonl import read_jsonl, write_jsonl

FORMATS = ("conll", "geic", "jsonl")

__all__ = ["DataError", "Problem", "ReadResult", "TokenizedDocument", "FORMATS", "detect_format",
           "read_documents", "load_documents", "save_documents", "read_conll", "write_conll", "tokenize",
           "read_geic_json", "write_geic_json", "resolve_mentions", "read_jsonl", "write_jsonl"]


def detect_format(path: str | Path, *, sniff: bool = True) -> str:
    """Format of ``path`` by extension, else (when ``sniff`` and the file exists) by its first line."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "geic"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if not sniff or not Path(path).is_file():
        return "conll"
    with open(path, encoding="utf-8-sig") as f:
        first = next((line.strip() for line in f if line.strip()), "")
    if first == "{":
        return "geic"
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            return "conll"          # e.g. a column file whose first token is "{"
        return "jsonl" if isinstance(obj, dict) and "text" in obj else "geic"
    return "conll"


def read_documents(path: str | Path, format: str = "auto", lang: str | None = None,
                   scheme: str = "auto") -> ReadResult:
    """Read any supported file, with what the reader repaired or dropped (see :class:`ReadResult`).

    ``lang``: the documents' language (JSONL records that carry their own keep it; for column
    files it also decides how tokens join, see :mod:`.conll`). ``scheme``: column files only.
    """
    try:
        fmt = detect_format(path) if format == "auto" else format
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {format!r}; expected auto or one of {', '.join(FORMATS)}")
        if fmt != "conll" and scheme != "auto":
            raise ValueError(f"a tag scheme only applies to column files, not {fmt}")
        if fmt == "conll":
            return read_conll(path, lang=lang, scheme=scheme)
        if fmt == "geic":
            return read_geic_json(path, lang=lang or "en")
        return read_jsonl(path, lang=lang or "en")
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def load_documents(path: str | Path, format: str = "auto", lang: str | None = None,
                   scheme: str = "auto") -> list[Document]:
    """The documents of :func:`read_documents`; warns when the reader had to leave entities out."""
    result = read_documents(path, format, lang, scheme)
    if result.dropped:
        warnings.warn(f"{path}: {len(result.dropped)} entities could not be placed and were left out "
                      f"(first: {result.dropped[0].where} {result.dropped[0].mention!r}: "
                      f"{result.dropped[0].reason}); read_documents() lists them all", stacklevel=2)
    return result.documents


def save_documents(docs: Iterable[Document], path: str | Path, format: str = "auto") -> list[Problem]:
    """Write ``docs``; returns the entities the format could not hold exactly (column files only)."""
    fmt = detect_format(path, sniff=False) if format == "auto" else format
    if fmt == "conll":
        return write_conll(docs, path)
    if fmt == "geic":
        write_geic_json(docs, path)
    elif fmt == "jsonl":
        write_jsonl(docs, path)
    else:
        raise ValueError(f"unknown format {format!r}; expected auto or one of {', '.join(FORMATS)}")
    return []
