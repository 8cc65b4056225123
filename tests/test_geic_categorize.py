import random
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cascadener.geic.categorize import (Dynamic, Example, examples, make_unknown, merge_other,
                                        mention_path, mix_granularity, reduce_options, use_synonyms)
from cascadener.geic.hierarchy import UNKNOWN, Hierarchy
from cascadener.geic.spans import Document, Span

SMALL = Path(__file__).resolve().parent / "fixtures" / "hierarchy_small.json"
H = Hierarchy.load(SMALL, synonyms={"person": ["human", "individual"], "location": ["place"],
                                    "facility": ["building"], "city": ["town"]})
DOCS = [Document("Obama flew to Paris airport", [Span(0, 5, "politician"), Span(14, 19, "city"),
                                                  Span(20, 27, "airport")]),
        Document("Zeus lives on Elm Road", [Span(0, 4, "other figure"),
                                            Span(14, 22, "road", ("location", "address", "road"))]),
        Document("It rained", [])]
CANDS = ["person", "location", "facility", "miscellaneous"]


def valid(cands, answer) -> bool:
    """The invariant every step keeps."""
    unique = len(set(cands)) == len(cands) and len(cands) >= 1
    return unique and (answer in cands) != (answer == UNKNOWN) and UNKNOWN not in cands


def test_static_examples_follow_the_cascade():
    out = examples(DOCS, H, seed=0, dynamic=Dynamic.static())
    assert out[:3] == [
        Example(DOCS[0].text, DOCS[0].spans[0], 1, tuple(CANDS), "person"),
        Example(DOCS[0].text, DOCS[0].spans[0], 2, ("real person", "fictional figure"), "real person",
                ((tuple(CANDS), "person"),)),
        Example(DOCS[0].text, DOCS[0].spans[0], 3, ("politician", "athlete"), "politician",
                ((tuple(CANDS), "person"), (("real person", "fictional figure"), "real person")))]
    # one example per level of each path: politician 3, city 2, airport 3, other figure 3, road 3
    assert len(out) == 14
    assert [(e.level, e.answer) for e in out if e.span == Span(14, 19, "city")] == [(1, "location"), (2, "city")]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_every_history_is_a_walk_down_the_mentions_path(seed):
    """Whatever the rewrites, an example's history names the path's nodes in order, each offered
    in its level's list: the conversation the cascade would have had before this level."""
    for e in examples(DOCS, H, seed=seed, dynamic=Dynamic(mix=0.5, reduce=0.5, merge=0.5, synonym=0.5, unknown=0.5)):
        path = mention_path(e.span, H)
        assert len(e.history) == e.level - 1
        assert [a for _, a in e.history] == list(path[:e.level - 1])
        assert all(a in cands for cands, a in e.history)


def test_unknown_gold_label_is_an_error():
    with pytest.raises(KeyError):
        examples([Document("x", [Span(0, 1, "spaceship")])], H, seed=0)
    with pytest.raises(KeyError):
        examples([Document("x", [Span(0, 1, "road", ("person", "road"))])], H, seed=0)


def test_reproducible_under_a_seed_and_varied_across_seeds():
    dyn = Dynamic(mix=0.5, reduce=0.5, merge=0.5, synonym=0.5, unknown=0.3)
    assert examples(DOCS * 5, H, seed=7, dynamic=dyn) == examples(DOCS * 5, H, seed=7, dynamic=dyn)
    assert examples(DOCS * 5, H, seed=7, dynamic=dyn) != examples(DOCS * 5, H, seed=8, dynamic=dyn)


def test_global_random_state_is_untouched():
    random.seed(3)
    expected = random.random()
    random.seed(3)
    examples(DOCS, H, seed=1)
    assert random.random() == expected


def test_every_dynamic_step_shows_up_and_all_keep_the_invariant():
    dyn = Dynamic(mix=0.5, reduce=0.5, merge=0.5, synonym=0.5, unknown=0.3)
    out = examples(DOCS * 20, H, seed=0, dynamic=dyn)
    assert all(valid(list(e.candidates), e.answer) for e in out)
    answers = {e.answer for e in out}
    cands = {c for e in out for c in e.candidates}
    assert UNKNOWN in answers                                     # zero-shot
    assert {"other", "miscellaneous"} & answers                   # merge
    assert {"human", "individual", "place", "building", "town"} & cands   # synonyms
    assert any("politician" in e.candidates and e.level == 2 for e in out)  # mixed granularity


def test_reduce_keeps_the_answer_and_varies_the_size():
    rng = random.Random(0)
    sizes = set()
    for _ in range(50):
        cands, answer = reduce_options(CANDS, "facility", rng)
        assert answer == "facility" and "facility" in cands and cands == [c for c in CANDS if c in cands]
        sizes.add(len(cands))
    assert sizes == {2, 3}
    assert reduce_options(["a", "b"], "a", rng) == (["a", "b"], "a")


def test_mix_granularity_moves_the_answer_down_only_along_its_path():
    finer = {"person": ["real person", "fictional figure"], "location": ["city", "address"]}
    rng = random.Random(0)
    for _ in range(50):
        cands, answer = mix_granularity(CANDS, "person", finer, "real person", rng)
        assert valid(cands, answer) and answer in ("person", "real person")
        assert answer == "real person" or "person" in cands
    # the path stops at "person": its node can't be expanded, only others
    for _ in range(20):
        cands, answer = mix_granularity(CANDS, "person", finer, None, rng)
        assert answer == "person" and cands == ["person", "city", "address", "facility", "miscellaneous"]
    # expansion that would duplicate a listed name is skipped
    assert mix_granularity(["a", "b"], "a", {"b": ["a"]}, None, rng) == (["a", "b"], "a")


def test_merge_folds_into_a_bucket_name_not_in_the_list():
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        cands, answer = merge_other(CANDS, "person", rng)
        assert valid(cands, answer) and "other" in cands and 2 <= len(cands) <= 3
        seen.add(answer)
    assert seen == {"person", "other"}
    assert merge_other(["other", "miscellaneous", "a"], "a", rng) == (["other", "miscellaneous", "a"], "a")
    assert merge_other(["a", "b"], "a", rng) == (["a", "b"], "a")


def test_make_unknown():
    assert make_unknown(["person", "location"], "person") == (["location"], UNKNOWN)
    assert make_unknown(["person"], "person") == (["person"], "person")


@given(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True), st.data(),
       st.integers(0, 2 ** 32))
def test_each_step_keeps_the_answer_or_says_unknown(cands, data, seed):
    answer = data.draw(st.sampled_from(cands))
    rng = random.Random(seed)
    finer = {c: [c + "1", c + "2"] for c in cands}
    synonyms = {c: [c.upper()] for c in cands}
    for step in (lambda c, a: reduce_options(c, a, rng), lambda c, a: merge_other(c, a, rng),
                 lambda c, a: use_synonyms(c, a, synonyms, rng), make_unknown,
                 lambda c, a: mix_granularity(c, a, finer, a + "1", rng)):
        out, new_answer = step(list(cands), answer)
        assert valid(out, new_answer), (step, cands, answer, out, new_answer)
    reduced, _ = reduce_options(list(cands), answer, rng)
    assert answer in reduced and set(reduced) <= set(cands)
