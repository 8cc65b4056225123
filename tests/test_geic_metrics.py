import json

import pytest
from hypothesis import given, strategies as st

from cascadener.geic.metrics import PRF, Report, at_level, confusion, score
from cascadener.geic.spans import Document, Span


def d(text, *spans):
    return Document(text, list(spans))


def prf(m: PRF) -> tuple:
    return (m.precision, m.recall, m.f1, m.tp, m.n_pred, m.n_gold)


def test_the_authors_inflated_precision_counterexample():
    # evaluate.py fitted MultiLabelBinarizer on gold, so "lakers" and "france" vanished: P = 1.0.
    gold = [d("Kobe Lakers", Span(0, 4, "per")), d("Paris France", Span(0, 5, "loc"))]
    pred = [d("Kobe Lakers", Span(0, 4, "per"), Span(5, 11, "org")),
            d("Paris France", Span(0, 5, "loc"), Span(6, 12, "loc"))]
    r = score(gold, pred)
    assert prf(r.lenient_extraction) == (0.5, 1.0, pytest.approx(2 / 3), 2, 4, 2)
    assert prf(r.lenient) == (0.5, 1.0, pytest.approx(2 / 3), 2, 4, 2)
    assert r.micro.precision == 0.5


def test_span_level_counts_position_and_type():
    text = "Paris met Paris Hilton in Paris"
    gold = [d(text, Span(0, 5, "loc"), Span(10, 22, "per"), Span(26, 31, "loc"))]
    pred = [d(text, Span(0, 5, "loc"), Span(10, 15, "loc"), Span(26, 31, "per"))]
    r = score(gold, pred)
    assert prf(r.micro)[3:] == (1, 3, 3)
    assert prf(r.extraction)[3:] == (2, 3, 3)
    # the string view collapses repeats and can't see positions:
    # gold {paris/loc, paris hilton/per} vs predicted {paris/loc, paris/per}
    assert prf(r.lenient)[3:] == (1, 2, 2)
    assert prf(r.lenient_extraction)[3:] == (1, 1, 2)
    assert prf(r.per_type["loc"]) == (0.5, 0.5, 0.5, 1, 2, 2)
    assert prf(r.per_type["per"]) == (0.0, 0.0, 0.0, 0, 1, 1)
    assert r.macro.f1 == pytest.approx(0.25) and r.macro.tp == 1


def test_empty_bucket_conventions():
    assert prf(PRF.of(0, 0, 0)) == (1.0, 1.0, 1.0, 0, 0, 0)
    assert prf(PRF.of(0, 0, 3)) == (0.0, 0.0, 0.0, 0, 0, 3)     # predicted nothing, missed 3
    assert prf(PRF.of(0, 2, 0)) == (0.0, 0.0, 0.0, 0, 2, 0)     # found 2 where there was nothing
    r = score([d("It rained")], [d("It rained")])
    assert r.micro.f1 == r.macro.f1 == r.lenient.f1 == 1.0 and r.per_type == {} and r.per_level == {}


def test_pairs_are_checked_not_trusted():
    with pytest.raises(ValueError, match="paired by position"):
        score([d("a"), d("b")], [d("a")])
    with pytest.raises(ValueError, match="pair 1"):
        score([d("a"), d("b")], [d("a"), d("c")])


def test_a_sentence_without_predictions_still_counts_its_misses():
    gold = [d("Kobe", Span(0, 4, "per")), d("Paris", Span(0, 5, "loc"))]
    pred = [d("Kobe", Span(0, 4, "per")), d("Paris")]
    assert score(gold, pred).micro.recall == 0.5


def test_duplicate_spans_in_a_document_count_once():
    gold = [d("Kobe", Span(0, 4, "per"))]
    assert prf(score(gold, [d("Kobe", Span(0, 4, "per"), Span(0, 4, "per"))]).micro)[3:] == (1, 1, 1)


def test_per_level_requires_the_coarser_levels_right():
    text = "Kobe in Rome"
    gold = [d(text, Span(0, 4, "athlete", ("person", "real person", "athlete")),
              Span(8, 12, "city", ("location", "gpe", "city")))]
    pred = [d(text, Span(0, 4, "actor", ("person", "real person", "actor")),
              Span(8, 12, "gpe", ("location", "gpe")))]            # the cascade stopped at level 2
    r = score(gold, pred)
    # The stopped walk counts as a wrong answer at level 3, not as no answer.
    assert {k: (m.tp, m.n_pred, m.n_gold) for k, m in r.per_level.items()} == {
        1: (2, 2, 2), 2: (2, 2, 2), 3: (0, 2, 2)}
    flat = score([d(text, Span(0, 4, "per"))], [d(text, Span(0, 4, "per"))])
    assert list(flat.per_level) == [1] and flat.per_level[1].f1 == 1.0


