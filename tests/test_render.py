"""Views of tagged text: terminal highlighting, the HTML page (also screenshotted with headless Chromium)
and IOB2 CoNLL. The JSON record schema lives in the data layer and is tested in test_data_jsonl.py."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cascadener.data import write_conll
from cascadener.data.conll import parse_conll
from cascadener.data.jsonl import from_record
from cascadener.geic.spans import Document, Span
from cascadener.ner.render import (PALETTE, RESET, RenderError, color_index, conll, html, label_color, pretty,
                               wants_color, xterm256)

FIXTURES = Path(__file__).parent / "fixtures" / "render"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tag(text: str, *mentions: tuple, lang: str = "en", id: str = "") -> Document:
    """A document from (surface, label[, path[, score]]) tuples, each found after the previous one."""
    spans, pos = [], 0
    for surface, label, *rest in mentions:
        start = text.index(surface, pos)
        pos = start + len(surface)
        spans.append(Span(start, pos, label, *rest))
    return Document(text, spans, lang=lang, id=id)


@pytest.fixture
def docs() -> list[Document]:
    """English with hierarchy paths, hostile text (<script>, &, a newline, an emoji flag), Chinese, Japanese."""
    return [from_record(r) for r in json.loads((FIXTURES / "documents.json").read_text(encoding="utf-8"))]


KOBE = tag("Kobe Bryant played for the Lakers.", ("Kobe Bryant", "person", ("agent", "person"), 0.97),
           ("Lakers", "organization"))

# --------------------------------------------------------------------------------------------- colours


def test_colors_are_pinned():
    """Pinned values: str hash() is salted per process (PYTHONHASHSEED), so a colour derived from it would
    fail here in almost every run; and users should see the same colour for a label across releases."""
    assert {label: label_color(label) for label in ["person", "organization", "location", "sports team", "地名", ""]} == {
        "person": "#afafff", "organization": "#87ffff", "location": "#ffaf87", "sports team": "#afffaf",
        "地名": "#ffff87", "": "#ffff87"}


def test_palette_is_the_terminal_palette():
    """Every colour is an xterm-256 cube colour, so terminal and page agree, and no two share an index."""
    indices = [xterm256(c) for c in PALETTE]
    assert len(set(PALETTE)) == len(set(indices)) == len(PALETTE)
    assert xterm256("#ff87af") == 211 and xterm256("#000000") == 16 and xterm256("#ffffff") == 231


@pytest.mark.parametrize("labels", [["PER", "ORG", "LOC", "MISC"], ["person", "organization", "location", "misc"],
                                    ["person", "organization", "location", "date", "time", "event", "product"]])
def test_common_label_sets_get_distinct_colors(labels):
    assert len({color_index(label) for label in labels}) == len(labels)

# --------------------------------------------------------------------------------------------- overlaps


@pytest.mark.parametrize("spans", [[Span(0, 8, "location"), Span(4, 13, "location")],    # crossing
                                   [Span(0, 8, "city"), Span(0, 13, "city")],            # nested
                                   [Span(0, 8, "city"), Span(0, 8, "city", score=0.5)]])  # duplicate
@pytest.mark.parametrize("view", [lambda d: pretty(d, False), lambda d: html([d]), conll])
def test_inline_views_reject_overlapping_spans(spans, view):
    with pytest.raises(RenderError, match=r"doc-7: spans \[0, 8\) .*'New York' and .* overlap"):
        view(Document("New York City", spans, id="doc-7"))

# --------------------------------------------------------------------------------------------- pretty


def test_pretty_plain():
    assert pretty(KOBE, color=False) == "[Kobe Bryant]person 0.97 played for the [Lakers]organization."


def test_pretty_color():
    out = pretty(KOBE, color=True)
    person, org = (f"\x1b[48;5;{xterm256(label_color(label))}m" for label in ("person", "organization"))
    assert out.startswith(f"{person}\x1b[38;5;16mKobe Bryant \x1b[1mperson 0.97{RESET} played")
    assert f"{org}\x1b[38;5;16mLakers \x1b[1morganization{RESET}." in out
    assert ANSI.sub("", out) == "Kobe Bryant person 0.97 played for the Lakers organization."


def test_pretty_cjk_emoji_newlines_and_control_characters():
    doc = tag("我爱北京🏀\nNew\nYork \x1b[31mred\r", ("北京🏀", "地点", (), 0.5), ("New\nYork", "city"))
    assert pretty(doc, color=False) == "我爱[北京🏀]地点 0.50\n[New\nYork]city \ufffd[31mred\ufffd"
    colored = pretty(doc, color=True)
    # no background is active at a line break; the text's own ESC shows as U+FFFD, never reaching the terminal
    assert all(line.endswith(RESET) or "\x1b" not in line for line in colored.split("\n")[:-1])
    assert ANSI.sub("", colored) == "我爱北京🏀 地点 0.50\nNew\nYork city \ufffd[31mred\ufffd"


def test_pretty_unlabelled_span():
    assert pretty(tag("Kobe played", ("Kobe", "")), color=False) == "[Kobe] played"


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_wants_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wants_color(_Stream(True)) and not wants_color(_Stream(False))
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_color(_Stream(True))

# --------------------------------------------------------------------------------------------- HTML


class _Page(HTMLParser):
    """Collects what a reader sees: per article its lang and text, and every entity box."""

    def __init__(self):
        super().__init__()
        self.articles: list[dict] = []
        self.tags: list[str] = []          # open elements, with their class
        self.marks: list[dict] = []
        self.legend: dict[str, str] = {}   # label -> class

    def handle_starttag(self, name, attrs):
        if name == "meta":   # void element: never closed
            return
        attrs = dict(attrs)
        self.tags.append(f"{name}.{attrs.get('class', '')}")
        if name == "article":
            self.articles.append({"lang": attrs["lang"], "text": ""})
        elif name == "mark":
            self.marks.append({"class": attrs["class"], "title": attrs["title"], "text": "", "tag": ""})

    def handle_endtag(self, name):
        self.tags.pop()

    def handle_data(self, data):
        where = self.tags[-1] if self.tags else ""
        if where.startswith("span.swatch"):
            self.legend[data] = where.split(" ")[-1]
        elif where == "span.tag":
            self.marks[-1]["tag"] = data
        elif "p.text" in self.tags and where != "span.score":
            self.articles[-1]["text"] += data
            if where.startswith("mark."):
                self.marks[-1]["text"] += data


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.tags == [], "unbalanced tags"
    return parser


def test_html_shows_every_text_and_entity(docs):
    page = parse(html(docs))
    assert [(a["lang"], a["text"]) for a in page.articles] == [(d.lang, d.text) for d in docs]
    spans = [s for d in docs for s in sorted(d.spans)]
    surfaces = [s.surface(d.text) for d in docs for s in sorted(d.spans)]
    assert [m["text"] for m in page.marks] == surfaces
    assert [m["tag"] for m in page.marks] == [s.label for s in spans]
    assert [m["class"] for m in page.marks] == [f"c{color_index(s.label)}" for s in spans]
    assert page.legend == {s.label: f"c{color_index(s.label)}" for s in spans}


def test_html_tooltip_has_path_and_score(docs):
    kobe = parse(html(docs)).marks[0]
    assert kobe["title"] == "agent › person\nscore 0.9730"


def test_html_escapes_text_labels_ids_and_title():
    evil = "<script>alert('&')</script>"
    doc = tag(f"{evil} met \"Bob\" & co", ("\"Bob\"", evil, (), 0.5), id=evil, lang='en"><script>')
    page = html([doc], title=evil)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;&amp;&#x27;)&lt;/script&gt;" in page
    parsed = parse(page)
    assert parsed.articles == [{"lang": 'en"><script>', "text": doc.text}]
    assert parsed.marks[0]["tag"] == evil and parsed.marks[0]["title"] == f"{evil}\nscore 0.5000"


def test_html_is_self_contained(docs):
    page = html(docs).lower()
    for needle in ("<script", "<link", "src=", "url(", "@import", "http:", "https:"):
        assert needle not in page
    for color in PALETTE:   # every colour class is defined inline
        assert color in page


def test_html_empty_inputs():
    assert '<p class="empty">No documents.</p>' in html([])
    assert parse(html([Document("")])).articles == [{"lang": "en", "text": "(empty text)"}]

# --------------------------------------------------------------------------------------------- CoNLL


def test_conll_english_tokens_are_cut_at_entity_boundaries():
    doc = tag("Yesterday (Kobe Bryant), the Lakers' star, scored.",
              ("Kobe Bryant", "person"), ("Lakers", "organization"))
    assert conll(doc) == ("Yesterday\tO\n(\tO\nKobe\tB-person\nBryant\tI-person\n),\tO\nthe\tO\n"
                          "Lakers\tB-organization\n'\tO\nstar,\tO\nscored.\tO\n\n")


def test_conll_chinese_one_token_per_character():
    doc = tag("我爱北京天安门。\n李白 是诗人。", ("北京天安门", "地点"), ("李白", "person"), lang="zh-CN")
    # whitespace characters are tokens too, written "#" as in WikiANN zh/ja, so offsets stay one token a character
    assert conll(doc) == ("我\tO\n爱\tO\n北\tB-地点\n京\tI-地点\n天\tI-地点\n安\tI-地点\n门\tI-地点\n。\tO\n#\tO\n"
                          "李\tB-person\n白\tI-person\n#\tO\n是\tO\n诗\tO\n人\tO\n。\tO\n\n")


def test_conll_one_sentence_per_document_even_across_newlines():
    doc = tag("Hi.\nNew\nYork is big.\n\nBye", ("New\nYork", "city"))
    assert conll(doc) == "Hi.\tO\nNew\tB-city\nYork\tI-city\nis\tO\nbig.\tO\nBye\tO\n\n"


def test_conll_adjacent_entities_in_one_word_stay_apart():
    doc = tag("Apple/Google Inc rose", ("Apple", "org"), ("Google Inc", "org"))
    assert conll(doc) == "Apple\tB-org\n/\tO\nGoogle\tB-org\nInc\tI-org\nrose\tO\n\n"


def test_conll_labels_keep_spaces_but_every_entity_needs_a_label():
    assert conll(tag("the LA Lakers won", ("LA Lakers", "sports team"))) == \
        "the\tO\nLA\tB-sports team\nLakers\tI-sports team\nwon\tO\n\n"
    for label in ("", "a\tb"):
        with pytest.raises(RenderError, match="column file cannot hold"):
            conll(tag("the LA Lakers won", ("won", label)))


def test_conll_given_tokens():
    doc = tag("New York-based", ("New York", "city"))
    assert conll(doc, tokens=[(0, 8), (8, 9), (9, 14)]) == "New York\tB-city\n-\tO\nbased\tO\n\n"
    # a token cutting through an entity takes the whole token; an entity covering no token is left out
    assert conll(doc, tokens=[(0, 3), (4, 14)]) == "New\tB-city\nYork-based\tI-city\n\n"
    assert conll(doc, tokens=[(9, 14)]) == "based\tO\n\n"
    assert conll(doc, tokens=[]) == ""
    for bad in ([(0, 3), (2, 8)], [(4, 8), (0, 3)], [(0, 0)], [(9, 15)]):
        with pytest.raises(RenderError, match="token"):
            conll(doc, tokens=bad)


def test_conll_empty_text():
    assert conll(Document(" \n ")) == ""


def test_conll_is_what_the_data_layer_writes_and_reads_back(docs, tmp_path):
    """One rule for tokens and tags: the view is write_conll's output, and read_conll gets the entities back."""
    for doc in docs:
        write_conll([doc], tmp_path / "doc.tsv")
        assert conll(doc) == (tmp_path / "doc.tsv").read_text(encoding="utf-8") + "\n"
        back = parse_conll(conll(doc).splitlines(), lang=doc.lang, scheme="iob2").documents
        assert [[(s.surface(d.text), s.label) for s in d.spans] for d in back] == \
            [[(s.surface(doc.text), s.label) for s in sorted(doc.spans)]]

