import ast
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from cascadener.geic.markup import escaped, parse, render
from cascadener.geic.spans import Span


def surfaces(text: str, output: str) -> list[str]:
    return [s.surface(text) for s in parse(text, output).spans]


def trimmed(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


# Any unicode, plus texts dense in the characters the format itself uses.
TEXTS = st.one_of(st.text(max_size=60),
                  st.text(alphabet="#\\ a\n", max_size=40),
                  st.text(alphabet=st.sampled_from("#\\ Kobe北京\t") | st.characters(), max_size=40))


@st.composite
def text_and_spans(draw, texts=TEXTS):
    text = draw(texts)
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=14)))
    spans = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        a, b = trimmed(text, a, b)
        if a < b:
            spans.append(Span(a, b))
    return text, spans


# ---- the paper's format -------------------------------------------------------------------------

def test_paper_example():
    text = "Kobe was in NBA"
    out = render(text, [Span(12, 15, "org"), Span(0, 4, "per")])
    assert out == "##Kobe## was in ##NBA##"
    assert parse(text, out).spans == [Span(0, 4), Span(12, 15)]


def test_adjacent_entities_share_a_four_hash_run():
    text = "KobeBryant"
    out = render(text, [Span(0, 4), Span(4, 10)])
    assert out == "##Kobe####Bryant##"
    assert parse(text, out).spans == [Span(0, 4), Span(4, 10)]


@given(text_and_spans(st.text(st.characters(blacklist_characters="#"), max_size=60)))
def test_texts_without_hash_render_exactly_like_the_paper(case):
    text, spans = case
    expected, pos = "", 0
    for s in spans:
        expected += text[pos:s.start] + "##" + text[s.start:s.end] + "##"
        pos = s.end
    assert not escaped(text)
    assert render(text, spans) == expected + text[pos:]


def test_render_rejects_overlap_and_overrun():
    with pytest.raises(ValueError, match="overlaps"):
        render("New York City", [Span(0, 8), Span(4, 13)])
    with pytest.raises(ValueError, match="runs past"):
        render("Kobe", [Span(0, 9)])


# ---- escaping: texts that contain '#' ---------------------------------------------------------

def test_hash_in_text_is_escaped_and_round_trips():
    text = "C# and F# are languages"
    spans = [Span(0, 2), Span(7, 9)]
    out = render(text, spans)
    assert out == "##C\\### and ##F\\### are languages"
    assert parse(text, out).spans == spans
    # Without the escape this output would be ambiguous between "C" and "C#".
    assert parse(text, render(text, [Span(0, 1)])).spans == [Span(0, 1)]


def test_backslash_is_escaped_only_when_the_text_has_a_hash():
    assert render("a\\b", [Span(0, 1)]) == "##a##\\b"
    assert render("a\\b#", [Span(0, 1)]) == "##a##\\\\b\\#"


def test_unescaped_model_output_on_a_hash_text_still_parses():
    # A model trained on the paper's format copies '#' verbatim; a lone '#' is read as text.
    text = "I love #MeToo posts"
    assert surfaces(text, "I love ###MeToo## posts") == ["#MeToo"]


@given(text_and_spans())
def test_render_then_parse_is_the_identity(case):
    text, spans = case
    result = parse(text, render(text, spans))
    assert result.spans == spans
    assert (result.dropped, result.unpaired, result.faithful) == (0, 0, True)


# ---- what small models do ----------------------------------------------------------------------

@st.composite
def words_and_word_spans(draw):
    """A sentence of repeated words, and entities of one to three whole words."""
    words = draw(st.lists(st.sampled_from(["Jordan", "a", "Paris", "x", "the"]), min_size=1, max_size=12))
    bounds, pos = [], 0
    for w in words:
        bounds.append((pos, pos + len(w)))
        pos += len(w) + 1
    spans, i = [], 0
    for first in sorted(draw(st.sets(st.integers(0, len(words) - 1)))):
        last = min(len(words) - 1, first + draw(st.integers(0, 2)))
        if first >= i:
            spans.append(Span(bounds[first][0], bounds[last][1]))
            i = last + 1
    return " ".join(words), spans


@given(words_and_word_spans(), st.lists(st.sampled_from([" ", "  ", "\t", " \n"]), min_size=12,
                                        max_size=12), st.booleans())
def test_whitespace_and_case_changes_keep_every_span_on_its_occurrence(case, gaps, lower):
    # A greedy longest-block diff fails this: "##a## ##a##  a" shifts the second mark onto a neighbour.
    text, spans = case
    output = render(text, spans)
    pieces = output.split(" ")
    output = "".join(p + gaps[k % len(gaps)] for k, p in enumerate(pieces[:-1])) + pieces[-1]
    assert parse(text, output.lower() if lower else output).spans == spans


