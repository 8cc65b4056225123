"""Views of tagged text for people and tools: terminal highlighting, an HTML page, CoNLL.

Everything here reads the shared `Document`/`Span` shape (character offsets, end exclusive). The stable
machine format, a JSON record, belongs to the document itself (`Document.to_dict`/`to_json`); the views
here are for reading and are free to change their looks.

The inline views (pretty, html, conll) show one label per character, so they need non-overlapping spans
and raise `RenderError` naming the first clashing pair otherwise.

A batch job's record that could not be tagged is a `Failure`; each view shows it in the record's place, in
the view's own form (an error line, an HTML notice, a CoNLL comment), so a reader sees what is missing.
"""
from __future__ import annotations

import hashlib
import html as _html
import os
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any, TextIO

from cascadener.data.conll import TokenizedDocument, document_rows
from cascadener.geic.spans import Document, Span


class RenderError(ValueError):
    pass


@dataclass(frozen=True)
class Failure:
    """An input record that could not be tagged: its 1-based input line, its id (if it had one) and why."""
    line: int
    message: str
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON error record that stands in a document's place: {"error", "line"[, "id"]}."""
        return {"error": self.message, "line": self.line} | ({"id": self.id} if self.id else {})

    def summary(self) -> str:
        """One line: `error line 5 (id x): why`; line breaks in the message become spaces."""
        where = f"line {self.line}" + (f" (id {self.id})" if self.id else "")
        return " ".join(f"error {where}: {self.message}".split())


# --------------------------------------------------------------------------------------------- colours

# Light backgrounds that keep dark text readable, ordered by hue. All are xterm-256 cube colours, so a
# terminal shows exactly the colours of the HTML page (256 colours work in more terminals than 24-bit).
PALETTE = ("#ff87af", "#ffaf87", "#d7af87", "#ffd75f", "#ffff87", "#afd75f", "#afffaf", "#87d7af",
           "#87ffff", "#afd7d7", "#87d7ff", "#afafff", "#af87ff", "#d787ff", "#ffd7ff", "#ffafd7")


