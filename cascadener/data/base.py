"""What every reader and writer shares: the error type, the problem record, the read result."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cascadener.geic.spans import Document


class DataError(ValueError):
    """Malformed input, located: ``str(err)`` reads ``file.txt:123: unknown tag 'X-FOO'``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


def not_utf8(path: str | Path) -> DataError:
    """The first line of `path` that is not UTF-8, as an error to raise (read again as bytes, which
    only the error path pays for)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(str(path), lineno, f"not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at "
                                                    f"column {e.start + 1}); save the file as UTF-8")
    return DataError(str(path), None, "not UTF-8 text; save the file as UTF-8")


class Problem(NamedTuple):
    """An entity a reader or writer could not carry over as is (not an error: the rest of the file is fine).

    ``where`` locates it (``file:line`` for column files, the record key for GEIC JSON, the document
    id for writers), ``mention`` is its surface string, ``reason`` says what happened to it.
    """
    where: str
    mention: str
    reason: str


@dataclass
class ReadResult:
    """Documents from one file, plus what the reader had to do to get them.

    ``repaired`` lists entities that were kept but were not well-formed in the file's scheme
    (e.g. ``I-PER`` after ``O`` in an IOB2 file, decoded leniently). ``dropped`` lists entities that
    could not be placed at all (e.g. a GEIC mention that is not a substring of its sentence).
    ``scheme`` is the tag scheme of a column file (given or detected), None for other formats.
    """
    documents: list[Document]
    scheme: str | None = None
    repaired: list[Problem] = field(default_factory=list)
    dropped: list[Problem] = field(default_factory=list)
