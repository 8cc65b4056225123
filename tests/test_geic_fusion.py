import pytest
from hypothesis import given, strategies as st

from cascadener.geic.fusion import fuse
from cascadener.geic.spans import Span

spans = st.builds(lambda a, n, label: Span(a, a + n, label),
                  st.integers(0, 30), st.integers(1, 8), st.sampled_from(["", "per", "loc"]))
runs = st.lists(st.lists(spans, max_size=8), max_size=5)


def test_longest_span_wins_and_the_result_is_sorted():
    a = [Span(0, 8), Span(12, 15)]          # "New York" ... "NBA"
    b = [Span(0, 13)]                       # "New York City"
    c = [Span(4, 8), Span(20, 24)]
    assert fuse([a, b, c]) == [Span(0, 13), Span(20, 24)]


def test_the_authors_order_dependence_is_gone():
    # Their merge replaced the first overlap only: [0,4) then [3,9) (replaces [0,4)) left [8,12)
    # overlapping [3,9). Here: the longest span wins, then only what overlaps nothing kept.
    runs_ = [[Span(0, 4), Span(8, 12)], [Span(3, 9)]]
    assert fuse(runs_) == fuse(runs_[::-1]) == [Span(3, 9)]


def test_equal_length_ties_go_to_more_votes_then_the_earlier_start():
    assert fuse([[Span(2, 6)], [Span(0, 4)], [Span(2, 6)]]) == [Span(2, 6)]
    assert fuse([[Span(2, 6)], [Span(0, 4)]]) == [Span(0, 4)]


def test_min_votes_and_scores():
    runs_ = [[Span(0, 4), Span(10, 20)], [Span(0, 4)], [Span(0, 4), Span(6, 8)]]
    out = fuse(runs_, min_votes=2)
    assert out == [Span(0, 4)] and out[0].score == 1.0
    assert [s.score for s in fuse(runs_)] == [1.0, pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert fuse(runs_, min_votes=4) == []
    with pytest.raises(ValueError):
        fuse(runs_, min_votes=0)


def test_a_run_repeating_a_span_votes_once():
    assert fuse([[Span(0, 4), Span(0, 4)], []], min_votes=2) == []


def test_no_runs():
    assert fuse([]) == [] and fuse([[], []]) == []


@given(runs, st.randoms(use_true_random=False))
def test_order_independent(rs, rnd):
    shuffled = [rnd.sample(r, len(r)) for r in rs]
    rnd.shuffle(shuffled)
    assert fuse(shuffled) == fuse(rs)


@given(runs, st.integers(1, 3))
def test_overlap_free_from_the_runs_and_maximal(rs, m):
    out = fuse(rs, min_votes=m)
    assert all(a.end <= b.start for a, b in zip(out, out[1:]))
    union = {s for r in rs for s in r}
    assert set(out) <= union
    # Every candidate left out overlaps a kept span at least as long (longest wins).
    for s in union - set(out):
        if sum(s in set(r) for r in rs) >= m:
            assert any(s.overlaps(k) and k.end - k.start >= s.end - s.start for k in out)


@given(runs)
def test_idempotent(rs):
    once = fuse(rs)
    assert fuse([once]) == once
    assert fuse([once, once]) == once
