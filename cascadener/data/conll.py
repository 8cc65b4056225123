"""CoNLL-style column files <-> documents with token boundaries.

Reading
  One token per line, columns separated by tabs (if the line has one; a token may then contain
  spaces) or else by runs of spaces. The token is column 0 and the tag the LAST column, so
  ``tok POS chunk NER`` (CoNLL-2003) and ``tok<TAB>tag`` (WikiANN, CrossNER) both work. A blank line
  ends a sentence; every ``-DOCSTART-`` line (``-DOCSTART- -X- O O``, ``-DOCSTART- -X- -X- O``, ...)
  is skipped. Each sentence becomes one :class:`TokenizedDocument` whose text is the tokens joined by
  one space (no separator for ``zh``/``ja``), with exact character offsets per token and entity.
  Its id is ``file:line`` of its first token, or the id a MultiCoNER comment gives it.
  A line starting with ``#`` whose last column is not a tag is a comment, and skipped; one that
  ends in a tag is a token line (WikiANN's space token ``#<TAB>O``, a hashtag ``#NBA<TAB>B-ORG``).
  MultiCoNER writes ``# id <uuid> domain=dev`` before each sentence: that ``<uuid>`` becomes the
  id of the sentence that follows.

Quirks handled on purpose
  * Tag scheme: IOB1, IOB2 and IOBES all decode with conlleval's chunk rules (see :mod:`.tags`),
    so ``I-X`` after ``O`` starts a new entity (lenient). ``scheme="auto"`` picks the scheme with
    :func:`.tags.detect_scheme`; entities that are not well-formed in it are kept and listed in
    ``ReadResult.repaired`` with file and line — e.g. the 2 ``B-MISC`` after ``O`` in CoNLL-2003
    ``eng.train``, or the ``I-`` after an ``O``-tagged ``#`` in WikiANN zh/ja.
  * WikiANN zh/ja are one character per token and use the token ``#`` for a space. For those
    languages ``#`` is rebuilt as a real space character, so texts read naturally ("Eternal
    Summer") and offsets stay one token = one character; the writer turns a whitespace token back
    into ``#``. In other languages ``#`` is an ordinary token (CrossNER has a few).
  * The original WikiANN release (Rahimi et al.) prefixes every token with its language, ``en:...``.
    When every token of a file carries the same ``xx:`` prefix it is stripped, and ``xx`` becomes
    the language unless one is given. The XTREME files have no prefix, and tokens such as
    ``bar:24`` in WikiANN en are left alone because not all tokens share them.
  * WikiANN zh/ja contain a literal token ``None`` (an upstream preprocessing artefact); it is kept.
  * The language is not guessed from file names: pass ``lang="zh"`` for WikiANN zh.

Writing
  ``tok<TAB>tag`` lines, a blank line after each sentence, IOB2 unless asked otherwise. Documents
  with token boundaries (as read) keep them, so an IOB2 file round-trips to the same tags; other
  documents are split on whitespace (per character for zh/ja) and additionally at every entity
  boundary, so no entity starts or ends inside a token. What the tags cannot hold exactly is
  returned as :class:`Problem` records: overlapping entities (BIO is flat; the outer or earlier one
  is kept), entities covering no token, and entities starting or ending inside a given token
  (widened to whole tokens).
"""
from __future__ import annotations

import gc
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from cascadener.geic.spans import Document, Span
from cascadener.data.base import DataError, Problem, ReadResult
from cascadener.data.tags import PREFIXES, SCHEMES, Chunk, decode, detect_scheme, encode, irregular_chunks, split_tag

UNSPACED_LANGS = frozenset({"zh", "ja"})
SPACE_TOKEN = "#"
DOCSTART = "-DOCSTART-"
_LANG_PREFIX = re.compile(r"([a-z]{2,3}):.")
_COMMENT_ID = re.compile(r"#\s*id\s+(\S+)")        # MultiCoNER: "# id <uuid> domain=dev"
_WORD = re.compile(r"\S+")


@dataclass
class TokenizedDocument(Document):
    """A document that also knows its tokens, as ``(start, end)`` character offsets into ``text``."""
    tokens: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        prev_end = 0
        for s, e in self.tokens:
            if not prev_end <= s < e:
                raise ValueError(f"document {self.id or '?'}: token [{s}, {e}) is empty, unordered or overlapping")
            prev_end = e
        if prev_end > len(self.text):
            raise ValueError(f"document {self.id or '?'}: tokens run past the end of the text")

    def token_strings(self) -> list[str]:
        return [self.text[s:e] for s, e in self.tokens]


