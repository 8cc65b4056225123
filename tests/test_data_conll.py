"""Column files: the three tag schemes, the real-data quirks, errors, writing, and the convert CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadener.data import (DataError, TokenizedDocument, load_documents, read_conll, read_documents, save_documents,
                             tokenize, write_conll)
from cascadener.data.__main__ import main as convert_main
from cascadener.data.conll import document_rows, parse_conll
from cascadener.data.tags import Chunk, decode, detect_scheme, encode, irregular_chunks
from cascadener.geic.spans import Document, Span
from data_helpers import assert_read_error, read_columns

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def surfaces(doc: Document) -> list[tuple[str, str]]:
    return [(s.surface(doc.text), s.label) for s in doc.spans]


def content(docs: list[Document]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(d.text, surfaces(d)) for d in docs]


def tags_of(path: Path) -> list[list[str]]:
    return [[tag for _, tag in sentence] for sentence in read_columns(path)]


# --- reading -------------------------------------------------------------------------------------

def test_iob1_with_both_docstart_variants():
    result = read_conll(FIXTURES / "iob1_docstart.txt")
    assert result.scheme == "iob1"
    docs = result.documents
    assert [d.text for d in docs] == ["Maria Lopez met Jan Kowalski in Lyon .",
                                      "Bayern Munich Ajax Amsterdam drew .",
                                      "Winter Games open"]
    assert surfaces(docs[0]) == [("Maria Lopez", "PER"), ("Jan Kowalski", "PER"), ("Lyon", "LOC")]
    # B- between adjacent same-type entities separates them (a naive IOB2 reader would merge them).
    assert surfaces(docs[1]) == [("Bayern Munich", "ORG"), ("Ajax Amsterdam", "ORG")]
    assert [d.id for d in docs] == ["iob1_docstart.txt:3", "iob1_docstart.txt:12", "iob1_docstart.txt:21"]
    # The one B- that does not follow a same-type entity is kept, and reported with its line.
    assert surfaces(docs[2]) == [("Winter Games", "MISC")]
    [repair] = result.repaired
    assert repair.where.endswith("iob1_docstart.txt:21") and repair.mention == "Winter Games"
    assert "B-MISC I-MISC after sentence start is not well-formed IOB1" in repair.reason


def test_token_offsets_are_exact():
    for doc in read_conll(FIXTURES / "iob1_docstart.txt").documents:
        assert isinstance(doc, TokenizedDocument)
        assert " ".join(doc.token_strings()) == doc.text
        for span in doc.spans:
            assert any(s == span.start for s, _ in doc.tokens) and any(e == span.end for _, e in doc.tokens)


def test_iob2_tab_separated_keeps_spaces_in_tokens_and_hyphens_in_labels():
    result = read_conll(FIXTURES / "iob2.tsv")
    assert result.scheme == "iob2" and result.repaired == []
    doc, doc2 = result.documents
    assert doc.token_strings()[1] == "New York"
    assert surfaces(doc) == [("New York", "LOC"), ("Greens", "political-party"), ("Ohio", "LOC"), ("Iowa", "LOC")]
    assert surfaces(doc2) == [("Marie Curie", "person")]


def test_iobes():
    result = read_conll(FIXTURES / "iobes.txt")
    assert result.scheme == "iobes" and result.repaired == []
    assert surfaces(result.documents[0]) == [("Ada", "PER"), ("Lovelace", "PER"), ("New South Wales", "LOC")]


def test_wikiann_zh_hash_is_a_space_and_i_after_o_starts_an_entity():
    result = read_conll(FIXTURES / "wikiann_zh.tsv", lang="zh")
    doc, doc2 = result.documents
    assert doc.text == "李民基《Et Su》" and doc.lang == "zh"
    assert surfaces(doc) == [("李民基", "PER"), ("Et", "ORG"), ("Su", "ORG")]
    assert [(p.mention, p.where.rsplit(":", 1)[1]) for p in result.repaired] == [("Su", "8")]
    assert doc2.text == " 澳門" and surfaces(doc2) == [("澳門", "LOC")]
    # Without lang, tokens are joined by spaces and '#' stays a token.
    assert read_conll(FIXTURES / "wikiann_zh.tsv").documents[0].text == "李 民 基 《 E t # S u 》"


def test_wikiann_zh_writes_hash_back(tmp_path):
    docs = load_documents(FIXTURES / "wikiann_zh.tsv", lang="zh")
    write_conll(docs, tmp_path / "out.tsv")
    original = (FIXTURES / "wikiann_zh.tsv").read_text(encoding="utf-8")
    # Same tokens; the irregular I-ORG after '#'/O is written as the well-formed B-ORG.
    assert (tmp_path / "out.tsv").read_text(encoding="utf-8") == original.replace("S\tI-ORG", "S\tB-ORG")


def test_comment_lines_are_skipped_and_multiconer_ids_kept():
    lines = ["# id 0c2d9c0c-1b7e-4f6a domain=dev", "Kobe _ _ B-PER", "won _ _ O", "",
             "# id 77aa\tdomain=en", "#\tO", "Paris\tB-LOC", "# a comment inside a sentence", "#\tO", "",
             "# sentence without an id", "# O", "#Rome B-LOC"]
    one, two, three = parse_conll(lines, source="multi.conll").documents
    assert (one.id, one.text, surfaces(one)) == ("0c2d9c0c-1b7e-4f6a", "Kobe won", [("Kobe", "PER")])
    assert (two.id, two.text) == ("77aa", "# Paris #")         # WikiANN's '#' token, even first, is a token
    assert (three.id, three.text, surfaces(three)) == ("multi.conll:12", "# #Rome", [("#Rome", "LOC")])


@pytest.mark.parametrize("name, content", [
    ("a.txt", "Kobe\tB-PER\nwon\tO\n"),
    ("a.jsonl", '{"text": "Kobe won", "entities": [{"start": 0, "end": 4, "label": "PER"}]}\n'),
    ("a.json", '{"s1": {"sentence": "Kobe won", "entity": ["Kobe"], "category": ["PER"]}}'),
])
def test_a_byte_order_mark_changes_nothing_and_other_encodings_are_refused(tmp_path, name, content):
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / name).write_text(content, encoding="utf-8")
    (tmp_path / "bom" / name).write_text(content, encoding="utf-8-sig")
    docs = load_documents(tmp_path / "plain" / name)
    assert [(d.text, surfaces(d)) for d in docs] == [("Kobe won", [("Kobe", "PER")])]
    assert [(d.text, d.spans) for d in load_documents(tmp_path / "bom" / name)] == [(d.text, d.spans) for d in docs]
    (tmp_path / name).write_text(content.replace("won", "gewönne"), encoding="latin-1")
    with pytest.raises(DataError, match=f"{name}:[12]: not UTF-8 text"):
        load_documents(tmp_path / name)


def test_language_prefix_is_stripped_only_when_every_token_has_it(tmp_path):
    result = read_conll(FIXTURES / "wikiann_prefixed.tsv")
    assert [d.text for d in result.documents] == ["Rick Astley bar:24", "Paris"]
    assert result.documents[0].lang == "en"
    assert read_conll(FIXTURES / "wikiann_prefixed.tsv", lang="xx").documents[0].lang == "xx"
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("en:Rick\tB-PER\nAstley\tI-PER\n", encoding="utf-8")
    assert read_conll(mixed).documents[0].text == "en:Rick Astley"


@pytest.mark.parametrize("content, line, message", [
    ("EU B-ORG\nrejects X-FOO\n", 2, "unknown tag 'X-FOO'"),
    ("EU B-ORG\n\nrejects\n", 3, "expected a token and a tag"),
    ("EU B-ORG\nrejects B-\n", 2, "unknown tag 'B-'"),
    ("EU\tB-ORG\n\tO\n", 2, "empty token"),
])
def test_errors_name_file_and_line(tmp_path, content, line, message):
    assert_read_error(read_conll, tmp_path / "bad.txt", content, line, message)


def test_explicit_scheme_rejects_foreign_prefixes_and_unknown_schemes():
    with pytest.raises(DataError, match=r"<string>:2: tag 'E-LOC' does not belong"):
        parse_conll(["York B-LOC", "City E-LOC"], scheme="iob2")
    assert parse_conll(["York B-LOC", "City E-LOC"], scheme="iobes").scheme == "iobes"
    with pytest.raises(ValueError, match="unknown tag scheme"):
        parse_conll([], scheme="bilou")


def test_explicit_iob2_reports_iob1_openings():
    result = parse_conll(["Maria I-PER", "met O", "Jan I-PER"], scheme="iob2")
    assert len(result.repaired) == 2
    assert parse_conll(["Maria I-PER", "met O", "Jan I-PER"]).scheme == "iob1"


def test_crlf_and_blank_runs():
    result = parse_conll(["EU B-ORG\r\n", "\r\n", "\n", "-DOCSTART- -X- -X- O\n", "\n", "Bonn B-LOC\r\n"])
    assert [d.text for d in result.documents] == ["EU", "Bonn"]


# --- writing -------------------------------------------------------------------------------------

def test_iob2_round_trip_is_exact(tmp_path):
    docs = load_documents(FIXTURES / "iob2.tsv")
    assert write_conll(docs, tmp_path / "out.tsv") == []
    assert (tmp_path / "out.tsv").read_bytes() == (FIXTURES / "iob2.tsv").read_bytes()


def test_iob1_and_iobes_files_are_written_as_iob2(tmp_path):
    for name in ("iob1_docstart.txt", "iobes.txt"):
        docs = load_documents(FIXTURES / name)
        write_conll(docs, tmp_path / "out.tsv")
        again = read_conll(tmp_path / "out.tsv")
        assert again.scheme == "iob2" and again.repaired == []
        assert [surfaces(d) for d in again.documents] == [surfaces(d) for d in docs]
    write_conll(load_documents(FIXTURES / "iobes.txt"), tmp_path / "iobes.txt", scheme="iobes")
    assert tags_of(tmp_path / "iobes.txt") == tags_of(FIXTURES / "iobes.txt")


def test_plain_documents_are_split_at_entity_boundaries(tmp_path):
    doc = Document("The U.S.-based firm (Acme) grew.", [Span(4, 8, "LOC"), Span(21, 25, "ORG")])
    rows, problems = document_rows(doc)
    assert problems == []
    assert rows == [("The", "O"), ("U.S.", "B-LOC"), ("-based", "O"), ("firm", "O"), ("(", "O"),
                    ("Acme", "B-ORG"), (")", "O"), ("grew.", "O")]
    write_conll([doc], tmp_path / "out.tsv")
    [again] = load_documents(tmp_path / "out.tsv")
    assert again.text == "The U.S. -based firm ( Acme ) grew."
    assert surfaces(again) == [("U.S.", "LOC"), ("Acme", "ORG")]


def test_what_bio_cannot_hold_is_reported():
    text = "Great Fire of London ."
    doc = TokenizedDocument(text, [Span(0, 20, "event"), Span(14, 20, "city"), Span(21, 22, "x")],
                            tokens=[(0, 5), (6, 10), (11, 13), (14, 20), (21, 22)], id="d1")
    rows, problems = document_rows(doc)
    assert [t for _, t in rows] == ["B-event", "I-event", "I-event", "I-event", "B-x"]
    assert [(p.where, p.mention) for p in problems] == [("d1", "London")]
    assert "overlaps" in problems[0].reason
    mid = TokenizedDocument(text, [Span(1, 9, "event")], tokens=doc.tokens)
    rows, problems = document_rows(mid)
    assert [t for _, t in rows[:3]] == ["B-event", "I-event", "O"] and "widened" in problems[0].reason
    with pytest.raises(ValueError, match="label ''"):
        document_rows(Document(text, [Span(0, 5)]))


def test_zh_documents_without_tokens_are_written_per_character():
    doc = Document("北京 欢迎你", [Span(0, 2, "LOC")], lang="zh")
    rows, _ = document_rows(doc)
    assert rows == [("北", "B-LOC"), ("京", "I-LOC"), ("#", "O"), ("欢", "O"), ("迎", "O"), ("你", "O")]
    assert tokenize("a b", "zh-Hans") == [(0, 1), (1, 2), (2, 3)]


def test_empty_documents_are_reported_not_written(tmp_path):
    problems = write_conll([Document(" ", id="blank"), Document("x")], tmp_path / "out.tsv")
    assert [(p.where, p.reason) for p in problems] == [
        ("blank", "document has no tokens; a column file cannot hold it")]
    assert [d.text for d in load_documents(tmp_path / "out.tsv")] == ["x"]


# --- tag schemes, property-based -----------------------------------------------------------------

LABELS = st.sampled_from(["PER", "LOC", "B-X", "political-party"])


@st.composite
def chunks_within(draw, n: int) -> list[Chunk]:
    """Sorted, non-overlapping chunks over n tokens (adjacent same-type ones included)."""
    chunks, pos = [], 0
    while pos < n and draw(st.booleans()):
        start = draw(st.integers(pos, n - 1))
        end = draw(st.integers(start + 1, min(n, start + 4)))
        chunks.append(Chunk(start, end, draw(LABELS)))
        pos = end
    return chunks


CHUNK_LISTS = st.integers(0, 14).flatmap(lambda n: st.tuples(chunks_within(n), st.just(n)))


ANY_TAG = st.one_of(st.just("O"), st.builds(lambda p, t: f"{p}-{t}", st.sampled_from("BIES"), LABELS))


@settings(max_examples=300, deadline=None)
@given(CHUNK_LISTS, st.sampled_from(["iob1", "iob2", "iobes"]))
def test_encode_decode_round_trip(chunks_n, scheme):
    chunks, n = chunks_n
    tags = encode(chunks, n, scheme)
    assert decode(tags) == chunks
    assert irregular_chunks(tags, chunks, scheme) == []
    assert encode(decode(tags), n, scheme) == tags
    assert detect_scheme([(tags, chunks)]) == (scheme if chunks else "iob2")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["O", "I-PER", "B-PER", "I-LOC", "B-LOC"]), max_size=12))
def test_iob1_decodes_like_its_iob2_rewrite(tags):
    """Any IOB1 sequence (irregular ones too) means the same entities as its IOB2 re-encoding."""
    chunks = decode(tags)
    iob2 = encode(chunks, len(tags), "iob2")
    assert decode(iob2) == chunks
    assert all(not t.startswith("I-") or iob2[i - 1][2:] == t[2:] for i, t in enumerate(iob2))


@settings(max_examples=300, deadline=None)
@given(st.lists(ANY_TAG, max_size=12))
def test_decode_normalises_any_sequence(tags):
    chunks = decode(tags)
    assert all(0 <= a.start < a.end <= b.start for a, b in zip(chunks, chunks[1:]))
    for scheme in ("iob1", "iob2", "iobes"):
        assert decode(encode(chunks, len(tags), scheme)) == chunks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.text("Aé#-:.", min_size=1, max_size=4), min_size=1, max_size=6), min_size=1,
                max_size=4), st.data())
def test_column_file_round_trip(tmp_path_factory, sentences, data):
    """IOB2 tags written by us and read back are the same tags (tokens may contain '#' and ':')."""
    tagged = []
    for tokens in sentences:
        tagged.append((tokens, encode(data.draw(chunks_within(len(tokens))), len(tokens), "iob2")))
    path = tmp_path_factory.mktemp("rt") / "in.tsv"
    path.write_text("\n".join("".join(f"{t}\t{g}\n" for t, g in zip(*s)) for s in tagged), encoding="utf-8")
    out = path.with_name("out.tsv")
    write_conll(load_documents(path), out)
    assert out.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


# --- load/save dispatch and the convert CLI ------------------------------------------------------

def test_load_documents_dispatch(tmp_path):
    assert load_documents(FIXTURES / "iobes.txt")[0].text.startswith("Ada")
    assert load_documents(FIXTURES / "docs.jsonl")[0].id == "a"
    with pytest.warns(UserWarning, match="1 entities could not be placed"):
        assert len(load_documents(FIXTURES / "geic.json")) == 4
    # Sniffing when the extension says nothing.
    for name in ("docs.jsonl", "geic.json", "iob2.tsv"):
        copy = tmp_path / f"{name}.data"
        copy.write_bytes((FIXTURES / name).read_bytes())
        assert content(read_documents(copy).documents) == content(read_documents(FIXTURES / name).documents)
    with pytest.raises(ValueError, match="only applies to column files"):
        load_documents(FIXTURES / "docs.jsonl", scheme="iob2")
    with pytest.raises(ValueError, match="unknown format"):
        save_documents([], tmp_path / "x.tsv", "xml")


def test_convert_cli_round_trip(tmp_path, capsys):
    src = FIXTURES / "iob2.tsv"
    assert convert_main(["convert", str(src), str(tmp_path / "a.jsonl")]) == 0
    assert "read 2 documents, 5 entities" in capsys.readouterr().err
    assert convert_main(["convert", str(tmp_path / "a.jsonl"), str(tmp_path / "b.json")]) == 0
    assert convert_main(["convert", str(tmp_path / "b.json"), str(tmp_path / "c.out"), "--to", "conll"]) == 0
    # Same texts and entities; only the one token with a space inside ("New York") is now two tokens.
    assert content(load_documents(tmp_path / "c.out")) == content(load_documents(src))


def test_convert_cli_lang_and_errors(tmp_path, capsys):
    assert convert_main(["convert", str(FIXTURES / "wikiann_zh.tsv"), str(tmp_path / "z.jsonl"), "--lang", "zh"]) == 0
    err = capsys.readouterr().err
    assert "1 entities repaired while reading" in err and "wikiann_zh.tsv:8: 'Su'" in err
    assert load_documents(tmp_path / "z.jsonl")[0].text == "李民基《Et Su》"
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nx X-FOO\n", encoding="utf-8")
    assert convert_main(["convert", str(bad), str(tmp_path / "o.jsonl")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {bad}:2: unknown tag 'X-FOO'"
    assert convert_main(["convert", str(FIXTURES / "geic.json"), str(tmp_path / "g.tsv")]) == 0
    assert "'East Germany': not an exact substring" in capsys.readouterr().err


def test_data_package_does_not_import_torch():
    """The data layer must stay usable without torch: no module under cascadener/data imports it."""
    import ast

    import cascadener.data
    for path in Path(cascadener.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "torch" for n in names), f"{path.name} imports torch"
