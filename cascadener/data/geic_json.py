"""The CascadeNER authors' GEIC JSON <-> documents.

Format (``DynamicNER/example.json``)::

    {"sentence1": {"sentence": "...", "entity": ["Le Guin", ...], "category": ["author", ...]}, ...}

``entity`` and ``category`` are parallel lists of surface strings and labels: there are no offsets.
The reader places each mention with :func:`resolve_mentions`, exact substring matches only:
* longer mentions are placed first, so "York" cannot take the "York" of a listed "New York";
* a mention takes an occurrence not already taken by an identical mention, preferring, in this
  order, one that overlaps no placed mention, then a whole word over an in-word match ("US" in
  "USA"), then the earliest — so a name listed k times takes its first k free occurrences in order.
Mentions with no free occurrence are not guessed at: they are left out of the document and listed
in ``ReadResult.dropped`` as ``Problem(record key, mention, reason)``. (17 of the 2,805 mentions of
example.json are not exact substrings of their sentence, e.g. "East Germany" for "East and West
Germany".) Nested mentions with no alternative stay nested ("London" inside "Great Fire of London").

The writer emits the same shape, keys ``sentence1..N`` in document order, mentions in text order.
Categories are kept as plain label strings.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cascadener.geic.spans import Document, Span
from cascadener.data.base import DataError, Problem, ReadResult


def read_geic_json(path: str | Path, *, lang: str = "en") -> ReadResult:
    text = Path(path).read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), e.lineno, f"invalid JSON: {e.msg}") from None
    return parse_geic(data, source=str(path), lang=lang, raw=text)


def parse_geic(data: Any, *, source: str = "<string>", lang: str = "en", raw: str = "") -> ReadResult:
    """Documents from already-parsed GEIC JSON. ``raw``, the file text, only serves to give line numbers."""
    if not isinstance(data, dict):
        raise DataError(source, 1, f"expected an object of records, got {type(data).__name__}")
    result = ReadResult([])
    for key, record in data.items():
        text, mentions, labels = _fields(record, key, source, raw)
        spans = []
        for mention, label, found in zip(mentions, labels, resolve_mentions(text, mentions)):
            if found is None:
                reason = ("empty mention" if not mention else
                          "not an exact substring of the sentence; dropped" if mention not in text else
                          "listed more often than it occurs in the sentence; dropped")
                result.dropped.append(Problem(key, mention, reason))
            else:
                spans.append(Span(found[0], found[1], label))
        result.documents.append(Document(text, sorted(spans), lang=lang, id=key))
    return result


def _fields(record: Any, key: str, source: str, raw: str) -> tuple[str, list[str], list[str]]:
    def fail(message: str) -> DataError:
        # json.loads keeps no positions; the key's first appearance in the file is a good enough line.
        at = raw.find(json.dumps(key))
        return DataError(source, raw.count("\n", 0, at) + 1 if at >= 0 else None, f"record {key!r}: {message}")

    if not isinstance(record, dict):
        raise fail(f"expected an object, got {type(record).__name__}")
    missing = [k for k in ("sentence", "entity", "category") if k not in record]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    text, mentions, labels = record["sentence"], record["entity"], record["category"]
    if not isinstance(text, str):
        raise fail("'sentence' is not a string")
    for name, values in (("entity", mentions), ("category", labels)):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise fail(f"{name!r} is not a list of strings")
    if len(mentions) != len(labels):
        raise fail(f"{len(mentions)} entities but {len(labels)} categories")
    return text, mentions, labels


def resolve_mentions(text: str, mentions: Sequence[str]) -> list[tuple[int, int] | None]:
    """Character range of each mention in ``text`` (None where none is free); see the module docstring."""
    placed: list[tuple[int, int] | None] = [None] * len(mentions)
    taken: list[tuple[int, int]] = []
    for i in sorted(range(len(mentions)), key=lambda i: -len(mentions[i])):   # stable: list order among equals
        free = [o for o in _occurrences(text, mentions[i]) if o not in taken]
        if free:
            best = min(free, key=lambda o: (any(o[0] < t[1] and t[0] < o[1] for t in taken),
                                            not _whole_word(text, *o), o[0]))
            taken.append(best)
            placed[i] = best
    return placed


def _occurrences(text: str, mention: str) -> list[tuple[int, int]]:
    found = []
    at = text.find(mention) if mention else -1
    while at >= 0:
        found.append((at, at + len(mention)))
        at = text.find(mention, at + 1)
    return found


def _whole_word(text: str, start: int, end: int) -> bool:
    """No letter or digit glued to the match on either side (only checked where the mention itself has one)."""
    left_ok = start == 0 or not (text[start - 1].isalnum() and text[start].isalnum())
    right_ok = end == len(text) or not (text[end].isalnum() and text[end - 1].isalnum())
    return left_ok and right_ok


def write_geic_json(docs: Iterable[Document], path: str | Path) -> None:
    records = {}
    for i, doc in enumerate(docs, 1):
        spans = sorted(doc.spans)
        records[f"sentence{i}"] = {"sentence": doc.text,
                                   "entity": [s.surface(doc.text) for s in spans],
                                   "category": [s.label for s in spans]}
    # Same layout as the authors' files: 4-space indent, UTF-8 kept readable.
    Path(path).write_text(json.dumps(records, ensure_ascii=False, indent=4) + "\n", encoding="utf-8")
