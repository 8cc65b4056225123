import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cascadener.geic.categorize import (KINDS, SYNONYMS, Dynamic, Offer, answer_for, canonical, Example, examples,
                                        make_unknown, merge_other, mention_path, mix_granularity, reduce_options,
                                        type_kinds, use_synonyms, views)
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


# --- views: one list per sentence, across datasets ------------------------------------------------

FLAT = Hierarchy.flat(["person", "organization", "location", "miscellaneous"])
POLITICS = Hierarchy.flat(["politician", "person", "political party", "organization", "country", "location",
                           "election", "event", "miscellaneous"])
OTHERS = {"song": "art", "algorithm": "science entity", "musician": "person", "country": "location",
          "airport": "facility", "protein": "science entity"}
EVERYTHING = Dynamic(mix=0.5, reduce=0.5, merge=0.5, synonym=0.5, unknown=0.3, extend=0.5, hint=0.5)


def flat_docs(labels: list[list[str]]) -> list[Document]:
    return [Document("x" * (2 * len(ls) + 1), [Span(2 * i, 2 * i + 1, t) for i, t in enumerate(ls)]) for ls in labels]


trees = st.sampled_from([("flat", FLAT), ("politics", POLITICS), ("small", H)])


@st.composite
def corpora(draw):
    name, tree = draw(trees)
    labels = [p[-1] for p in tree.paths() if tree.is_leaf(p)] if name == "small" else tree.roots
    docs = flat_docs(draw(st.lists(st.lists(st.sampled_from(labels), max_size=4), min_size=1, max_size=6)))
    return tree, docs


@settings(max_examples=60, deadline=None)
@given(corpora(), st.integers(0, 10_000))
def test_a_view_offers_each_answer_or_says_unknown_and_marks_what_it_offers(corpus, seed):
    tree, docs = corpus
    for view in views(docs, tree, seed, EVERYTHING, OTHERS):
        assert len(set(view.types)) == len(view.types) >= 1 and UNKNOWN not in view.types
        firsts = [e for e in view.examples if not e.history]
        assert [e.span for e in firsts] == list(view.mentions)
        for e in view.examples:
            assert valid(list(e.candidates), e.answer), e
            assert e.answer != UNKNOWN or view.zero_shot             # "unknown" only where the prompt allows it
        for e in firsts:
            assert e.candidates == view.types
        assert list(view.marked) == [Span(e.span.start, e.span.end, e.answer) for e in firsts if e.answer != UNKNOWN]
        # renaming is one name per type: mentions of one gold type get one answer
        by_label: dict[str, set[str]] = {}
        for e in firsts:
            by_label.setdefault(e.span.label, set()).add(e.answer)
        assert all(len(a) == 1 for a in by_label.values())
        # another dataset's type never has the kind of one of this dataset's types
        own = {n for p in tree.paths() for n in (p[-1], *SYNONYMS.get(p[-1], ()))}
        for t in {canonical(t) for t in view.types} - own - {"other", "miscellaneous"} - set(KINDS.values()):
            assert t in OTHERS and OTHERS[t] not in {"person", "location", "organization", "facility"}


def test_views_are_reproducible_under_a_seed():
    docs = flat_docs([["person", "location"], ["organization"], []] * 5)
    assert views(docs, FLAT, 7, EVERYTHING, OTHERS) == views(docs, FLAT, 7, EVERYTHING, OTHERS)
    assert views(docs, FLAT, 7, EVERYTHING, OTHERS) != views(docs, FLAT, 8, EVERYTHING, OTHERS)


def test_static_view_is_the_plain_top_level():
    docs = flat_docs([["person", "location"]])
    (view,) = views(docs, FLAT, 0, Dynamic.static(), OTHERS)
    assert view.types == tuple(FLAT.roots) and not view.zero_shot
    assert [s.label for s in view.marked] == ["person", "location"]


@settings(max_examples=30, deadline=None)
@given(corpora(), st.integers(0, 10_000))
def test_a_plain_view_offers_the_sources_own_list_and_gold_answers(corpus, seed):
    tree, docs = corpus
    for view in views(docs, tree, seed, replace(EVERYTHING, nest=0.5, plain=1.0), OTHERS):
        assert sorted(view.types) == sorted(tree.roots) and not view.zero_shot
        for e in view.examples:
            path = tree.path(e.span.label)
            assert set(e.candidates) == set(tree.children(path[:e.level - 1]))
            assert e.answer == path[e.level - 1]


