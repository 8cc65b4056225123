"""The project's own JSONL: one document per line, entities as character offsets (lossless).

    {"text": "Le Guin wrote ...", "entities": [{"start": 0, "end": 7, "label": "author",
     "path": ["person", "artist or author", "author"], "score": 0.93}], "lang": "en", "id": "s1"}

``text`` is required; ``entities`` (default ``[]``), ``lang`` (default: the reader's ``lang``) and
``id`` are optional, and so are each entity's ``label``, ``path`` and ``score``. Unknown keys are
errors rather than ignored, so that a typo such as ``"entites"`` cannot silently empty a file.
Blank lines are skipped. Errors name the file and line.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..geic.spans import Document, Span
from .base import DataError, ReadResult

_DOC_KEYS = {"text", "entities", "lang", "id"}
_SPAN_KEYS = {"start", "end", "label", "path", "score"}


def read_jsonl(path: str | Path, *, lang: str = "en") -> ReadResult:
    with open(path, encoding="utf-8") as f:
        return parse_jsonl(f, source=str(path), lang=lang)


def parse_jsonl(lines: Iterable[str], *, source: str = "<string>", lang: str = "en") -> ReadResult:
    docs = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            docs.append(document_from_json(json.loads(line), lang))
        except json.JSONDecodeError as e:
            raise DataError(source, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
        except (TypeError, ValueError) as e:
            raise DataError(source, lineno, str(e)) from None
    return ReadResult(docs)


def document_from_json(obj: Any, lang: str = "en") -> Document:
    """One JSONL record -> Document; TypeError/ValueError say what is wrong."""
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
    _no_unknown_keys(obj, _DOC_KEYS, "document")
    text = obj.get("text")
    if not isinstance(text, str):
        raise TypeError("'text' must be a string")
    entities = obj.get("entities", [])
    if not isinstance(entities, list):
        raise TypeError("'entities' must be a list")
    return Document(text, [_span_from_json(e) for e in entities],
                    lang=_typed(obj, "lang", str, lang), id=_typed(obj, "id", str, ""))


def _span_from_json(obj: Any) -> Span:
    if not isinstance(obj, dict):
        raise TypeError(f"an entity must be an object, got {type(obj).__name__}")
    _no_unknown_keys(obj, _SPAN_KEYS, "entity")
    start, end = obj.get("start"), obj.get("end")
    if type(start) is not int or type(end) is not int:    # bool is an int subclass: exclude it
        raise TypeError(f"entity start/end must be integers, got {start!r}, {end!r}")
    path = _typed(obj, "path", list, [])
    if not all(isinstance(p, str) for p in path):
        raise TypeError("entity 'path' must be a list of strings")
    score = obj.get("score")
    if score is not None and type(score) not in (int, float):   # not bool
        raise TypeError(f"entity 'score' must be a number, got {score!r}")
    return Span(start, end, _typed(obj, "label", str, ""), tuple(path), score)


def _typed(obj: dict, key: str, kind: type, default: Any) -> Any:
    value = obj.get(key, default)
    if not isinstance(value, kind):
        raise TypeError(f"{key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _no_unknown_keys(obj: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} key(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def document_to_json(doc: Document) -> dict[str, Any]:
    entities = []
    for s in sorted(doc.spans):
        entity: dict[str, Any] = {"start": s.start, "end": s.end, "label": s.label}
        if s.path:
            entity["path"] = list(s.path)
        if s.score is not None:
            entity["score"] = s.score
        entities.append(entity)
    out: dict[str, Any] = {"text": doc.text, "entities": entities, "lang": doc.lang}
    if doc.id:
        out["id"] = doc.id
    return out


def write_jsonl(docs: Iterable[Document], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(document_to_json(doc), ensure_ascii=False) + "\n")