def test_repeated_names_map_to_their_own_occurrence():
    text = "Jordan passed to Jordan"
    assert parse(text, "Jordan passed to ##Jordan##").spans == [Span(17, 23)]
    assert parse(text, "##Jordan## passed to ##Jordan##").spans == [Span(0, 6), Span(17, 23)]
    # a substring earlier in the text ("US" in "USA") must not capture the mark
    assert parse("USA and US", "USA and ##US##").spans == [Span(8, 10)]


def test_repeated_name_with_changed_whitespace():
    text = "Paris  is not   Paris"
    assert parse(text, "Paris is not ##Paris##").spans == [Span(16, 21)]


def test_changed_whitespace_and_case():
    text = "Kobe  was in\tthe NBA"
    assert surfaces(text, "##Kobe## was in the ##nba##") == ["Kobe", "NBA"]


def test_dropped_word():
    text = "Kobe Bryant joined the Los Angeles Lakers"
    assert surfaces(text, "##Kobe## joined ##Los Angeles Lakers##") == ["Kobe", "Los Angeles Lakers"]
    # a word dropped inside a mention: the span still runs from its first to its last character
    assert surfaces(text, "Kobe Bryant joined the ##Los Lakers##") == ["Los Angeles Lakers"]
    assert not parse(text, "Kobe Bryant joined the ##Los Lakers##").faithful


def test_added_word():
    text = "Kobe joined the Lakers"
    result = parse(text, "##Kobe Bryant## joined the famous ##Lakers##")
    assert [s.surface(text) for s in result.spans] == ["Kobe", "Lakers"]
    assert result.dropped == 0 and not result.faithful


def test_case_or_whitespace_changes_are_not_faithful():
    text = "Kobe  was in the NBA"
    assert not parse(text, "##Kobe## was in the ##NBA##").faithful
    assert not parse(text, "##Kobe##  was in the ##nba##").faithful
    assert parse(text, "##Kobe##  was in the ##NBA##").faithful


def test_stray_mark_is_ignored_and_counted():
    text = "Kobe was in NBA"
    result = parse(text, "Kobe## was in ##NBA##")
    assert (surfaces(text, "Kobe## was in ##NBA##"), result.unpaired) == (["NBA"], 1)
    assert surfaces(text, "##Kobe## was ## in ##NBA##") == ["Kobe", "NBA"]


def test_unbalanced_last_mark():
    text = "Kobe was in NBA"
    result = parse(text, "##Kobe## was in ##NBA")
    assert [s.surface(text) for s in result.spans] == ["Kobe"]
    assert (result.dropped, result.unpaired, result.faithful) == (0, 1, False)


def test_marks_inside_a_word():
    text = "Kobe's USA trip"
    assert surfaces(text, "##Kobe##'s USA trip") == ["Kobe"]
    assert surfaces(text, "Kobe's US##A## trip") == ["A"]   # taken as written, not snapped
    assert parse(text, "Kobe's US##A## trip").spans == [Span(9, 10)]


def test_hallucinated_empty_and_blank_mentions_are_dropped_and_counted():
    text = "He met Obama in Paris"
    result = parse(text, "He met ##Barack## in ##Paris##")
    assert ([s.surface(text) for s in result.spans], result.dropped) == (["Paris"], 1)
    assert parse(text, "#### He met Obama in ## ##Paris").dropped == 2
    assert not result.faithful and not parse(text, "#### He met Obama in ## ##Paris").faithful


@given(TEXTS, st.text(alphabet=st.sampled_from("#\\ ab\n") | st.characters(), max_size=80))
def test_parse_of_anything_gives_ordered_trimmed_disjoint_spans(text, output):
    result = parse(text, output)
    for s in result.spans:
        assert 0 <= s.start < s.end <= len(text)
        assert not text[s.start].isspace() and not text[s.end - 1].isspace()
    assert all(a.end <= b.start for a, b in zip(result.spans, result.spans[1:]))
    assert result.dropped >= 0 and result.unpaired in (0, 1)


def test_geic_stays_model_free():
    # cascadener/geic is the audited, pure-Python part: no torch, no HF, nothing from the model side.
    banned = ("torch", "transformers", "peft", "huggingface_hub", "safetensors", "numpy")
    for path in (Path(__file__).resolve().parent.parent / "cascadener" / "geic").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside cascadener/geic"
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"
                assert n.split(".")[0] != "cascadener" or n.startswith("cascadener.geic"), f"{path.name} imports {n}"
