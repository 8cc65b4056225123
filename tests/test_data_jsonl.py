"""The project's JSONL: lossless round trip, strict validation, errors with line numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from cascadener.data import DataError, read_jsonl, save_documents, write_jsonl
from cascadener.data.jsonl import parse_jsonl
from cascadener.geic.spans import Document, Span

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def test_fixture():
    docs = read_jsonl(FIXTURES / "docs.jsonl").documents
    assert len(docs) == 3      # the blank line is skipped
    a, zh, plain = docs
    author = Span(0, 7, "author", ("person", "artist or author", "author"), 0.9)
    assert a == Document("Le Guin wrote Earthsea .", [author, Span(14, 22, "book")], lang="en", id="a")
    assert a.spans[0].score == 0.9
    assert (zh.lang, zh.id, zh.spans[0].surface(zh.text)) == ("zh", "", "北京")
    assert plain.spans == [] and plain.lang == "en"
    assert read_jsonl(FIXTURES / "docs.jsonl", lang="fr").documents[2].lang == "fr"   # default only


def test_round_trip_is_lossless(tmp_path):
    docs = read_jsonl(FIXTURES / "docs.jsonl").documents
    docs.append(Document("x y", [Span(2, 3, "", score=1), Span(0, 1)], lang="de", id="unlabelled"))
    write_jsonl(docs, tmp_path / "out.jsonl")
    again = read_jsonl(tmp_path / "out.jsonl").documents
    assert again == [Document(d.text, sorted(d.spans), d.lang, d.id) for d in docs]
    assert [[s.score for s in d.spans] for d in again] == [[s.score for s in sorted(d.spans)] for d in docs]
    assert "北京欢迎你" in (tmp_path / "out.jsonl").read_text(encoding="utf-8")    # not \u-escaped
    assert save_documents(again, tmp_path / "again.jsonl") == []
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()


@pytest.mark.parametrize("record, message", [
    ('{"text": "a", "entities": [{"start": 0, "end": 1, "label": "x"}', "invalid JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"txt": "a"}', "unknown document key(s) 'txt'"),
    ('{"text": "a", "entites": []}', "unknown document key(s) 'entites'"),
    ('{"text": 1}', "'text' must be a string"),
    ('{"text": "a", "entities": {}}', "'entities' must be a list"),
    ('{"text": "a", "entities": [{"start": 0, "end": 5, "label": "x"}]}', "runs past the end"),
    ('{"text": "ab", "entities": [{"start": 1, "end": 1}]}', "is empty or negative"),
    ('{"text": "ab", "entities": [{"start": true, "end": 1}]}', "must be integers"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "label": "b", "path": ["a"]}]}', "not the last element"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "path": [1]}]}', "list of strings"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "score": "high"}]}', "'score' must be a number"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "type": "x"}]}', "unknown entity key(s) 'type'"),
    ('{"text": "ab", "lang": 3}', "'lang' must be a str"),
])
def test_errors_name_the_line(record, message):
    lines = ['{"text": "fine"}', "", record]
    with pytest.raises(DataError) as err:
        parse_jsonl(lines, source="p.jsonl")
    assert err.value.line == 3 and str(err.value).startswith("p.jsonl:3: ")
    assert message in str(err.value)