def test_report_serialises_and_prints():
    text = "Kobe in Rome"
    r = score([d(text, Span(0, 4, "per"), Span(8, 12, "loc"))], [d(text, Span(0, 4, "per"))])
    data = json.loads(json.dumps(r.to_dict()))
    assert set(data) >= {"micro", "macro", "per_type", "per_level", "extraction", "lenient",
                         "lenient_extraction", "sentences"}
    assert data["micro"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "tp": 1,
                             "n_pred": 1, "n_gold": 2}
    assert data["per_type"]["loc"]["recall"] == 0.0 and data["per_level"]["1"]["tp"] == 1
    assert data["sentences"] == 1
    table = r.table()
    assert "micro" in table and "  loc" in table and "lenient" in table and "0.6667" in table


# ---- properties ---------------------------------------------------------------------------------

TEXT = "Kobe Bryant met Paris Hilton in Paris last May"


@st.composite
def doc_spans(draw):
    cuts = sorted(draw(st.sets(st.integers(0, len(TEXT)), max_size=8)))
    return [Span(a, b, draw(st.sampled_from(["per", "loc", "org"])))
            for a, b in zip(cuts[::2], cuts[1::2]) if a < b]


corpus = st.lists(st.tuples(doc_spans(), doc_spans()), max_size=6)


def split(pairs):
    return [Document(TEXT, g) for g, _ in pairs], [Document(TEXT, p) for _, p in pairs]


def all_prf(r: Report) -> list[PRF]:
    return [r.micro, r.macro, r.extraction, r.lenient, r.lenient_extraction,
            *r.per_type.values(), *r.per_level.values()]


@given(corpus)
def test_perfect_predictions_score_one(pairs):
    gold, _ = split(pairs)
    assert all(m.precision == m.recall == m.f1 == 1.0 for m in all_prf(score(gold, gold)))


@given(corpus)
def test_scores_are_within_bounds(pairs):
    for m in all_prf(score(*split(pairs))):
        assert 0.0 <= min(m.precision, m.recall, m.f1) <= max(m.precision, m.recall, m.f1) <= 1.0
        assert m.tp <= min(m.n_pred, m.n_gold) or m.n_pred == m.n_gold == 0


@given(corpus, st.randoms(use_true_random=False))
def test_invariant_to_span_order_and_to_permuting_pairs(pairs, rnd):
    before = score(*split(pairs)).to_dict()
    shuffled = [(rnd.sample(g, len(g)), rnd.sample(p, len(p))) for g, p in pairs]
    rnd.shuffle(shuffled)
    after = score(*split(shuffled)).to_dict()
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)


# A three-level tree whose node names are all distinct, so a label names one path.
TREE = {"person": {"artist": ["actor", "singer"], "athlete": ["player"]},
        "place": {"city": ["capital", "town"]}}
PATHS = [(a, b, c) for a, sub in TREE.items() for b, leaves in sub.items() for c in leaves]


@st.composite
def doc_paths(draw):
    """Spans with a path of 1-3 levels (a prediction may stop early), or "unknown"."""
    cuts = sorted(draw(st.sets(st.integers(0, len(TEXT)), max_size=8)))
    spans = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        if a < b:
            path = draw(st.sampled_from(PATHS + [("unknown",)]))[:draw(st.integers(1, 3))]
            spans.append(Span(a, b, path[-1], path))
    return spans


tree_corpus = st.lists(st.tuples(doc_paths(), doc_paths()), max_size=6)


@given(tree_corpus, st.integers(1, 3))
def test_level_scores_compare_paths_cut_to_the_level(pairs, level):
    gold, pred = split(pairs)
    full = score(gold, pred)
    cut = score(at_level(gold, level), at_level(pred, level))
    if level in full.per_level:
        # cutting first changes nothing at that level, and with distinct names the level's
        # path comparison is the micro score of the cut labels
        assert cut.per_level[level] == full.per_level[level] == cut.micro
        # every span takes part at every level: the same counts as extraction
        assert (cut.micro.n_pred, cut.micro.n_gold) == (full.extraction.n_pred, full.extraction.n_gold)
    levels = sorted(full.per_level)
    assert all(full.per_level[a].tp >= full.per_level[b].tp for a, b in zip(levels, levels[1:]))
    assert all(m.tp <= full.extraction.tp for m in full.per_level.values())


@given(tree_corpus)
def test_confusion_diagonal_is_micro_tp_and_total_is_extraction_tp(pairs):
    gold, pred = split(pairs)
    r, table = score(gold, pred), confusion(gold, pred)
    assert sum(row.get(g, 0) for g, row in table.items()) == r.micro.tp
    assert sum(n for row in table.values() for n in row.values()) == r.extraction.tp
