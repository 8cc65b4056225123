"""Split long texts into pieces a model can take, keeping the offsets of every piece.

A piece is at most `max_chars` characters, starts and ends with a character that is not white
space, and pieces are in text order without overlap; what lies between them is white space only.
So a piece is `text[start:end]`, and a span found in it maps back by adding `start`.

Where a cut goes, best first:

1. at sentence ends: . ! ? … (and any closing quotes or brackets) before white space, the CJK
   marks 。！？ (directly), blank lines. Sentences are packed greedily into pieces.
2. inside a sentence longer than `max_chars`: after a clause mark (, ; : before white space, or
   the CJK ，、；：) in the last half of the window, else at the last white space;
3. else (Chinese or Japanese with no mark near, one huge token): at the limit, moved back to the
   last grapheme-cluster boundary, so a character never loses its combining marks, an emoji
   sequence or a flag is never split, nor a surrogate pair or CR LF. Only a single cluster
   longer than the limit itself (thousands of combining marks) is cut between code points,
   never inside a surrogate pair.

An entity that straddles a cut is lost, which is why cuts prefer sentence and clause ends. Each
window is scanned a bounded number of times, so time is linear in the text's length.
"""
from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from typing import Sequence

_CLOSERS = re.escape("\"'”’»)]」』）")
_SENTENCE_END = re.compile(rf"[.!?…]+[{_CLOSERS}]*(?=\s)|[。！？]+[{_CLOSERS}]*|\n[^\S\n]*\n")
_CLAUSE_END = re.compile(rf"[,;:][{_CLOSERS}]*(?=\s)|[，、；：][{_CLOSERS}]*")

# Grapheme clusters (Unicode UAX #29), approximated from the safe side: `_joins` says "no cut
# here" for every pair the standard keeps together, and for a few it does not (a ZWJ followed by
# anything, a virama followed by any letter), which only costs a choice of cut.
_ZWJ = "\u200d"
_EXTEND_CATEGORIES = {"Mn", "Me", "Mc"}       # combining marks, and spacing marks (GB9a)
_JOINS_PREVIOUS = ((0x200C, 0x200D), (0xFF9E, 0xFF9F), (0x1F3FB, 0x1F3FF), (0xE0020, 0xE007F),  # more Extend
                   (0x0E33, 0x0E33), (0x0EB3, 0x0EB3),                                          # SpacingMark
                   (0x1160, 0x11FF), (0xD7B0, 0xD7FF))                                          # Hangul V, T
_JOINS_NEXT = ((0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2),
               (0x0D4E, 0x0D4E), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x111C2, 0x111C3),
               (0x1193F, 0x1193F), (0x11941, 0x11941), (0x11A3A, 0x11A3A), (0x11A84, 0x11A89),
               (0x11D46, 0x11D46), (0x11F02, 0x11F02),                                        # Prepend
               (0x1100, 0x115F), (0xA960, 0xA97F))                                            # Hangul L


def _in(ch: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    cp = ord(ch)
    return any(a <= cp <= b for a, b in ranges)


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _surrogate_pair(a: str, b: str) -> bool:
    return "\ud800" <= a <= "\udbff" and "\udc00" <= b <= "\udfff"


def _joins(a: str, b: str) -> bool:
    """True when no cut may go between the characters a and b (regional indicators aside: two of
    them pair up or not depending on how many came before, which `_hard_cut` counts)."""
    if (a == "\r" and b == "\n") or _surrogate_pair(a, b):
        return True
    if a in "\r\n" or b in "\r\n":
        return False                                     # controls break everywhere else
    if a == _ZWJ or _in(a, _JOINS_NEXT) or (unicodedata.combining(a) == 9 and b.isalpha()):
        return True
    return unicodedata.category(b) in _EXTEND_CATEGORIES or _in(b, _JOINS_PREVIOUS)


def _boundary(text: str, i: int) -> bool:
    """May a cut go before text[i]? (Regional indicator pairs are `_hard_cut`'s business.)"""
    return i <= 0 or i >= len(text) or not _joins(text[i - 1], text[i])


def _blank(text: str, i: int) -> bool:
    """White space that a cut may drop: not in one cluster with a visible neighbour (a space
    carrying a combining mark); CR LF is white space all through."""
    def glued(j: int) -> bool:
        return 0 <= j < len(text) and not text[j].isspace() and not _boundary(text, max(i, j))
    return text[i].isspace() and not glued(i - 1) and not glued(i + 1)


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and _blank(text, start):
        start += 1
    while end > start and _blank(text, end - 1):
        end -= 1
    return start, end


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, white space between sentences (and around the text) left out."""
    out, start = [], 0
    for cut in [m.end() for m in _SENTENCE_END.finditer(text) if _boundary(text, m.end())] + [len(text)]:
        s, e = _strip(text, start, cut)
        if s < e:
            out.append((s, e))
        start = cut
    return out


def _hard_cut(text: str, start: int, limit: int) -> int:
    """The last grapheme-cluster boundary in (start, limit]; failing that, the limit, or one
    before it when the limit would split a surrogate pair."""
    for i in range(limit, start, -1):
        if _boundary(text, i):
            run = i                          # regional indicators pair up from the start of their run
            while run > start and _regional(text[run - 1]):
                run -= 1
            if not ((i - run) % 2 and _regional(text[i])):
                return i
    return limit - 1 if _surrogate_pair(text[limit - 1], text[limit]) else limit


def _cut_point(text: str, start: int, limit: int) -> int:
    """Where the piece that starts at `start` ends, given that the text goes on past `limit`:
    a position in (start, limit] (see the module docstring for the order of preference)."""
    half = start + (limit - start) // 2
    # A Latin clause mark counts only before white space the cut can drop: before a space that
    # carries a combining mark it would leave two pieces with no gap, where a plain space would do.
    clause = [m.end() for m in _CLAUSE_END.finditer(text, half, limit + 1)
              if m.end() <= limit and _boundary(text, m.end())
              and (not text[m.end()].isspace() or _blank(text, m.end()))]      # m.end() <= limit < len(text)
    if clause:
        return clause[-1]
    for i in range(limit, start, -1):
        if _blank(text, i):
            while _blank(text, i - 1):   # text[start] is not blank, so this stops after start
                i -= 1
            return i
    return _hard_cut(text, start, limit)


def _cut(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    pieces = []
    while end - start > max_chars:
        stop = _cut_point(text, start, start + max_chars)
        pieces.append(_strip(text, start, stop))
        start, _ = _strip(text, stop, end)
    if end > start:
        pieces.append((start, end))
    return pieces


def segments(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) pieces of at most max_chars, in order, covering every
    character of text that is not white space between pieces."""
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2 (a surrogate pair is never split), got {max_chars}")
    out: list[tuple[int, int]] = []
    for s, e in sentences(text):
        if out and e - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], e)
        else:
            out.extend(_cut(text, s, e, max_chars))
    return out


def enclosing(pieces: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The smallest run of consecutive pieces (from `segments`) that covers [start, end): the
    piece itself for a span found inside one, a few pieces for a span that crosses a cut."""
    if not pieces:
        return start, end
    first = max(bisect_right(pieces, start, key=lambda p: p[0]) - 1, 0)
    last = min(max(bisect_left(pieces, end, key=lambda p: p[1]), first), len(pieces) - 1)
    return min(pieces[first][0], start), max(pieces[last][1], end)