def is_unspaced(lang: str) -> bool:
    """Languages whose tokens join without spaces (``zh``, ``ja``, also ``zh-Hans`` etc.)."""
    return re.split(r"[-_]", lang, maxsplit=1)[0].lower() in UNSPACED_LANGS


@dataclass
class _Sentence:
    line: int                   # line number of the first token
    tokens: list[str]
    tags: list[str]
    id: str = ""                # from a comment line before it, if any


def read_conll(path: str | Path, *, lang: str | None = None, scheme: str = "auto") -> ReadResult:
    """Read a column file; see the module docstring. ``scheme``: ``auto``, ``iob1``, ``iob2`` or ``iobes``."""
    with open(path, encoding="utf-8-sig") as f, _gc_paused():
        return parse_conll(f, source=str(path), lang=lang, scheme=scheme)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big file is read.

    Reading creates millions of small tuples and lists, none of them in reference cycles; the
    collector's repeated scans of them cost over half the read time (WikiANN de train: 0.75 s -> 0.3 s).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_conll(lines: Iterable[str], *, source: str = "<string>", lang: str | None = None,
                scheme: str = "auto") -> ReadResult:
    """Like :func:`read_conll`, for lines already in memory; ``source`` names them in errors."""
    if scheme != "auto" and scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected auto, {', '.join(SCHEMES)}")
    sentences = _split_sentences(lines, source, PREFIXES["iobes" if scheme == "auto" else scheme])
    prefix_lang = _strip_lang_prefix(sentences)
    lang = lang or prefix_lang or "en"
    decoded = [(s.tags, decode(s.tags)) for s in sentences]
    if scheme == "auto":
        scheme = detect_scheme(decoded)
    result = ReadResult([], scheme=scheme)
    name = Path(source).name
    for sent, (tags, chunks) in zip(sentences, decoded):
        doc = _build(sent, chunks, lang, sent.id or f"{name}:{sent.line}")
        result.documents.append(doc)
        for chunk, what in irregular_chunks(tags, chunks, scheme):
            mention = doc.text[doc.tokens[chunk.start][0]:doc.tokens[chunk.end - 1][1]]
            result.repaired.append(Problem(f"{source}:{sent.line + chunk.start}", mention,
                                           f"{what}; decoded as a new {chunk.label} entity, as conlleval does"))
    return result


