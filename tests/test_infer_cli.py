"""infer.py end to end on a tiny random model: output schema, batch records, errors, views."""
from __future__ import annotations

import json
import re

import pytest

from cascadener.cli import infer

LABELS = ["--labels", "person,location,organization"]


@pytest.fixture
def tiny_args(tiny_ckpt):
    return ["--model", str(tiny_ckpt), "--dtype", "fp32", "--k", "1"] + LABELS


def test_text_json_schema(tiny_args, capsys):
    assert infer.main(["--text", "Kobe Bryant played in Paris.", "--format", "json"] + tiny_args) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["text", "entities"] and out["text"] == "Kobe Bryant played in Paris."
    for e in out["entities"]:
        assert list(e) == ["start", "end", "text", "label", "path", "score"]
        assert out["text"][e["start"]:e["end"]] == e["text"]


def test_batch_keeps_order_and_reports_bad_records(tiny_args, tmp_path, capsys):
    """A JSONL file (its first record is an object): every other line must be one too."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Kobe Bryant"}\n{"text": \n\nplain line about Paris\n{"id": "x"}\n[1, 2]\n'
                   '{"text": "北京", "lang": "zh"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code = infer.main(["--input", str(src), "--output", str(out)] + tiny_args)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert code == 1                                    # some records failed ...
    assert [r.get("text") or r.get("error")[:14] for r in rows] == [
        "Kobe Bryant", "invalid JSON (", "invalid JSON (", 'record has no ', "expected a JSO", "北京"]   # ... the rest is written
    assert [r.get("line") for r in rows] == [None, 2, 4, 5, 6, None] and rows[3]["id"] == "x" and rows[5]["lang"] == "zh"
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("6 texts, ") and " 4 errors, " in err[-1] and "texts/s" in err[-1]


def test_html_and_pretty(tiny_args, tmp_path, capsys):
    page = tmp_path / "page.html"
    assert infer.main(["--text", "Kobe <b> & Paris", "--format", "html", "--output", str(page)] + tiny_args) == 0
    html = page.read_text(encoding="utf-8")
    body = html[html.index("<body"):]
    assert html.startswith("<!DOCTYPE html>") and "&lt;" in body and "<b>" not in body and "&amp;" in body
    assert infer.main(["--text", "Kobe in Paris", "--no-color"] + tiny_args) == 0
    plain = re.sub(r"\](person|location|organization) [0-9.]+", "", capsys.readouterr().out).replace("[", "")
    assert plain == "Kobe in Paris\n"                    # every entity bracketed in place, nothing else


def test_no_weights_says_where_it_looked(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CASCADENER_ASSETS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CASCADENER_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        infer.main(["--text", "x"] + LABELS)
    err = str(exit_.value.code)
    assert "no model weights found" in err and "nowhere" in err and "cascadener.qwen2.download" in err


def test_labels_are_required(tiny_args):
    with pytest.raises(SystemExit, match="--labels"):
        infer.main(["--text", "x", "--model", "m"])


def test_one_adapter_for_both_stages_excludes_the_per_stage_ones(tiny_args):
    with pytest.raises(SystemExit, match="--adapter serves both stages"):
        infer.main(["--text", "x", "--adapter", "a", "--classifier-adapter", "c"] + tiny_args)


def test_joint_format_runs_end_to_end(tiny_args, capsys):
    assert infer.main(["--text", "Kobe Bryant played in Paris.", "--format", "json",
                       "--prompt-format", "joint"] + tiny_args) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "Kobe Bryant played in Paris."


@pytest.mark.parametrize("prompt_format", ["paper", "joint"])
def test_naive_engine_equals_fast_engine_without_constraints(tiny_args, tmp_path, prompt_format):
    """The auditing switch: the authors' one-at-a-time loop and the batched, prefix-sharing engine
    agree exactly under greedy decoding once label scoring is switched off (joint: with one
    engine for both stages, classification starts from the extraction prompts' cache)."""
    tiny_args = tiny_args + ["--prompt-format", prompt_format]
    src = tmp_path / "in.txt"
    src.write_text("Kobe Bryant played for the Lakers.\nAngela Merkel visited Paris.\n北京是首都。\nshort\n",
                   encoding="utf-8")
    outs = []
    for engine in (["--engine", "naive"], ["--no-constrain", "--batch-size", "4"]):
        out = tmp_path / f"{engine[0]}.jsonl"
        assert infer.main(["--input", str(src), "--output", str(out)] + engine + tiny_args) == 0
        outs.append(out.read_text(encoding="utf-8"))
    assert outs[0] == outs[1]
