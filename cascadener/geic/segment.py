"""Split long texts into pieces a model can take, keeping the offsets of every piece.

Sentences end at . ! ? (followed by white space) or at the CJK marks 。！？ (directly); pieces are
packed greedily up to `max_chars`; a single sentence longer than that is cut at the last white
space before the limit, or hard at the limit when it has none (CJK). An entity that straddles a
cut is lost, which is why cuts prefer sentence ends.
"""
from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, white space between sentences left out."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            out.append((start, m.start()))
        start = m.end()
    if start < len(text):
        out.append((start, len(text)))
    return out


def _cut(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    pieces = []
    while end - start > max_chars:
        space = text.rfind(" ", start + 1, start + max_chars + 1)
        cut = space if space > start else start + max_chars
        pieces.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces


def segments(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) pieces of at most max_chars covering every sentence of text."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    out: list[tuple[int, int]] = []
    for s, e in sentences(text):
        if out and e - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], e)
        else:
            out.extend(_cut(text, s, e, max_chars))
    return out