# --------------------------------------------------------------------------------------------- screenshot


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes) to an (h, w, channels) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, pos = {}, 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8:pos + 8 + length]
        pos += 12 + length
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color_type, interlace) in {(8, 2, 0), (8, 6, 0)}, "unsupported PNG layout"
    bpp = 3 if color_type == 2 else 4
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        row = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        unfilter(raw[y * (stride + 1)], row, prev, bpp)
        rows.append(row)
        prev = row
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, bpp)


def unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> None:
    """Undo one row's PNG filter in place (spec section 9.2); pure Python, about a second per screenshot."""
    for i in range(len(row)):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + a) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + b) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (a + b) // 2) & 0xFF
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF


def count_color(pixels: np.ndarray, hex_color: str) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(pixels[..., :3] == rgb, axis=-1).sum())


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1000,700"]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed (apt-get install -y chromium) - HTML screenshot not checked")
def test_html_screenshot_shows_entity_colors(docs, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(html(docs, title="CascadeNER screenshot test"), encoding="utf-8")
    shot = tmp_path / "page.png"
    run = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot; chromium exited {run.returncode}:\n{run.stderr[-2000:]}"
    assert shot.stat().st_size > 10_000
    pixels = read_png(shot)
    assert pixels.shape[:2] == (700, 1000)
    used = {label_color(s.label) for d in docs for s in d.spans}
    for color in used:   # the legend alone shows every label's colour near the top of the page
        assert count_color(pixels, color) > 300, f"colour {color} missing from the screenshot"
    for color in set(PALETTE) - used:
        assert count_color(pixels, color) < 20, f"colour {color} of no label on the page appears"