def _split_sentences(lines: Iterable[str], source: str, allowed: frozenset[str]) -> list[_Sentence]:
    # The hot loop of every reader (2.5M lines for all shared datasets): kept to plain str methods.
    sentences: list[_Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    doc_id = ""
    valid_tags = {"O"}
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not line or (line.startswith(DOCSTART) and line.split(maxsplit=1)[0] == DOCSTART):
            if tokens:
                sentences.append(_Sentence(first, tokens, tags, doc_id))
                tokens, tags, doc_id = [], [], ""
            continue
        if line[0] == "#" and not _ends_in_tag(line, allowed):
            m = _COMMENT_ID.match(line)
            if m and not tokens:
                doc_id = m.group(1)
            continue
        if "\t" in line:
            token, _, rest = line.partition("\t")
            tag = rest.rpartition("\t")[2]
        else:
            cols = line.split()
            if len(cols) < 2:
                raise DataError(source, lineno, f"expected a token and a tag, got one column {line!r}")
            token, tag = cols[0], cols[-1]
        if not token:
            raise DataError(source, lineno, "empty token")
        if tag not in valid_tags:
            _check_tag(tag, allowed, source, lineno)
            valid_tags.add(tag)
        if not tokens:
            first = lineno
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append(_Sentence(first, tokens, tags, doc_id))
    return sentences


def _ends_in_tag(line: str, allowed: frozenset[str]) -> bool:
    """Whether a line starting with # is a token line (last column a tag), not a comment."""
    cols = line.split("\t") if "\t" in line else line.split()
    if len(cols) < 2 or not cols[0]:
        return False
    try:
        prefix, _ = split_tag(cols[-1])
    except ValueError:
        return False
    return prefix == "O" or prefix in allowed


def _check_tag(tag: str, allowed: frozenset[str], source: str, lineno: int) -> None:
    try:
        prefix, _ = split_tag(tag)
    except ValueError as e:
        raise DataError(source, lineno, str(e)) from None
    if prefix not in allowed:
        raise DataError(source, lineno, f"tag {tag!r} does not belong to the requested scheme "
                                        f"(allowed prefixes: {', '.join(sorted(allowed))})")


def _strip_lang_prefix(sentences: list[_Sentence]) -> str | None:
    """Remove a ``xx:`` prefix shared by every token (original WikiANN release); return ``xx``."""
    m = _LANG_PREFIX.match(sentences[0].tokens[0]) if sentences else None
    if m is None:
        return None
    prefix = m.group(1) + ":"
    if not all(len(t) > len(prefix) and t.startswith(prefix) for s in sentences for t in s.tokens):
        return None
    for s in sentences:
        s.tokens = [t[len(prefix):] for t in s.tokens]
    return m.group(1)


def _build(sent: _Sentence, chunks: Sequence[Chunk], lang: str, doc_id: str) -> TokenizedDocument:
    if is_unspaced(lang):
        words, sep = [" " if t == SPACE_TOKEN else t for t in sent.tokens], ""
    else:
        words, sep = sent.tokens, " "
    starts = accumulate((len(w) + len(sep) for w in words), initial=0)
    offsets = [(start, start + len(w)) for start, w in zip(starts, words)]
    spans = [Span(offsets[c.start][0], offsets[c.end - 1][1], c.label) for c in chunks]
    return TokenizedDocument(text=sep.join(words), spans=spans, lang=lang, id=doc_id, tokens=offsets)


def tokenize(text: str, lang: str = "en", cuts: Iterable[int] = ()) -> list[tuple[int, int]]:
    """Token offsets for a text that has none.

    Per character for zh/ja (whitespace characters become tokens, written as ``#``), else
    whitespace-separated words. Each offset in ``cuts`` also becomes a token boundary.
    """
    if is_unspaced(lang):
        tokens = [(i, i + 1) for i in range(len(text))]
    else:
        tokens = [m.span() for m in _WORD.finditer(text)]
    cut = sorted(set(cuts))
    out = []
    for s, e in tokens:
        for c in cut[bisect_right(cut, s):bisect_left(cut, e)]:
            out.append((s, c))
            s = c
        out.append((s, e))
    return out


def document_rows(doc: Document, scheme: str = "iob2") -> tuple[list[tuple[str, str]], list[Problem]]:
    """(token, tag) rows of one document, and the entities the tags could not hold exactly."""
    if isinstance(doc, TokenizedDocument) and doc.tokens:
        offsets = doc.tokens
    else:
        offsets = tokenize(doc.text, doc.lang, (b for s in doc.spans for b in (s.start, s.end)))
    chunks, problems = _spans_to_chunks(doc, offsets)
    tags = encode(chunks, len(offsets), scheme)
    rows = []
    for (s, e), tag in zip(offsets, tags):
        token = doc.text[s:e]
        if token.isspace():
            token = SPACE_TOKEN
        elif "\t" in token or "\n" in token:
            raise ValueError(f"document {doc.id or '?'}: token {token!r} contains a tab or line break")
        rows.append((token, tag))
    return rows, problems


def _spans_to_chunks(doc: Document, offsets: Sequence[tuple[int, int]]) -> tuple[list[Chunk], list[Problem]]:
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    chunks: list[Chunk] = []
    problems = []
    for span in sorted(doc.spans, key=lambda s: (s.start, -s.end)):   # outer entity first
        mention = span.surface(doc.text)
        if not span.label or any(c in span.label for c in "\t\n"):
            raise ValueError(f"document {doc.id or '?'}: entity {mention!r} has label {span.label!r}, "
                             "which a column file cannot hold")
        first, last = bisect_right(ends, span.start), bisect_left(starts, span.end)
        if first >= last:
            problems.append(Problem(doc.id or "?", mention, "covers no token; dropped"))
        elif chunks and first < chunks[-1].end:
            problems.append(Problem(doc.id or "?", mention, "overlaps an earlier entity; dropped (BIO is flat)"))
        else:
            if (starts[first], ends[last - 1]) != (span.start, span.end):
                problems.append(Problem(doc.id or "?", mention,
                                        "starts or ends inside a token; widened to whole tokens"))
            chunks.append(Chunk(first, last, span.label))
    return chunks, problems


def write_conll(docs: Iterable[Document], path: str | Path, *, scheme: str = "iob2") -> list[Problem]:
    """Write ``tok<TAB>tag`` sentences; return the entities that could not be written exactly."""
    blocks: list[str] = []
    problems: list[Problem] = []
    for doc in docs:
        rows, doc_problems = document_rows(doc, scheme)
        problems += doc_problems
        if not rows:
            problems.append(Problem(doc.id or "?", doc.text, "document has no tokens; a column file cannot hold it"))
            continue
        blocks.append("".join(f"{token}\t{tag}\n" for token, tag in rows))
    # Blank lines between sentences, none after the last: the layout of the WikiANN/CrossNER files.
    Path(path).write_text("\n".join(blocks), encoding="utf-8")
    return problems
