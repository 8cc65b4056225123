"""Chunk tags <-> token chunks, for the three schemes found in NER column files.

* ``iob1`` — CoNLL-2003's original: an entity starts with ``I-X``; ``B-X`` only marks an entity that
  directly follows another entity of the same type X.
* ``iob2`` (BIO) — every entity starts with ``B-X``.
* ``iobes`` (BIOES) — ``S-X`` single-token entity; else ``B-X I-X* E-X``.

Decoding uses one rule set for all three — the chunk rules of conlleval, extended to E-/S- the way
seqeval's default mode does — because those rules read each scheme correctly when it is
well-formed, and read irregular input the way the standard scorer does. In words: a token starts a
new entity when its tag is ``B-``/``S-``, when its type differs from the open entity's, or when no
entity is open (``O`` before, sentence start, or the previous entity was closed by ``E-``/``S-``).
So ``I-X`` after ``O`` is decoded leniently, as a new entity — that is what conlleval scores, and it
is what the WikiANN zh/ja files need (their ``#`` space tokens are tagged ``O`` inside entities).

The scheme therefore changes no span; it decides which prefixes are allowed, what counts as
irregular (reported, not rejected: see :func:`irregular_chunks`) and, for encoding, which tags are
written. :func:`detect_scheme` guesses it from the tags.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

SCHEMES = ("iob1", "iob2", "iobes")
PREFIXES = {"iob1": frozenset("BI"), "iob2": frozenset("BI"), "iobes": frozenset("BIES")}
OUTSIDE = "O"


@dataclass(frozen=True, order=True)
class Chunk:
    """An entity over tokens ``[start, end)`` of one sentence."""
    start: int
    end: int
    label: str


@lru_cache(maxsize=4096)
def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``. Types may contain ``-``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in PREFIXES["iobes"] or not label:
        raise ValueError(f"unknown tag {tag!r}")
    return prefix, label


def decode(tags: Sequence[str]) -> list[Chunk]:
    """Entities of one sentence's tags (any scheme, irregular input read as conlleval does)."""
    chunks: list[Chunk] = []
    start, label = -1, ""          # start == -1: no entity open
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if start >= 0 and (prefix in "BSO" or typ != label):
            chunks.append(Chunk(start, i, label))
            start = -1
        if prefix == OUTSIDE:
            continue
        if start < 0:
            start, label = i, typ
        if prefix in "ES":
            chunks.append(Chunk(start, i + 1, label))
            start = -1
    if start >= 0:
        chunks.append(Chunk(start, len(tags), label))
    return chunks


def encode(chunks: Sequence[Chunk], length: int, scheme: str = "iob2") -> list[str]:
    """Tags for ``length`` tokens holding ``chunks`` (sorted, non-overlapping, non-empty)."""
    _check_scheme(scheme)
    tags = [OUTSIDE] * length
    prev: Chunk | None = None
    for c in chunks:
        if not (0 <= c.start < c.end <= length) or (prev is not None and c.start < prev.end):
            raise ValueError(f"chunk {c} is empty, out of range or overlaps its predecessor")
        tags[c.start:c.end] = _chunk_tags(c, _adjacent_same(prev, c), scheme)
        prev = c
    return tags


def detect_scheme(sentences: Iterable[tuple[Sequence[str], Sequence[Chunk]]]) -> str:
    """Guess the scheme from (tags, decoded chunks) of every sentence in a file.

    ``iobes`` if any ``E-``/``S-`` tag occurs. Otherwise count the entities that open with ``I-``
    versus ``B-`` (ignoring entities right after one of the same type, where IOB1 also uses ``B-``):
    ``iob1`` if ``I-`` openings are the majority, else ``iob2``. A majority, not "any", because real
    files are noisy both ways: CoNLL-2003 ``eng.train`` (IOB1) has 2 ``B-MISC`` after ``O``, WikiANN
    zh (IOB2) has ~900 ``I-`` after ``O``. A file without entities is ``iob2``.
    """
    opened_by = {"B": 0, "I": 0}
    for tags, chunks in sentences:
        prev: Chunk | None = None
        for c in chunks:
            prefix = tags[c.start][0]
            if prefix in "ES" or tags[c.end - 1][0] in "ES":
                return "iobes"
            if not _adjacent_same(prev, c):
                opened_by[prefix] += 1
            prev = c
    return "iob1" if opened_by["I"] > opened_by["B"] else "iob2"


def irregular_chunks(tags: Sequence[str], chunks: Sequence[Chunk], scheme: str) -> list[tuple[Chunk, str]]:
    """Chunks whose tags are not well-formed in ``scheme``, each with a short description.

    Their spans are still what :func:`decode` says; this only reports where the file deviated.
    """
    _check_scheme(scheme)
    found = []
    prev: Chunk | None = None
    for c in chunks:
        got = tags[c.start:c.end]
        if got != _chunk_tags(c, _adjacent_same(prev, c), scheme):
            before = tags[c.start - 1] if c.start > 0 else "sentence start"
            shown = " ".join(got) if len(got) <= 3 else f"{got[0]} ... {got[-1]}"
            found.append((c, f"{shown} after {before} is not well-formed {scheme.upper()}"))
        prev = c
    return found


def _chunk_tags(c: Chunk, after_same_type: bool, scheme: str) -> list[str]:
    """The well-formed tags of one chunk; ``after_same_type``: it directly follows one of its type."""
    n, label = c.end - c.start, c.label
    if scheme == "iobes":
        return [f"S-{label}"] if n == 1 else [f"B-{label}"] + [f"I-{label}"] * (n - 2) + [f"E-{label}"]
    first = "B" if scheme == "iob2" or after_same_type else "I"
    return [f"{first}-{label}"] + [f"I-{label}"] * (n - 1)


def _adjacent_same(prev: Chunk | None, c: Chunk) -> bool:
    return prev is not None and prev.end == c.start and prev.label == c.label


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