def test_a_plain_share_leaves_the_other_views_dynamic():
    docs = flat_docs([["politician", "person"], ["political party"]] * 100)
    out = views(docs, POLITICS, 0, replace(EVERYTHING, plain=0.5), OTHERS)
    plain = [v for v in out if set(v.types) == set(POLITICS.roots) and not v.zero_shot]
    assert 0.4 < len(plain) / len(out) < 0.75          # the share, plus dynamic lists that left it whole
    assert len({v.types for v in out}) > 20            # the rest still varied (and shuffled)


def test_every_rewrite_shows_up_across_views():
    docs = flat_docs([["politician", "person", "country"], ["political party", "election"], ["miscellaneous"]] * 80)
    out = views(docs, POLITICS, 0, EVERYTHING, OTHERS)
    answers = {e.answer for v in out for e in v.examples}
    offered = {t for v in out for t in v.types}
    assert {"people", "human", "individual", "political figure", "nation", "party"} & offered    # synonyms
    assert UNKNOWN in answers and "other" in answers                                             # zero-shot, merge
    assert {"song", "algorithm", "protein"} & offered and not {"musician", "airport"} & offered  # extension
    # granularity: politicians answered as "person" while "politician" is not on the list
    assert any(e.span.label == "politician" and canonical(e.answer) == "person" and "politician" not in v.types
               for v in out for e in v.examples)
    # deeper trees: a node replaced by its children, and the cascade continues below a plain node
    deep = views(flat_docs([["politician", "city", "airport"]] * 40), H, 0, EVERYTHING, {})
    assert any("real person" in v.types or "politician" in v.types for v in deep)
    assert any(e.history and e.history[0][0] == v.types for v in deep for e in v.examples)


def test_no_other_types_in_a_sentence_with_a_catch_all_mention():
    docs = flat_docs([["miscellaneous", "person"]] * 30)
    out = views(docs, FLAT, 0, Dynamic(extend=1.0), OTHERS)
    assert not {t for v in out for t in v.types} & set(OTHERS)
    assert {t for v in views(flat_docs([["person"]] * 30), FLAT, 0, Dynamic(extend=1.0), OTHERS)
            for t in v.types} & set(OTHERS)


def test_type_kinds_offer_names_that_stand_alone():
    dyn = Hierarchy.from_tree({"product": {"vehicle": ["air", "car"], "other product": ["toys"]},
                               "miscellaneous": {"event": ["sporting event"], "miscellaneous": ["law"]},
                               "person": {"real person": ["politician"]}})
    assert type_kinds(dyn) == {"product": "product", "vehicle": "product", "toys": "product",
                               "event": "event", "sporting event": "event",
                               "person": "person", "real person": "person", "politician": "person"}


def test_a_child_offered_beside_its_node_answers_its_mentions_and_the_node_the_rest():
    person = Offer("person", frozenset({("person",)}))
    politician = Offer("politician", frozenset({("person", "real person", "politician")}))
    offers = [person, Offer("real person", frozenset({("person", "real person")})), politician]
    assert answer_for(offers, ("person", "real person", "politician")) == "politician"    # the most specific
    assert answer_for(offers, ("person", "real person", "athlete")) == "real person"
    assert answer_for(offers, ("person", "fictional figure", "other figure")) == "person"
    assert answer_for([politician], ("person", "real person", "athlete")) == UNKNOWN
    assert answer_for([person, politician], ("person",)) == "person"
    # across views: the node stays on the list, and the child answers a mention under it
    docs = flat_docs([["politician", "athlete", "city", "airport"]] * 30)
    nested = [(v, e) for v in views(docs, H, 0, Dynamic(nest=1.0), {}) for e in v.examples if not e.history
              and e.answer in {"real person", "transortation facility", "city", "address"}
              and {"person", "location", "facility"} & set(v.types)]
    assert any(e.span.label == "politician" and e.answer == "real person" and "person" in v.types for v, e in nested)
