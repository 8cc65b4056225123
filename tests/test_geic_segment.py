import unicodedata

import pytest
from hypothesis import example, given, settings, strategies as st

from cascadener.geic.segment import enclosing, segments, sentences

CJK_MARKS = "。！？，、；：」』）"
CLOSERS = "\"'”’»)]」』）"                  # may follow a mark (cascadener.geic.segment)
# Characters that exercise every rule: sentence and clause marks, white space of several kinds,
# CJK, combining marks, a ZWJ emoji sequence, a skin tone, flags, CR LF, Hangul jamo, a virama.
ALPHABET = st.sampled_from(list("ab .!?,;:\"。！？，、北京\n\t\u3000") +
                           ["\r\n", "e\u0301", "\u0301", "\U0001F468\u200d\U0001F469", "\U0001F44D\U0001F3FD",
                            "\U0001F1EF\U0001F1F5", "\U0001F1EF", "\u1100\u1161\u11a8", "\u0915\u094d\u0937"])
TEXTS = st.lists(ALPHABET, max_size=120).map("".join)


def test_sentences_and_cjk():
    assert sentences("Kobe is here. He plays!  Next") == [(0, 13), (14, 23), (25, 29)]
    assert sentences("北京很大。东京也很大。") == [(0, 5), (5, 11)]
    text = 'He said "Hi." Then left.\n\nA heading\nwrapped line'
    assert [text[s:e] for s, e in sentences(text)] == ['He said "Hi."', "Then left.", "A heading\nwrapped line"]
    assert sentences("  Padded.  ") == [(2, 9)] and sentences(" \n ") == []


def test_long_sentence_is_cut_at_clause_marks_then_spaces():
    text = "alpha beta gamma delta epsilon"
    assert [text[s:e] for s, e in segments(text, 12)] == ["alpha beta", "gamma delta", "epsilon"]
    text = "alpha beta, gamma delta epsilon zeta"
    assert [text[s:e] for s, e in segments(text, 20)] == ["alpha beta,", "gamma delta epsilon", "zeta"]


def test_text_without_spaces_is_cut_hard_but_never_inside_a_cluster():
    text = "北京是中国的首都" * 5
    assert [e - s for s, e in segments(text, 16)] == [16, 16, 8]
    text = "北京是中国，东京是日本"
    assert [text[s:e] for s, e in segments(text, 8)] == ["北京是中国，", "东京是日本"]
    accented = "e\u0301" * 10                                  # e + combining acute: 2 code points each
    assert [e - s for s, e in segments(accented, 7)] == [6, 6, 6, 2]
    flags = "\U0001F1EF\U0001F1F5" * 4                          # regional indicators pair up
    assert [e - s for s, e in segments("x" + flags, 4)] == [3, 4, 2]
    pairs = "\ud83d\ude00" * 3                                 # a surrogate pair is never split
    assert [e - s for s, e in segments(pairs, 3)] == [2, 2, 2]
    assert [e - s for s, e in segments("a" + "\u0301" * 9, 4)] == [4, 4, 2]   # one cluster over the limit


def test_limit_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        segments("abc", 1)


@given(TEXTS, st.integers(2, 40))
def test_segments_tile_the_text_within_the_limit(text, max_chars):
    pieces = segments(text, max_chars)
    assert all(0 <= s < e <= len(text) and e - s <= max_chars for s, e in pieces)
    gaps = zip([0] + [e for _, e in pieces], [s for s, _ in pieces] + [len(text)])
    assert all(a <= b and text[a:b].isspace() or a == b for a, b in gaps)       # ordered; only white space left out
    def marked(i: int) -> bool:                         # a space carrying a combining mark is kept whole
        return i < len(text) and unicodedata.category(text[i]).startswith("M")
    assert all((not text[s].isspace() or marked(s + 1)) and not text[e - 1].isspace() for s, e in pieces)


@given(TEXTS, st.integers(2, 40))
@example("a\n, \u0301", 3)            # a comma before a space with a combining mark is no place to cut
@example("aaa\r\n，\"a", 7)            # a CJK comma and a closing quote: a cut with no gap
def test_sentence_ends_are_preferred_then_white_space(text, max_chars):
    pieces, sents = segments(text, max_chars), sentences(text)
    if all(e - s <= max_chars for s, e in sents):       # every cut is between sentences
        assert {s for s, _ in pieces} <= {s for s, _ in sents} and {e for _, e in pieces} <= {e for _, e in sents}
    for (s, e), (s2, _) in zip(pieces, pieces[1:]):
        ends = {se for _, se in sents}                  # (a CJK sentence end, closers included, needs no gap)
        after_cjk_mark = text[e - 1] in CJK_MARKS or text[s:e].rstrip(CLOSERS)[-1:] in tuple(CJK_MARKS)
        if s2 == e and e not in ends and not after_cjk_mark:   # a cut without a gap: no space to cut at
            # (a space carrying a combining mark is part of a character, not a place to cut)
            assert not any(ch.isspace() and text[i + 1:i + 2] != "\u0301" for i, ch in enumerate(text[s + 1:e + 1], s + 1))


@settings(max_examples=300)
@given(TEXTS, st.integers(2, 40))
def test_cuts_fall_on_grapheme_cluster_boundaries(text, max_chars):
    regex = pytest.importorskip("regex")               # the reference for UAX #29 clusters
    clusters = [m.span() for m in regex.finditer(r"\X", text)]
    if any(e - s > max_chars for s, e in clusters):
        return                                          # a cluster over the limit has to be cut
    allowed = {s for s, _ in clusters} | {len(text)}
    assert all(s in allowed and e in allowed for s, e in segments(text, max_chars))


@given(TEXTS, st.integers(2, 40), st.data())
def test_a_span_is_classified_in_the_pieces_that_hold_it(text, max_chars, data):
    pieces = segments(text, max_chars)
    if not pieces:
        return
    s, e = data.draw(st.sampled_from(pieces))
    a = data.draw(st.integers(s, e - 1))
    b = data.draw(st.integers(a + 1, e))
    assert enclosing(pieces, a, b) == (s, e)            # a span found in a piece: that piece
    a = data.draw(st.integers(0, len(text) - 1))
    b = data.draw(st.integers(a + 1, len(text)))
    lo, hi = enclosing(pieces, a, b)                    # any span: the pieces around it, a bounded context
    outside = text[lo:a] + text[b:hi]                   # at most a piece on each side, and the white space between
    assert lo <= a < b <= hi and sum(not c.isspace() for c in outside) <= 2 * max_chars
    assert lo in {s for s, _ in pieces} | {a} and hi in {e for _, e in pieces} | {b}
