"""The GEIC extraction format: the sentence copied back with every entity wrapped in `##`.

    render("Kobe was in NBA", spans)  ->  "##Kobe## was in ##NBA##"

`parse` goes the other way for what a small model actually writes. The model is asked to copy the
sentence, but it may change white space or case, drop or add a word, leave a `##` unbalanced, put
marks inside a word, or repeat a name. So marks are never located with `str.find` (which always
returns the first occurrence); instead the output, with its marks removed, is aligned character by
character to the source (an optimal alignment, not a greedy diff), and every mention lands on the
source characters its own characters aligned to.

Escaping. The paper's format has no escape, and a text containing `#` makes it ambiguous: for the
text "C#", "##C###" is both the span "C" and the span "C#". The rule here:

* a text without `#` renders exactly as in the paper (these are the authors' training targets);
* a text with at least one `#` renders in escaped form: `\\` is written `\\\\` and `#` is written `\\#`,
  so every `##` left in the output is a mark.

`parse` knows the source, so it picks the mode from the source alone, and
`parse(text, render(text, spans)).spans == spans` holds for every text and every set of
non-overlapping, non-empty, white-space-trimmed spans. An escaped-mode parse still reads unescaped
model output sensibly: a lone `#` is text and only `##` is a mark.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from cascadener.geic.spans import Span

MARK = "##"
# A mention is aligned only if some run of at least this many of its visible characters (or all of
# them, if it is shorter) matched consecutively. Inside text the model rewrote, an alignment still
# pairs up stray single letters ("Barack" vs "Obama" share an "a"); such coincidences must not become spans.
MIN_RUN = 3


@dataclass(frozen=True)
class ParseResult:
    spans: list[Span]   # in text order, non-overlapping, trimmed, unlabelled
    dropped: int        # marked mentions that were empty or could not be aligned to the source
    unpaired: int       # marks left without a partner (an odd count) and ignored
    faithful: bool      # the output is exactly the source plus paired marks: nothing changed or lost


def escaped(text: str) -> bool:
    """Whether `text` is rendered in escaped form (see the module docstring)."""
    return "#" in text


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("#", "\\#")


def render(text: str, spans: Iterable[Span]) -> str:
    """`text` with each span wrapped in `##`; labels are ignored. Spans must not overlap."""
    esc = _escape if escaped(text) else (lambda s: s)
    out, pos = [], 0
    for s in sorted(spans):
        if s.start < pos:
            raise ValueError(f"span [{s.start}, {s.end}) overlaps the previous span")
        if s.end > len(text):
            raise ValueError(f"span [{s.start}, {s.end}) runs past a {len(text)}-character text")
        out += [esc(text[pos:s.start]), MARK, esc(text[s.start:s.end]), MARK]
        pos = s.end
    out.append(esc(text[pos:]))
    return "".join(out)


def _read(output: str, escape: bool) -> tuple[str, list[int]]:
    """Split model output into its text (marks removed, escapes undone) and the mark positions,
    each given as the number of text characters before it. A lone `#` is text; `##` is a mark."""
    chars: list[str] = []
    marks: list[int] = []
    i = 0
    while i < len(output):
        c, nxt = output[i], output[i + 1:i + 2]
        if escape and c == "\\" and nxt in ("\\", "#"):
            chars.append(nxt)
            i += 2
        elif c == "#" and nxt == "#":
            marks.append(len(chars))
            i += 2
        else:
            chars.append(c)
            i += 1
    return "".join(chars), marks


def _fits(text: str, pos: int, opening: bool) -> bool:
    """Does a mark at `pos` look like an opening (or closing) mark? Used only to choose which
    mark of an odd count to ignore: an opening mark starts a word, a closing one ends a word."""
    prev, nxt = text[pos - 1:pos], text[pos:pos + 1]
    inner, outer = (nxt, prev) if opening else (prev, nxt)
    return bool(inner) and not inner.isspace() and not outer.isalnum()


def _pair(text: str, marks: list[int]) -> tuple[list[tuple[int, int]], int]:
    """Pair marks into (open, close) ranges of `text`; returns the pairs and the unpaired count.

    An even count alternates open/close with no guessing, so every rendered output pairs exactly
    as it was written. An odd count has one mark too many: drop the one whose removal lets the
    most remaining marks sit where an opening/closing mark would (ties: the later mark, since an
    unclosed last mention is the common failure).
    """
    unpaired = len(marks) % 2
    if unpaired:
        n = len(marks)
        # before[k]: fitting marks among marks[:k] in their own roles; after[k]: among marks[k+1:]
        # with roles shifted by one, as happens when mark k is removed.
        before = [0] * (n + 1)
        for i, p in enumerate(marks):
            before[i + 1] = before[i] + _fits(text, p, opening=i % 2 == 0)
        after = [0] * (n + 1)
        for i in range(n - 1, -1, -1):
            after[i] = after[i + 1] + _fits(text, marks[i], opening=(i - 1) % 2 == 0)
        drop = max(range(n), key=lambda k: (before[k] + after[k + 1], k))
        marks = marks[:drop] + marks[drop + 1:]
    return list(zip(marks[::2], marks[1::2])), unpaired


def _fold(text: str) -> str:
    """Per-character case and white-space folding that keeps the length (so indices carry over)."""
    def one(c: str) -> str:
        if c.isspace():
            return " "
        low = c.lower()
        return low if len(low) == 1 else c
    return "".join(map(one, text))


def _suffix_costs(a: str, b: str, lo: int, hi: int) -> list[list[int]]:
    """cost[i][k - lo]: fewest insertions + deletions turning a[i:] into b[i + k:], for the
    diagonals lo <= k <= hi only; cells off that band (or off the table) stay unreachable."""
    n, m, inf = len(a), len(b), len(a) + len(b) + 1
    width = hi - lo + 1
    cost = [[inf] * (width + 1) for _ in range(n + 1)]   # one spare column stays inf
    for i in range(n, -1, -1):
        row, below = cost[i], cost[i + 1] if i < n else None
        for k in range(hi, lo - 1, -1):
            j = i + k
            if not 0 <= j <= m:
                continue
            if i == n or j == m:
                row[k - lo] = (m - j) + (n - i)
                continue
            best = row[k - lo + 1] + 1                           # skip b[j]
            best = min(best, below[k - lo - 1] + 1 if k > lo else inf)   # skip a[i]
            if a[i] == b[j]:
                best = min(best, below[k - lo])                  # match
            row[k - lo] = best
    return cost


def _align(out: str, src: str) -> list[int]:
    """For each character of `out`, the index of the source character it aligned to, or -1.

    An optimal alignment (most characters matched, i.e. fewest insertions and deletions),
    ignoring case and the kind of white space, with ties going to the earliest match. It is
    global, not greedy: a diff that grabs the longest common block first can shift a repeated
    name onto its neighbour once white space changes ("a a  a" vs "a a a"). The map is strictly
    increasing over aligned characters, which keeps mentions in order and non-overlapping.

    Banded for speed: an alignment of cost d never leaves the diagonals within d of the corner
    diagonals, so the band grows until the best cost found fits inside it (exact, and about
    O(len * edits) when the model copied faithfully).
    """
    a, b = _fold(out), _fold(src)
    n, m = len(a), len(b)
    if a == b:
        return list(range(n))
    budget = max(16, abs(n - m))
    while True:
        spare = (budget - abs(n - m)) // 2
        lo, hi = min(0, m - n) - spare, max(0, m - n) + spare
        cost = _suffix_costs(a, b, lo, hi)
        if cost[0][-lo] <= budget or (lo <= -n and hi >= m):
            break
        budget *= 2
    to_src = [-1] * n
    i = j = 0
    while i < n and j < m:
        here = cost[i][j - i - lo]
        if a[i] == b[j] and here == cost[i + 1][j - i - lo]:
            to_src[i] = j
            i, j = i + 1, j + 1
        elif j - i - 1 >= lo and here == cost[i + 1][j - i - 1 - lo] + 1:
            i += 1            # an output character the source lacks
        else:
            j += 1            # a source character the output dropped
    return to_src


def _longest_run(out: str, src: str, to_src: list[int], a: int, b: int) -> int:
    """Longest run of visible characters of out[a:b] aligned in a row (white space, which models
    change freely, neither counts nor breaks a run)."""
    best = run = 0
    prev = -1   # source index of the previous visible character, if it aligned
    for i in range(a, b):
        if out[i].isspace():
            continue
        j = to_src[i]
        run = 0 if j < 0 else run + 1 if prev >= 0 and not src[prev + 1:j].strip() else 1
        prev, best = j, max(best, run)
    return best


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def parse(source_text: str, model_output: str) -> ParseResult:
    """Spans of `source_text` marked in `model_output`.

    Each pair of marks becomes a span from the first to the last of its characters that aligned to
    the source, trimmed of white space. A mention with no such characters (or only a coincidental
    scrap, see MIN_RUN) is dropped and counted.
    """
    out, marks = _read(model_output, escaped(source_text))
    pairs, unpaired = _pair(out, marks)
    to_src = _align(out, source_text)
    spans, dropped = [], 0
    for a, b in pairs:
        hits = [to_src[i] for i in range(a, b) if to_src[i] >= 0]
        visible = sum(not c.isspace() for c in out[a:b])
        if not hits or _longest_run(out, source_text, to_src, a, b) < min(MIN_RUN, visible):
            dropped += 1
            continue
        start, end = _trim(source_text, hits[0], hits[-1] + 1)
        if start == end:
            dropped += 1
            continue
        spans.append(Span(start, end))
    return ParseResult(spans, dropped, unpaired, out == source_text and not unpaired and not dropped)
