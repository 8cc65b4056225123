"""The authors' GEIC JSON: placing string mentions, reporting the ones that cannot be placed, writing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascadener.data import read_geic_json, resolve_mentions, write_geic_json
from cascadener.geic.spans import Document, Span
from data_helpers import assert_read_error

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def placed(doc: Document) -> list[tuple[int, str, str]]:
    return [(s.start, s.surface(doc.text), s.label) for s in doc.spans]


def test_fixture():
    result = read_geic_json(FIXTURES / "geic.json")
    d1, d2, d3, d4 = result.documents
    assert [d.id for d in result.documents] == ["sentence1", "sentence2", "sentence3", "sentence4"]
    # A repeated name takes the next unused occurrence, in list order.
    assert placed(d1) == [(0, "Jordan", "athlete"), (11, "Jordan", "politician"), (21, "Amman", "city"),
                          (29, "Jordan", "country")]
    # Whole words beat in-word matches ("US" is not the "US" of "USA"), and "York" does not take the
    # "York" of "New York" when a free one exists.
    assert placed(d2) == [(16, "US", "country"), (34, "York", "city"), (46, "New York", "city")]
    assert placed(d3) == [(4, "Great Fire of London", "disaster"), (43, "London", "city")]
    assert d4.spans == [] and d4.text == "Nothing to see here."
    assert result.dropped == [("sentence3", "East Germany", "not an exact substring of the sentence; dropped")]


@pytest.mark.parametrize("text, mentions, expected", [
    ("Great Fire of London", ["London", "Great Fire of London"], [(14, 20), (0, 20)]),   # nested, only one London
    ("aaa", ["aa", "aa"], [(0, 2), (1, 3)]),                                              # overlapping occurrences
    ("Paris and Paris", ["Paris", "Paris", "Paris"], [(0, 5), (10, 15), None]),          # listed more than it occurs
    ("the US in USA", ["US", "US"], [(4, 6), (10, 12)]),                                 # in-word as a last resort
    ("x", [""], [None]),
])
def test_resolve_mentions(text, mentions, expected):
    assert resolve_mentions(text, mentions) == expected


def test_drop_reasons(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"s": {"sentence": "Paris", "entity": ["Paris", "Paris", ""],
                                      "category": ["city", "city", "x"]}}), encoding="utf-8")
    assert [p.reason for p in read_geic_json(path).dropped] == [
        "listed more often than it occurs in the sentence; dropped", "empty mention"]


def test_round_trip(tmp_path):
    docs = read_geic_json(FIXTURES / "geic.json").documents
    write_geic_json(docs, tmp_path / "out.json")
    again = read_geic_json(tmp_path / "out.json")
    assert again.dropped == []
    assert [(d.id, d.text, d.spans) for d in again.documents] == [(d.id, d.text, d.spans) for d in docs]
    record = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["sentence2"]
    assert record == {"sentence": docs[1].text, "entity": ["US", "York", "New York"],
                      "category": ["country", "city", "city"]}


def test_writer_keeps_unicode_and_orders_mentions(tmp_path):
    doc = Document("北京和上海", [Span(3, 5, "city"), Span(0, 2, "capital")], lang="zh", id="x")
    write_geic_json([doc], tmp_path / "out.json")
    raw = (tmp_path / "out.json").read_text(encoding="utf-8")
    assert "北京" in raw
    assert json.loads(raw) == {"sentence1": {"sentence": "北京和上海", "entity": ["北京", "上海"],
                                             "category": ["capital", "city"]}}
    assert read_geic_json(tmp_path / "out.json", lang="zh").documents[0].lang == "zh"


@pytest.mark.parametrize("content, line, message", [
    ('{\n  "s1": {"sentence": "a", "entity": [], "category": []},\n  "s2": {"sentence": "b", "entity": ["b"]}\n}',
     3, "record 's2': missing category"),
    ('{\n  "s1": {"sentence": "a b", "entity": ["a", "b"], "category": ["x"]}\n}', 2,
     "record 's1': 2 entities but 1 categories"),
    ('{\n  "s1": {"sentence": 3, "entity": [], "category": []}\n}', 2, "'sentence' is not a string"),
    ('{\n  "s1": {"sentence": "a", "entity": [1], "category": ["x"]}\n}', 2, "'entity' is not a list of strings"),
    ('{\n  "s1": {"sentence": "a",\n}', 3, "invalid JSON"),
    ('[1, 2]', 1, "expected an object of records"),
])
def test_errors_name_file_line_and_record(tmp_path, content, line, message):
    assert_read_error(read_geic_json, tmp_path / "bad.json", content, line, message)
