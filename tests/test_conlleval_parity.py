"""On BIO input our span scores equal conlleval's.

The oracle is seqeval in its default mode, which reimplements conlleval's chunk rules (and extends
them to E-/S- tags); it is an optional test dependency, so those tests skip without it. One small
case is worked out by hand below so that the parity claim is checked even without seqeval.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadener.data.tags import Chunk, decode
from cascadener.evaluation.saved import evaluate_files
from data_helpers import dataset_file, read_columns

try:
    from seqeval.metrics import classification_report
    from seqeval.metrics.sequence_labeling import get_entities
except ImportError:           # optional test dependency (extra "test"): pip install seqeval
    classification_report = get_entities = None

needs_seqeval = pytest.mark.skipif(get_entities is None, reason="seqeval (the conlleval oracle) is not installed")

TYPES = ["PER", "LOC", "ORG", "MISC"]
TAGS = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BI"]


def write_columns(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("\n".join("".join(f"{tok} {tag}\n" for tok, tag in s) for s in sentences), encoding="utf-8")
    return path


def score_tags(tmp_path: Path, tokens: list[list[str]], gold: list[list[str]], pred: list[list[str]]):
    gold_file = write_columns(tmp_path / "gold.txt", [list(zip(t, g)) for t, g in zip(tokens, gold)])
    pred_file = write_columns(tmp_path / "pred.txt", [list(zip(t, p)) for t, p in zip(tokens, pred)])
    return evaluate_files(pred_file, gold_file).report


# --- by hand, no oracle needed -------------------------------------------------------------------

HAND_TOKENS = [["John", "Smith", "lives", "in", "New", "York"], ["Acme", "Corp", "hired", "Jane"],
               ["Paris", "Berlin", "Rome"]]
HAND_GOLD = [["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG", "O", "B-PER"],
             ["B-LOC", "B-LOC", "B-LOC"]]
HAND_PRED = [["B-PER", "I-PER", "O", "O", "I-LOC", "I-LOC"],   # I- after O opens "New York": correct
             ["B-ORG", "I-PER", "O", "B-PER"],                 # type change mid-chunk: "Acme" ORG + "Corp" PER
             ["I-LOC", "I-LOC", "B-LOC"]]                      # IOB1: "Paris Berlin" LOC + "Rome" LOC


def test_hand_computed_conlleval_figures(tmp_path):
    # conlleval's chunks. Gold: John Smith/PER, New York/LOC, Acme Corp/ORG, Jane/PER, Paris, Berlin,
    # Rome/LOC = 7. Predicted: John Smith/PER ok, New York/LOC ok, Acme/ORG, Corp/PER, Jane/PER ok,
    # Paris Berlin/LOC, Rome/LOC ok = 7 with 4 correct. So P = R = F1 = 4/7 (conlleval: 57.14).
    report = score_tags(tmp_path, HAND_TOKENS, HAND_GOLD, HAND_PRED)
    assert (report.micro.tp, report.micro.n_pred, report.micro.n_gold) == (4, 7, 7)
    assert report.micro.f1 == pytest.approx(4 / 7)
    per_type = {t: (m.tp, m.n_pred, m.n_gold) for t, m in report.per_type.items()}
    assert per_type == {"PER": (2, 3, 2), "LOC": (2, 3, 4), "ORG": (0, 1, 1)}
    assert report.per_type["LOC"].f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert report.sentences == 3


# --- against seqeval (conlleval's rules) ---------------------------------------------------------

def seqeval_figures(gold: list[list[str]], pred: list[list[str]]) -> dict[str, tuple[float, float, float, int]]:
    """{type or 'micro avg': (precision, recall, f1, support)} from seqeval's default (conlleval) mode."""
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    return {k: (v["precision"], v["recall"], v["f1-score"], v["support"])
            for k, v in report.items() if k not in ("macro avg", "weighted avg")}


def ours(report) -> dict[str, tuple[float, float, float, int]]:
    rows = {t: m for t, m in report.per_type.items() if m.n_gold}   # seqeval lists gold types only
    rows["micro avg"] = report.micro
    return {k: (m.precision, m.recall, m.f1, m.n_gold) for k, m in rows.items()}


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


@needs_seqeval
def test_hand_case_matches_seqeval(tmp_path):
    assert_same(ours(score_tags(tmp_path, HAND_TOKENS, HAND_GOLD, HAND_PRED)), seqeval_figures(HAND_GOLD, HAND_PRED))


def corrupt(tags: list[str], rng: random.Random, rate: float) -> list[str]:
    """Replace each tag with a random one with probability ``rate`` (breaks boundaries, types, schemes)."""
    return [rng.choice(TAGS) if rng.random() < rate else t for t in tags]


@needs_seqeval
@pytest.mark.parametrize("name", ["iob2/test.txt", "eng.testb"])
@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_real_conll_with_noisy_predictions(tmp_path, name, rate):
    sentences = read_columns(dataset_file(f"conll2003/{name}"))
    tokens = [[tok for tok, _ in s] for s in sentences]
    gold = [[tag for _, tag in s] for s in sentences]
    rng = random.Random(f"{name}-{rate}")
    pred = [corrupt(g, rng, rate) for g in gold]
    expected = seqeval_figures(gold, pred)
    assert 0.2 < expected["micro avg"][2] < 0.95       # the noise really bites
    assert_same(ours(score_tags(tmp_path, tokens, gold, pred)), expected)


EDGE_CASES = [  # (gold, pred), one sentence each
    (["O", "I-PER", "I-PER"], ["O", "I-PER", "I-PER"]),                   # I- after O / at sentence start
    (["B-PER", "I-PER", "O"], ["I-PER", "O", "I-PER"]),
    (["B-ORG", "I-ORG", "I-ORG"], ["B-ORG", "I-LOC", "I-ORG"]),            # type changes mid-chunk
    (["I-LOC", "I-LOC", "B-LOC"], ["B-LOC", "I-LOC", "I-LOC"]),            # IOB1 B- between same-type entities
    (["I-MISC", "B-MISC", "I-ORG"], ["B-MISC", "B-MISC", "B-ORG"]),
    (["B-PER", "B-PER", "O", "B-LOC"], ["I-PER", "I-PER", "O", "I-LOC"]),
    (["B-LOC", "I-LOC", "I-LOC", "O"], ["B-LOC", "I-LOC", "B-LOC", "O"]),
]


@needs_seqeval
def test_edge_cases_match_seqeval(tmp_path):
    gold = [g for g, _ in EDGE_CASES]
    pred = [p for _, p in EDGE_CASES]
    tokens = [[f"w{i}" for i in range(len(g))] for g in gold]
    assert_same(ours(score_tags(tmp_path, tokens, gold, pred)), seqeval_figures(gold, pred))


ANY_TAG = st.sampled_from(["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B", "I-x-y"])


@needs_seqeval
@settings(max_examples=500, deadline=None)
@given(st.lists(ANY_TAG, max_size=15))
def test_decode_equals_seqeval_get_entities(tags):
    """Chunk by chunk, including IOBES and every irregular sequence."""
    expected = [Chunk(start, end + 1, label) for label, start, end in get_entities(list(tags))]
    assert decode(tags) == expected