def color_index(label: str) -> int:
    """Palette slot of a label. md5, unlike hash(), is the same in every process (no PYTHONHASHSEED).
    Chosen over crc32 and sha1 because with 16 slots it gives distinct colours to the usual small label
    sets (PER/ORG/LOC/MISC, person/organization/location/date/time/event/product) where they collide."""
    digest = hashlib.md5(label.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % len(PALETTE)


def label_color(label: str) -> str:
    return PALETTE[color_index(label)]


_CUBE = (0x00, 0x5f, 0x87, 0xaf, 0xd7, 0xff)   # channel levels of the xterm 6x6x6 colour cube


def xterm256(hex_color: str) -> int:
    """Index of a cube colour such as "#ff87af" in the xterm 256-colour table."""
    r, g, b = (_CUBE.index(int(hex_color[i:i + 2], 16)) for i in (1, 3, 5))
    return 16 + 36 * r + 6 * g + b


# --------------------------------------------------------------------------------------------- shared

def inline_spans(doc: Document) -> list[Span]:
    """Spans in text order, checked to be non-overlapping (inline views can show one label per char)."""
    spans = sorted(doc.spans)
    for a, b in zip(spans, spans[1:]):
        if a.overlaps(b):
            raise RenderError(f"document {doc.id or '?'}: spans [{a.start}, {a.end}) {a.label!r} "
                              f"{a.surface(doc.text)!r} and [{b.start}, {b.end}) {b.label!r} "
                              f"{b.surface(doc.text)!r} overlap; inline views need non-overlapping spans")
    return spans


def _segments(doc: Document) -> Iterator[tuple[str, Span | None]]:
    """The text cut into consecutive (piece, span) parts; span is None for untagged text."""
    pos = 0
    for span in inline_spans(doc):
        if span.start > pos:
            yield doc.text[pos:span.start], None
        yield span.surface(doc.text), span
        pos = span.end
    if pos < len(doc.text):
        yield doc.text[pos:], None


# --------------------------------------------------------------------------------------------- terminal

RESET = "\x1b[0m"


def wants_color(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set to anything (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and getattr(stream, "isatty", lambda: False)()


def _tag_text(span: Span) -> str:
    """What follows a mention: its label, then the score with two decimals when there is one."""
    score = "" if span.score is None else f"{span.score:.2f}"
    return " ".join(part for part in (span.label, score) if part)


def _printable(text: str) -> str:
    """Control characters other than newline and tab become U+FFFD: raw ESC or CR in user text would
    otherwise drive the terminal (recolour, overwrite lines) instead of being shown."""
    return "".join("\ufffd" if unicodedata.category(c) == "Cc" and c not in "\n\t" else c for c in text)


def pretty_failure(failure: Failure, color: bool) -> str:
    """The failure's one-line summary, in bold red on a terminal."""
    text = _printable(failure.summary())
    return f"\x1b[1;31m{text}{RESET}" if color else text


def pretty(doc: Document, color: bool) -> str:
    """The text with entities marked inline: `[Kobe Bryant]person 0.97` when `color` is false, otherwise
    the mention and its tag on the label's background colour (xterm-256 escapes)."""
    return "".join(_printable(piece) if span is None else _pretty_mention(_printable(piece), span, color)
                   for piece, span in _segments(doc))


def _pretty_mention(mention: str, span: Span, color: bool) -> str:
    tag = _printable(_tag_text(span))
    if not color:
        return f"[{mention}]{tag}"
    style = f"\x1b[48;5;{xterm256(label_color(span.label))}m\x1b[38;5;16m"
    # Reset around newlines: many terminals paint a background that is active at a line break to the
    # right edge of the window.
    body = mention.replace("\n", f"{RESET}\n{style}")
    return f"{style}{body}" + (f" \x1b[1m{tag}" if tag else "") + RESET


# --------------------------------------------------------------------------------------------- HTML

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#1f2328;
 font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC","PingFang SC",
 "Hiragino Sans","Microsoft YaHei",sans-serif}
header{background:#fff;border-bottom:1px solid #e3e6ea;padding:20px max(24px,calc(50% - 456px))}
h1{margin:0 0 4px;font-size:22px;font-weight:650}
.summary{margin:0 0 12px;color:#656d76;font-size:14px}
.legend{display:flex;flex-wrap:wrap;gap:8px;margin:0;padding:0;list-style:none}
.legend li{display:inline-flex;align-items:center;gap:6px;padding:2px 10px 2px 4px;border-radius:999px;
 background:#fff;border:1px solid #e3e6ea;font-size:13px}
.legend .swatch{padding:1px 8px;border-radius:999px;font-weight:600}
.legend .count{color:#656d76}
main{max-width:960px;margin:24px auto;padding:0 24px}
article{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:16px 24px 20px;margin:0 0 16px;
 box-shadow:0 1px 2px rgba(31,35,40,.06)}
h2{margin:0 0 4px;font:600 12px/1.5 ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;color:#8c959f}
.text{margin:0;font-size:18px;line-height:2.5;white-space:pre-wrap;overflow-wrap:anywhere}
mark{color:inherit;padding:.25em .45em;margin:0 .1em;border-radius:.4em;line-height:1;
 -webkit-box-decoration-break:clone;box-decoration-break:clone}
.tag{margin-left:.5em;font-size:.62em;font-weight:700;letter-spacing:.03em;text-transform:uppercase;
 vertical-align:middle;opacity:.8}
.score{margin-left:.4em;font-size:.62em;font-variant-numeric:tabular-nums;vertical-align:middle;opacity:.65}
.empty{color:#8c959f;font-style:italic}
.failed{border-color:#ff8182;background:#fff5f5}
.failed .text{color:#a40e26;font-size:15px;line-height:1.5}
"""


_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<header>
<h1>$title</h1>
<p class="summary">$summary</p>
$legend
</header>
<main>
$articles</main>
</body>
</html>
""")
_EMPTY_TEXT = '<span class="empty">(empty text)</span>'


def _color_css() -> str:
    return "".join(f".c{i}{{background:{color}}}\n" for i, color in enumerate(PALETTE))


def _esc(text: str) -> str:
    return _html.escape(text, quote=True)


def html(docs: Sequence[Document | Failure], title: str = "CascadeNER") -> str:
    """One self-contained page (inline CSS, no scripts or external resources): a legend of the labels
    with their colours and counts, then every document with its entities in coloured boxes, and a
    red notice in the place of each failure."""
    articles = "".join(_html_failure(d) if isinstance(d, Failure) else _html_document(d, n)
                       for n, d in enumerate(docs, 1))   # validates all first
    tagged = [d for d in docs if isinstance(d, Document)]
    labels = Counter(s.label for doc in tagged for s in doc.spans)
    summary = f"{_count(len(tagged), 'document')} · {_count(sum(labels.values()), 'entity', 'entities')}"
    if len(tagged) < len(docs):
        summary += f" · {_count(len(docs) - len(tagged), 'error')}"
    return _PAGE.substitute(title=_esc(title), css=_CSS + _color_css(), summary=summary, legend=_legend(labels),
                            articles=articles or '<p class="empty">No documents.</p>\n')


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _legend(labels: Counter[str]) -> str:
    items = "".join(f'<li><span class="swatch c{color_index(label)}">{_esc(label or "(unlabelled)")}</span>'
                    f'<span class="count">{count}</span></li>' for label, count in sorted(labels.items()))
    return f'<ul class="legend">{items}</ul>'


def _html_document(doc: Document, n: int) -> str:
    body = "".join(_esc(piece) if span is None else _html_mention(piece, span) for piece, span in _segments(doc))
    # The lang attribute lets the browser pick Chinese vs Japanese glyph shapes for unified Han characters.
    return (f'<article lang="{_esc(doc.lang)}">\n<h2>{_esc(doc.id or f"#{n}")}</h2>\n'
            f'<p class="text">{body or _EMPTY_TEXT}</p>\n</article>\n')


def _html_failure(failure: Failure) -> str:
    head = f"line {failure.line}" + (f" · {failure.id}" if failure.id else "")
    return (f'<article class="failed">\n<h2>{_esc(head)}</h2>\n'
            f'<p class="text">{_esc(failure.summary())}</p>\n</article>\n')


def _html_mention(mention: str, span: Span) -> str:
    # Hover shows what the box has no room for: the full hierarchy path and the unrounded score.
    lines = [" › ".join(span.path) or span.label, "" if span.score is None else f"score {span.score:.4f}"]
    tooltip = "\n".join(line for line in lines if line)
    tag = f'<span class="tag">{_esc(span.label)}</span>' if span.label else ""
    score = "" if span.score is None else f'<span class="score">{span.score:.2f}</span>'
    return f'<mark class="c{color_index(span.label)}" title="{_esc(tooltip)}">{_esc(mention)}{tag}{score}</mark>'


# --------------------------------------------------------------------------------------------- CoNLL

def conll(doc: Document, tokens: Sequence[tuple[int, int]] | None = None) -> str:
    """`token<TAB>tag` lines in IOB2 and a blank line: the rows `cascadener.data.write_conll` writes for the
    document (one sentence per document), so the view reads back with `read_conll`.

    tokens: (start, end) character offsets in text order. When None, the data layer's tokenization:
    whitespace-separated words (one token per character for zh/ja, a whitespace character written `#`),
    also cut at every entity boundary so no entity starts or ends inside a token. Given tokens that cut
    through an entity widen it to whole tokens, and an entity covering no token is left out. Every entity
    needs a label without tabs or line breaks, or `RenderError` is raised.
    """
    spans = inline_spans(doc)
    try:
        if tokens is not None:
            if not tokens:
                return ""
            doc = TokenizedDocument(doc.text, spans, lang=doc.lang, id=doc.id, tokens=list(tokens))
        rows, _ = document_rows(doc)   # problems: only widened or token-less entities, documented above
    except ValueError as e:
        raise RenderError(str(e)) from None
    return "".join(f"{token}\t{tag}\n" for token, tag in rows) + "\n" if rows else ""


def conll_failure(failure: Failure) -> str:
    """A comment line where the failed record's sentence would be (CoNLL readers skip `#` lines)."""
    return f"# {failure.summary()}\n\n"
