"""The one in-memory shape for NER data: a text and its entities as character spans.

Offsets always index the original text (Python str indices, i.e. code points), end exclusive.
Everything downstream — markup, fusion, metrics, readers and writers — speaks this shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
