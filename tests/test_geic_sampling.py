import math
from collections import Counter

import pytest
from hypothesis import given, strategies as st

from cascadener.geic.sampling import few_shot, stratified_subset
from cascadener.geic.spans import Document, Span


def doc(i: int, labels) -> Document:
    """A sentence with one one-character entity per label."""
    labels = sorted(labels)
    return Document("x" * max(1, len(labels)), [Span(k, k + 1, t) for k, t in enumerate(labels)], id=str(i))


def docs_from(label_sets) -> list[Document]:
    return [doc(i, ls) for i, ls in enumerate(label_sets)]


def containing(docs, t) -> int:
    return sum(any(s.label == t for s in d.spans) for d in docs)


corpora = st.lists(st.sets(st.sampled_from("abcdef"), max_size=3), max_size=40).map(docs_from)


def test_rare_type_does_not_cap_the_others():
    # The authors' sampler gave every class min(S // m, rarest count) = 2 here.
    docs = docs_from([{"a"}] * 50 + [{"b"}] * 50 + [{"c"}] * 2)
    out = few_shot(docs, budget=30, seed=0)
    assert len(out) == 30
    assert (containing(out, "c"), containing(out, "a"), containing(out, "b")) == (2, 14, 14)


def test_a_sentence_counts_towards_every_type_it_contains():
    docs = docs_from([{"a", "b"}] * 5 + [{"a"}] * 5 + [{"b"}] * 5)
    out = few_shot(docs, budget=2, seed=0)
    # quota is 1 per type; one {a, b} sentence may fill both, so the second seat is redistributed
    assert len(out) == 2 and containing(out, "a") >= 1 and containing(out, "b") >= 1


def test_budget_smaller_than_the_number_of_types_prefers_rare_types():
    docs = docs_from([{"a"}] * 9 + [{"b"}] * 5 + [{"c"}])
    assert [d.spans[0].label for d in few_shot(docs, budget=2, seed=3)] == ["b", "c"]


def test_sentences_without_entities_are_not_few_shot_examples():
    docs = docs_from([set()] * 10 + [{"a"}])
    assert few_shot(docs, budget=5, seed=0) == [docs[10]]
    with pytest.raises(ValueError):
        few_shot(docs, budget=-1, seed=0)


@given(corpora, st.integers(0, 30), st.integers(0, 2 ** 32))
def test_few_shot_properties(docs, budget, seed):
    out = few_shot(docs, budget, seed)
    assert out == few_shot(docs, budget, seed)                    # deterministic
    ids = [d.id for d in out]
    assert ids == sorted(set(ids), key=int)                       # no duplicates, input order
    with_entities = [d for d in docs if d.spans]
    assert len(out) == min(budget, len(with_entities))            # never over budget, fills it
    types = {s.label for d in docs for s in d.spans}
    for t in types:
        assert containing(out, t) >= min(budget // len(types), containing(docs, t))   # eq. 4 quota
        if budget >= len(types):
            assert containing(out, t) >= 1


def test_subset_keeps_proportions_including_empty_sentences():
    docs = docs_from([set()] * 200 + [{"a"}] * 500 + [{"b"}] * 290 + [{"c"}] * 10)
    out = stratified_subset(docs, n=300, seed=0)
    assert len(out) == 300
    counts = Counter(d.spans[0].label if d.spans else "" for d in out)
    assert counts == {"": 60, "a": 150, "b": 87, "c": 3}
    assert [d.id for d in out] == sorted({d.id for d in out}, key=int)
    assert stratified_subset(docs, n=300, seed=0) == out
    assert stratified_subset(docs, n=300, seed=1) != out


def test_subset_stratum_is_the_rarest_type():
    # "c" is rare, so {a, c} sentences are their own stratum and get seats in proportion.
    docs = docs_from([{"a"}] * 80 + [{"a", "c"}] * 20)
    out = stratified_subset(docs, n=10, seed=0)
    assert containing(out, "c") == 2


@given(corpora, st.integers(0, 50), st.integers(0, 2 ** 32))
def test_subset_properties(docs, n, seed):
    out = stratified_subset(docs, n, seed)
    assert len(out) == min(n, len(docs))
    assert len({d.id for d in out}) == len(out)
    n_empty, k_empty = sum(not d.spans for d in docs), sum(not d.spans for d in out)
    if docs:
        exact = len(out) * n_empty / len(docs)
        assert math.floor(exact) <= k_empty <= math.ceil(exact)
