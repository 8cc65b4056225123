"""The project's one JSON record schema (also infer.py's output) and JSONL files of it: the written keys,
lossless round trip, strict validation, errors with line numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadener.data import DataError, read_jsonl, save_documents, write_jsonl
from cascadener.data.jsonl import RecordError, from_record, parse_jsonl
from cascadener.geic.spans import Document, Span

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture
def docs() -> list[Document]:
    """English with hierarchy paths, hostile text (<script>, &, a newline, an emoji flag), Chinese, Japanese."""
    records = json.loads((FIXTURES.parent / "render" / "documents.json").read_text(encoding="utf-8"))
    return [from_record(r) for r in records]


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
    ('{"text": "ab", "entities": [{"start": true, "end": 1}]}', "'start' must be an integer, got True"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "label": "b", "path": ["a"]}]}', "not the last element"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "path": [1]}]}', "list of strings"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "score": "high"}]}', "'score' must be a number"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "type": "x"}]}', "unknown entity key(s) 'type'"),
    ('{"text": "ab", "entities": [{"start": 0, "end": 1, "text": "b"}]}', "'text' is 'b' but"),
    ('{"text": "ab", "lang": 3}', "'lang' must be a string"),
])
def test_errors_name_the_line(record, message):
    lines = ['{"text": "fine"}', "", record]
    with pytest.raises(DataError) as err:
        parse_jsonl(lines, source="p.jsonl")
    assert err.value.line == 3 and str(err.value).startswith("p.jsonl:3: ")
    assert message in str(err.value)


# --------------------------------------------------------------------------------------------- one record


def test_record_schema_keys_order_and_types():
    doc = Document("Kobe Bryant played for the Lakers.", [Span(27, 33, "organization"),
                                                          Span(0, 11, "person", ("agent", "person"), 1)])
    record = doc.to_dict()
    assert list(record) == ["text", "entities"]     # plain English input: nothing else
    assert [list(e) for e in record["entities"]] == [["start", "end", "text", "label", "path", "score"]] * 2
    assert record["entities"] == [   # text order, path as a list, score as float or null
        {"start": 0, "end": 11, "text": "Kobe Bryant", "label": "person", "path": ["agent", "person"],
         "score": 1.0},
        {"start": 27, "end": 33, "text": "Lakers", "label": "organization", "path": [], "score": None}]
    assert isinstance(record["entities"][0]["score"], float)
    assert json.loads(json.dumps(record)) == record


def test_record_writes_lang_and_id_only_when_they_say_something():
    assert list(Document("x", lang="en", id="").to_dict()) == ["text", "entities"]
    assert Document("x", lang="zh", id="s1").to_dict() == {"text": "x", "entities": [], "lang": "zh", "id": "s1"}
    assert list(Document("x", id="s1").to_dict()) == ["text", "entities", "id"]


@st.composite
def documents(draw) -> Document:
    """Any text (surrogates aside: JSON cannot carry them to UTF-8), any spans in it, overlapping or not."""
    text = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
    spans = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        label = draw(st.text(max_size=5))
        path = tuple(draw(st.lists(st.text(max_size=5), max_size=2))) + ((label,) if label else ())
        spans.append(Span(start, end, label, path, draw(st.none() | st.floats(allow_nan=False))))
    return Document(text, spans, lang=draw(st.sampled_from(["en", "zh", "de"])), id=draw(st.text(max_size=5)))


@settings(max_examples=200, deadline=None)
@given(documents())
def test_every_document_survives_to_json_and_back(doc):
    back = from_record(json.loads(doc.to_json()))
    assert back == Document(doc.text, sorted(doc.spans), doc.lang, doc.id)
    assert [s.score for s in back.spans] == [s.score for s in sorted(doc.spans)]


def test_record_round_trip(docs):
    for doc in docs:
        back = from_record(json.loads(doc.to_json()))
        assert back == Document(doc.text, sorted(doc.spans), doc.lang, doc.id)
        assert [s.score for s in back.spans] == [s.score for s in sorted(doc.spans)]
    assert (docs[2].lang, docs[2].id) == ("zh", "zh-poet")   # the optional keys are read when present


def test_record_keeps_overlapping_spans():
    doc = Document("New York City", [Span(0, 8, "location"), Span(0, 13, "location")])
    assert from_record(doc.to_dict()).spans == doc.spans


def test_from_record_minimal_forms():
    doc = from_record({"text": "Paris", "entities": [{"start": 0, "end": 5}]})
    assert (doc.spans, doc.lang, doc.id) == ([Span(0, 5)], "en", "")
    doc = from_record({"text": "Paris", "entities": [{"start": 0, "end": 5, "label": "city"}]}, lang="fr")
    assert (doc.spans, doc.lang) == ([Span(0, 5, "city")], "fr")
    assert from_record({"text": "Paris"}) == Document("Paris")    # "entities" may be left out too
    assert from_record({"text": "ab", "entities": [{"start": 0, "end": 1, "score": None}]}).spans[0].score is None


@pytest.mark.parametrize("record, message", [
    ([], "expected a JSON object, got list"),
    ({"entities": []}, "missing key 'text'"),
    ({"text": "x", "entities": [], "ents": []}, "unknown document key\\(s\\) 'ents'"),
    ({"text": 3, "entities": []}, "'text' must be a string"),
    ({"text": "x", "entities": {}}, "'entities' must be a list"),
    ({"text": "x", "entities": ["x"]}, "entity 0: must be an object"),
    ({"text": "ab", "entities": [{"start": "0", "end": 1}]}, "entity 0: 'start' must be an integer"),
    ({"text": "ab", "entities": [{"end": 1}]}, "entity 0: missing key 'start'"),
    ({"text": "ab", "entities": [{"start": False, "end": 1}]}, "'start' must be an integer, got False"),
    ({"text": "ab", "entities": [{"start": 0, "end": 1, "score": "high"}]}, "'score' must be a number or null"),
    ({"text": "ab", "entities": [{"start": 0, "end": 1, "score": True}]}, "'score' must be a number or null"),
    ({"text": "ab", "entities": [{"start": 0, "end": 1, "path": ["a", 2]}]}, "list of strings"),
    ({"text": "ab", "entities": [{"start": 0, "end": 1, "lable": "x"}]}, "unknown entity key\\(s\\) 'lable'"),
    ({"text": "ab", "entities": [{"start": 1, "end": 1}]}, "entity 0: span \\[1, 1\\) is empty"),
    ({"text": "ab", "entities": [{"start": 0, "end": 1, "label": "a", "path": ["b"]}]}, "not the last element"),
    ({"text": "ab", "entities": [{"start": 0, "end": 3}]}, "entity 0: span \\[0, 3\\) runs past the end"),
    # offsets counted in UTF-16 units (as JavaScript does) drift after an emoji
    ({"text": "🏀 Kobe", "entities": [{"start": 3, "end": 7, "text": "Kobe"}]}, "'text' is 'Kobe' but .*UTF-16"),
])
def test_from_record_rejects_bad_records(record, message):
    with pytest.raises(RecordError, match=message):
        from_record(record)
    assert issubclass(RecordError, ValueError)


def test_written_records_read_back_as_jsonl(docs, tmp_path):
    """What infer.py --format jsonl writes (Document.to_json per line) is what read_jsonl (and eval.py) reads."""
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(d.to_json() + "\n" for d in docs), encoding="utf-8")
    assert read_jsonl(path).documents == [Document(d.text, sorted(d.spans), d.lang, d.id) for d in docs]
