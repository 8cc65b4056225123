from hypothesis import given, strategies as st

from cascadener.geic.segment import segments, sentences


def test_sentences_and_cjk():
    assert sentences("Kobe is here. He plays!  Next") == [(0, 13), (14, 23), (25, 29)]
    assert sentences("北京很大。东京也很大。") == [(0, 5), (5, 11)]


def test_long_sentence_is_cut_at_spaces():
    text = "alpha beta gamma delta epsilon"
    pieces = segments(text, 12)
    assert [text[s:e] for s, e in pieces] == ["alpha beta", "gamma delta", "epsilon"]


@given(st.text(alphabet="ab .!。 \n北", max_size=200), st.integers(1, 40))
def test_segments_are_ordered_bounded_and_keep_all_content(text, max_chars):
    pieces = segments(text, max_chars)
    assert all(0 <= s < e <= len(text) and e - s <= max_chars for s, e in pieces)
    assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:]))
    covered = set().union(*(range(s, e) for s, e in pieces)) if pieces else set()
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
