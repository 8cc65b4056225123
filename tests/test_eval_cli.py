"""eval.py on saved predictions: printed scores, the JSON report, and clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascadener.cli import evaluate as eval_cli

GOLD_CONLL = """\
-DOCSTART- -X- -X- O

John B-PER
Smith I-PER
visited O
New B-LOC
York I-LOC

Acme B-ORG
hired O
Jane B-PER
"""
# "New York" is right but tagged I- after O (decoded leniently), Acme has the wrong type, one extra
# entity "hired". Spans: 4 predicted, 4 gold, 2 exact; 3 right spans ignoring type.
PRED_CONLL = """\
John\tB-PER
Smith\tI-PER
visited\tO
New\tI-LOC
York\tI-LOC

Acme\tB-LOC
hired\tB-MISC
Jane\tO
"""


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def test_conll_files(tmp_path, capsys):
    gold, pred = write(tmp_path, "gold.txt", GOLD_CONLL), write(tmp_path, "pred.tsv", PRED_CONLL)
    report_path = tmp_path / "report.json"
    assert eval_cli.main(["--predictions", pred, "--gold", gold, "--report", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"predictions {pred} vs gold {gold}"
    assert "2 sentences" in out
    # Table rows: a name, then P R F1 tp pred gold.
    lines = {" ".join(line.split()[:-6]): line.split() for line in out.splitlines() if len(line.split()) > 6}
    assert lines["micro (span, type)"][-6:] == ["0.5000", "0.5000", "0.5000", "2", "4", "4"]
    assert lines["extraction (span only)"][-6:] == ["0.7500", "0.7500", "0.7500", "3", "4", "4"]
    assert lines["PER"][-6:] == ["1.0000", "0.5000", "0.6667", "1", "1", "2"]
    assert "lenient (string, type)" in lines
    assert "note: 1 predicted entities were not well-formed IOB2" in out

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert {"micro", "per_type", "extraction", "lenient", "sentences"} <= report.keys()
    assert report["sentences"] == 2
    assert [report["micro"][k] for k in ("precision", "recall", "f1")] == [0.5, 0.5, 0.5]
    assert report["extraction"]["f1"] == 0.75
    assert report["lenient"]["f1"] == 0.5
    assert set(report["per_type"]) == {"PER", "LOC", "ORG", "MISC"}
    assert report["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "n_pred": 0, "n_gold": 1}
    assert report["files"] == {"predictions": pred, "gold": gold}


def test_jsonl_predictions_against_geic_gold(tmp_path, capsys):
    gold = write(tmp_path, "gold.json", json.dumps({
        "sentence1": {"sentence": "Le Guin wrote Earthsea .", "entity": ["Le Guin", "Earthsea", "Ged"],
                      "category": ["author", "book", "person"]}}))
    pred = write(tmp_path, "pred.jsonl", json.dumps({
        "text": "Le Guin wrote Earthsea .",
        "entities": [{"start": 0, "end": 7, "label": "author"}, {"start": 14, "end": 22, "label": "city"}]}) + "\n")
    assert eval_cli.main(["--predictions", pred, "--gold", gold, "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "note: 1 gold entities could not be placed in their text and are not scored" in out
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["micro"]["tp"] == 1 and report["extraction"]["tp"] == 2 and report["micro"]["n_gold"] == 2
    assert len(report["notes"]) == 1


def test_predictions_in_infer_output_schema(tmp_path, capsys):
    """eval.py reads what infer.py --format jsonl writes: Document.to_json lines, entity "text" and all."""
    from cascadener.geic.spans import Document, Span
    text = "Kobe Bryant played for the Lakers ."
    pred = Document(text, [Span(0, 11, "person", ("agent", "person"), 0.97), Span(27, 33, "location", score=0.5)])
    gold = write(tmp_path, "gold.jsonl", json.dumps({"text": text, "entities": [
        {"start": 0, "end": 11, "label": "person"}, {"start": 27, "end": 33, "label": "organization"}]}) + "\n")
    pred_path = write(tmp_path, "pred.jsonl", pred.to_json() + "\n")
    assert '"text": "Kobe Bryant"' in Path(pred_path).read_text(encoding="utf-8")
    assert eval_cli.main(["--predictions", pred_path, "--gold", gold, "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert (report["micro"]["tp"], report["extraction"]["tp"], report["micro"]["n_gold"]) == (1, 2, 2)


@pytest.mark.parametrize("gold_content, message", [
    (GOLD_CONLL + "\nextra B-PER\n", "2 documents, but the gold file"),
    (GOLD_CONLL.replace("Jane", "Joan"), "document 2 (pred.tsv:7) does not match gold document 2 (gold.txt:9)"),
    (GOLD_CONLL.replace("B-ORG", "X-ORG"), "gold.txt:9: unknown tag 'X-ORG'"),
])
def test_mismatches_and_bad_files_are_clear_errors(tmp_path, capsys, gold_content, message):
    gold, pred = write(tmp_path, "gold.txt", gold_content), write(tmp_path, "pred.tsv", PRED_CONLL)
    assert eval_cli.main(["--predictions", pred, "--gold", gold]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_missing_inputs(tmp_path, capsys):
    assert eval_cli.main(["--predictions", str(tmp_path / "none.txt"), "--gold", str(tmp_path / "none.txt")]) == 1
    assert "No such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        eval_cli.main(["--gold", "g.txt"])
    assert exit_.value.code == 2 and "give --predictions and --gold" in capsys.readouterr().err


def test_saved_and_model_modes_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        eval_cli.main(["--data", "d.txt", "--predictions", "p", "--gold", "g"])
    assert "give one or the other" in capsys.readouterr().err
    args = eval_cli.build_parser().parse_args(["--data", "d", "--model", "m", "--k", "1", "--sample", "300"])
    assert (args.data, args.model, args.k, args.sample, args.scheme) == ("d", "m", 1, 300, "auto")


def test_data_runs_the_model_and_reports_what_saved_predictions_score(tmp_path, tiny_ckpt, capsys):
    """eval.py --data on the tiny checkpoint: the report it writes for the run equals eval.py's score
    of the predictions it saved, against the same gold."""
    texts = ["Kobe played in Paris", "Angela visited Berlin", "The Lakers won"]
    entities = [[(0, 4, "person"), (15, 20, "location")], [(0, 6, "person"), (15, 21, "location")],
                [(4, 10, "organization")]]
    gold = write(tmp_path, "gold.jsonl", "".join(json.dumps({"text": t, "entities": [
        {"start": s, "end": e, "label": label} for s, e, label in es]}) + "\n" for t, es in zip(texts, entities)))
    run_report, saved, page = tmp_path / "run.json", tmp_path / "pred.jsonl", tmp_path / "run.html"
    assert eval_cli.main(["--data", gold, "--model", str(tiny_ckpt), "--dtype", "fp32", "--k", "1", "--threads", "1",
                          "--report", str(run_report), "--save-predictions", str(saved), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{gold}: 3 sentences, labels person, location, organization\n")
    assert "micro (span, type)" in out and "sentences/s" in out
    ran = json.loads(run_report.read_text(encoding="utf-8"))
    assert ran["data"] == gold and ran["labels"] == ["person", "location", "organization"]
    assert ran["sentences"] == 3 and ran["micro"]["n_gold"] == 5 and ran["sentences_per_second"] > 0
    assert ran["pipeline"]["texts"] == 3 and ran["pipeline"]["extraction_prompts"] == 3
    assert eval_cli.main(["--predictions", str(saved), "--gold", gold, "--report", str(tmp_path / "saved.json")]) == 0
    rescored = json.loads((tmp_path / "saved.json").read_text(encoding="utf-8"))
    for key in ("micro", "macro", "per_type", "extraction", "lenient", "lenient_extraction", "sentences"):
        assert ran[key] == rescored[key], key
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
