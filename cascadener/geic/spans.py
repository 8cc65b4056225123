"""The one in-memory shape for NER data: a text and its entities as character spans.

Offsets always index the original text (Python str indices, i.e. code points), end exclusive.
Everything downstream — markup, fusion, metrics, readers and writers — speaks this shape.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str = ""                # finest label; "" when only the boundary is known (extraction)
    path: tuple[str, ...] = ()     # hierarchy path, coarse -> fine; path[-1] == label when both are set
    score: float | None = field(default=None, compare=False)  # confidence, never part of identity

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end):
            raise ValueError(f"span [{self.start}, {self.end}) is empty or negative")
        if self.path and self.label and self.path[-1] != self.label:
            raise ValueError(f"span label {self.label!r} is not the last element of its path {self.path!r}")

    def surface(self, text: str) -> str:
        return text[self.start:self.end]

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass
class Document:
    text: str
    spans: list[Span] = field(default_factory=list)
    lang: str = "en"
    id: str = ""

    def __post_init__(self) -> None:
        for s in self.spans:
            if s.end > len(self.text):
                raise ValueError(f"document {self.id or '?'}: span [{s.start}, {s.end}) runs past the "
                                 f"end of a {len(self.text)}-character text")

    def mentions(self) -> list[tuple[str, Span]]:
        """(surface string, span) pairs in text order."""
        return [(s.surface(self.text), s) for s in sorted(self.spans)]

    def to_dict(self) -> dict[str, Any]:
        """The project's one JSON shape for a tagged document (JSONL files, ``infer.py --format json``)::

            {"text": "Le Guin wrote Earthsea .",
             "entities": [{"start": 0, "end": 7, "text": "Le Guin", "label": "author",
                           "path": ["person", "artist or author", "author"], "score": 0.93},
                          {"start": 14, "end": 22, "text": "Earthsea", "label": "book", "path": [], "score": null}],
             "id": "s1"}

        Entities come in text order, always with all six keys: character offsets (code points, end
        exclusive), the mention ``text``, ``label``, the hierarchy ``path`` (coarse to fine, possibly
        empty) and ``score`` (a float, or null). ``lang`` is written only when it is not ``en`` and
        ``id`` only when it is not empty, so plain English input gives exactly ``text`` and ``entities``.
        ``cascadener.data.jsonl.from_record`` reads it back (and checks it).
        """
        record: dict[str, Any] = {
            "text": self.text,
            "entities": [{"start": s.start, "end": s.end, "text": s.surface(self.text), "label": s.label,
                          "path": list(s.path), "score": None if s.score is None else float(s.score)}
                         for s in sorted(self.spans)]}
        if self.lang != "en":
            record["lang"] = self.lang
        if self.id:
            record["id"] = self.id
        return record

    def to_json(self, indent: int | None = None) -> str:
        """``to_dict`` as one JSON string (one line unless ``indent``), non-ASCII text kept as is."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)
