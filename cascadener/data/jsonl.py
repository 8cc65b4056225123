"""JSONL files of tagged documents, one per line, in the shape of :meth:`Document.to_dict
<cascadener.geic.spans.Document.to_dict>` (what ``write_jsonl`` and ``infer.py --format json/jsonl`` write).

Read by :func:`from_record` (and so by ``read_jsonl``): that shape, or a hand-written subset of it.
``text`` is required; ``entities`` (default ``[]``), ``lang`` (default: the reader's ``lang``) and
``id`` are optional, and so are each entity's ``text``, ``label``, ``path`` and ``score``. An entity's
``text``, when given, must equal the text at its offsets, which catches offsets counted in UTF-16 units
or UTF-8 bytes. Unknown keys are errors rather than ignored, so that a typo such as ``"entites"``
cannot silently empty a file, and ``true``/``false`` are not numbers. Blank lines are skipped. Errors
name the file and line (:class:`DataError`), or for a single record the key at fault (:class:`RecordError`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cascadener.geic.spans import Document, Span
from cascadener.data.base import DataError, ReadResult

DOCUMENT_KEYS = ("text", "entities", "lang", "id")
ENTITY_KEYS = ("start", "end", "text", "label", "path", "score")


class RecordError(ValueError):
    """A record that does not follow the schema; the message names the entity and key at fault."""


def from_record(obj: Any, *, lang: str = "en") -> Document:
    """A record (parsed JSON) -> Document; ``lang`` is the language of records without one.
    Raises :class:`RecordError` saying what is wrong."""
    if not isinstance(obj, Mapping):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    _check_keys("", obj, DOCUMENT_KEYS, "document")
    text = _get("", obj, "text", (str,))
    entities = _get("", obj, "entities", (list,), [])
    spans = [_span(f"entity {i}: ", e, text) for i, e in enumerate(entities)]
    return Document(text, spans, lang=_get("", obj, "lang", (str,), lang), id=_get("", obj, "id", (str,), ""))


def _span(where: str, obj: Any, text: str) -> Span:
    if not isinstance(obj, Mapping):
        raise RecordError(f"{where}must be an object, got {type(obj).__name__}")
    _check_keys(where, obj, ENTITY_KEYS, "entity")
    start, end = _get(where, obj, "start", (int,)), _get(where, obj, "end", (int,))
    path = _get(where, obj, "path", (list,), [])
    if not all(isinstance(p, str) for p in path):
        raise RecordError(f"{where}'path' must be a list of strings, got {path!r}")
    score = _get(where, obj, "score", (int, float, type(None)), None)
    try:
        span = Span(start, end, _get(where, obj, "label", (str,), ""), tuple(path),
                    None if score is None else float(score))
    except ValueError as e:
        raise RecordError(f"{where}{e}") from None
    surface = _get(where, obj, "text", (str,), None)
    if surface is not None and surface != span.surface(text):   # first: its hint also explains a run past the end
        raise RecordError(f"{where}'text' is {surface!r} but the text at [{start}, {end}) is "
                          f"{span.surface(text)!r}; offsets must count code points (Python str indices), "
                          "not UTF-16 units or UTF-8 bytes")
    if end > len(text):
        raise RecordError(f"{where}span [{start}, {end}) runs past the end of the {len(text)}-character text")
    return span


_REQUIRED = object()
_KIND_NAMES = {str: "a string", list: "a list", int: "an integer", float: "a number", type(None): "null"}


def _get(where: str, obj: Mapping[str, Any], key: str, kinds: tuple[type, ...], default: Any = _REQUIRED) -> Any:
    """obj[key] checked to be one of `kinds`; `default` when the key is absent (required without one)."""
    if key not in obj:
        if default is _REQUIRED:
            raise RecordError(f"{where}missing key {key!r}")
        return default
    value = obj[key]
    # bool is an int subclass, but true/false as an offset or score is always a producer bug
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(_KIND_NAMES[k] for k in kinds if not (k is int and float in kinds))
        raise RecordError(f"{where}{key!r} must be {names}, got {value!r}")
    return value


def _check_keys(where: str, obj: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise RecordError(f"{where}unknown {what} key(s) {', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(allowed)}")


def read_jsonl(path: str | Path, *, lang: str = "en") -> ReadResult:
    with open(path, encoding="utf-8-sig") as f:
        return parse_jsonl(f, source=str(path), lang=lang)


def parse_jsonl(lines: Iterable[str], *, source: str = "<string>", lang: str = "en") -> ReadResult:
    docs = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            docs.append(from_record(json.loads(line), lang=lang))
        except json.JSONDecodeError as e:
            raise DataError(source, lineno, f"invalid JSON: {e.msg} (column {e.pos + 1})") from None   # pos: the line alone
        except RecordError as e:
            raise DataError(source, lineno, str(e)) from None
    return ReadResult(docs)


def write_jsonl(docs: Iterable[Document], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(doc.to_json() + "\n")
