"""Every bad input ends in one line naming what is wrong (and the file, line or tensor), a nonzero exit,
and no traceback. The README's "Errors" section points here; each row of the tables below is a test.

The CLIs run in-process: anything but SystemExit escaping `main` would be a traceback for a user, so it
fails the test; `test_a_real_process_prints_one_line` checks the same from outside, once.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cascadener import load_model
from cascadener.cli import evaluate, infer
from cascadener.cli.common import set_threads
from cascadener.geic.spans import Document, Span
from cascadener.ner.pipeline import Options, resolve_categories
from cascadener.qwen2.lora import LoRAConfig, inject, save_adapter

REPO = Path(__file__).resolve().parent.parent


def run_cli(main, argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of one CLI run. SystemExit("error: ...") is what Python prints as one
    line with status 1; SystemExit(2) is argparse's, after its own message."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    if isinstance(code, str):
        err, code = err + code + "\n", 1
    return code, err


def assert_one_error_line(code: int, err: str, *expected: str) -> None:
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code not in (0, None), err
    assert "Traceback" not in err and len(errors) == 1, err
    for text in expected:
        assert text in errors[0], errors[0]


# --- broken checkpoints: infer.py --model DIR ----------------------------------------------------

def poison(ckpt: Path) -> None:
    t = load_file(str(ckpt / "model.safetensors"))
    t["model.norm.weight"] = np.full_like(t["model.norm.weight"], np.nan)
    save_file(t, str(ckpt / "model.safetensors"))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def drop_tensor(ckpt: Path) -> None:
    t = load_file(str(ckpt / "model.safetensors"))
    del t["model.layers.0.mlp.up_proj.weight"]
    save_file(t, str(ckpt / "model.safetensors"))


def edit_config(**change):
    def edit(ckpt: Path) -> None:
        cfg = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps(cfg | change))
    return edit


def pickle_only(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"never unpickled")


def adapter(files: dict[str, str]):
    def make(ckpt: Path) -> None:
        (ckpt / "adapter").mkdir()
        for name, content in files.items():
            (ckpt / "adapter" / name).write_text(content)
    return make


CHECKPOINTS = {   # case: (break the copy of the tiny checkpoint, extra arguments, what the line says)
    "no config.json": (lambda c: (c / "config.json").unlink(), [], ["no config.json"]),
    "config.json not JSON": (lambda c: (c / "config.json").write_text("{"), [], ["config.json:1:2: not valid JSON"]),
    "unknown config field": (edit_config(shiny=1), [], ["config.json", "unknown config fields ['shiny']"]),
    "RoPE scaling (transformers 5)": (edit_config(rope_parameters={"rope_theta": 1e4, "rope_type": "yarn"}), [],
                                      ["config.json", "RoPE scaling"]),
    "config and weights disagree": (edit_config(num_hidden_layers=3), [], ["missing tensors"]),
    "missing tensor": (drop_tensor, [], ["model.layers.0.mlp.up_proj.weight"]),
    "truncated weights": (lambda c: truncate(c / "model.safetensors"), [], ["model.safetensors", "truncated"]),
    "pickle weights only": (pickle_only, [], ["pickle checkpoints are refused"]),
    "NaN weights": (poison, [], ["model.safetensors", "model.norm.weight", "NaN"]),
    "no tokenizer.json": (lambda c: (c / "tokenizer.json").unlink(), [], ["no tokenizer.json"]),
    "no tokenizer_config.json": (lambda c: (c / "tokenizer_config.json").unlink(), [],
                                 ["tokenizer_config.json: missing"]),
    "generation_config.json not JSON": (lambda c: (c / "generation_config.json").write_text("[1,"), [],
                                        ["generation_config.json:1:4: not valid JSON"]),
    "adapter directory empty": (adapter({}), ["--adapter", "{ckpt}/adapter"], ["no adapter_config.json"]),
    "adapter config not JSON": (adapter({"adapter_config.json": "{", "adapter_model.safetensors": "x"}),
                                ["--adapter", "{ckpt}/adapter"], ["adapter_config.json:1:2: not valid JSON"]),
    "adapter weights corrupt": (adapter({"adapter_config.json": '{"r": 2, "target_modules": ["q_proj"]}',
                                         "adapter_model.safetensors": "not safetensors"}),
                                ["--adapter", "{ckpt}/adapter"], ["adapter_model.safetensors", "corrupt"]),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_broken_checkpoints(case, tiny_ckpt, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    (ckpt / "generation_config.json").write_text("{}")
    breaks, extra, expected = CHECKPOINTS[case]
    breaks(ckpt)
    argv = ["--text", "Kobe", "--labels", "person", "--model", str(ckpt), "--dtype", "fp32", "--k", "1"]
    code, err = run_cli(infer.main, argv + [a.format(ckpt=ckpt) for a in extra], capsys)
    assert_one_error_line(code, err, *expected)


# --- categories and labels: infer.py --categories FILE / --labels a,b ---------------------------

CATEGORIES = {   # case: (file name, content or None for no file, what the line says)
    "missing file": ("nope.json", None, ["nope.json: no such file"]),
    "broken JSON": ("cats.json", '{"person":\n  [1,]}', ["cats.json:2:6: invalid JSON"]),
    "number leaf": ("cats.json", '{"person": ["actor", 5]}', ["cats.json", "expected a category name, got 5"]),
    "number subtree": ("cats.json", '{"person": 5}', ["cats.json", "under person", "got 5"]),
    "too deep": ("cats.json", json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": ["j"]}}}}}}}}}),
                 ["cats.json", "deeper than 8 levels"]),
    "deeper than the parser goes": ("cats.json", "[" * 100_000 + "]" * 100_000, ["cats.json", "nested too deeply"]),
    "duplicate label": ("cats.json", '["person", "location", "Person"]', ["cats.json", "'person' appears twice"]),
    "empty list": ("cats.json", "[]", ["cats.json", "no categories"]),
    "empty name in a levels file": ("levels.json", '{"first-level": "person,,location"}',
                                    ["levels.json", "first-level", "empty"]),
    "reserved name": ("cats.json", '["unknown"]', ["cats.json", "reserved"]),
    "label list: duplicate": ("labels.txt", "person\nlocation\n\nPerson\n", ["labels.txt:4", "appears twice"]),
    "label list: empty file": ("labels.txt", "\n\n", ["labels.txt", "no categories"]),
    "not UTF-8": ("labels.txt", b"person\n\xff\xfe\n", ["labels.txt", "cannot read"]),
}


@pytest.mark.parametrize("case", CATEGORIES)
def test_bad_category_files(case, tmp_path, capsys):
    name, content, expected = CATEGORIES[case]
    if isinstance(content, str):
        (tmp_path / name).write_text(content, encoding="utf-8")
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    code, err = run_cli(infer.main, ["--text", "x", "--categories", str(tmp_path / name)], capsys)
    assert_one_error_line(code, err, *expected)


@pytest.mark.parametrize("labels, expected", [
    ("person,,location", "name 2 of 3 is empty"),
    ("person,", "name 2 of 2 is empty"),
    ("", "name 1 of 1 is empty"),
    ("person,location,Person", "'person' appears twice"),
])
def test_bad_label_lists(labels, expected, capsys):
    code, err = run_cli(infer.main, ["--text", "x", "--labels", labels], capsys)
    assert_one_error_line(code, err, f"--labels {labels!r}", expected)


@pytest.mark.parametrize("content, expected", [
    (None, ["--demos", "demos.jsonl"]),
    ('{"text": "Kobe", "entities": [{"start": 0, "end": 9}]}\n', ["--demos", "demos.jsonl:1", "runs past the end"]),
])
def test_bad_demonstration_files(content, expected, tiny_ckpt, tmp_path, capsys):
    if content is not None:
        (tmp_path / "demos.jsonl").write_text(content, encoding="utf-8")
    code, err = run_cli(infer.main, ["--text", "x", "--labels", "person", "--model", str(tiny_ckpt),
                                     "--demos", str(tmp_path / "demos.jsonl")], capsys)
    assert_one_error_line(code, err, *expected)


# --- options: one flag alone at parsing (argparse), the pair --min-votes/--k before loading ---------

@pytest.mark.parametrize("flag, value, expected", [
    ("--k", "0", "argument --k: must be at least 1, got 0"),
    ("--k", "-2", "argument --k: must be at least 1, got -2"),
    ("--k", "two", "argument --k: expected a whole number, got 'two'"),
    ("--min-votes", "0", "argument --min-votes: must be at least 1"),
    ("--chunk", "0", "argument --chunk: must be at least 1"),
    ("--batch-size", "0", "argument --batch-size: must be at least 1"),
    ("--shots", "0", "argument --shots: must be at least 1"),
    ("--threads", "0", "argument --threads: must be at least 1"),
    ("--max-segment-chars", "5", "argument --max-segment-chars: must be at least 10, got 5"),
])
def test_bad_option_values_fail_at_parsing(flag, value, expected, capsys):
    for main in (infer.main, evaluate.main):
        code, err = run_cli(main, ["--text", "x", "--labels", "person", flag, value]
                            if main is infer.main else ["--data", "x.txt", flag, value], capsys)
        assert code == 2
        assert_one_error_line(code, err, expected)


def test_more_votes_than_runs_fails_before_the_model_loads(capsys, monkeypatch):
    monkeypatch.setattr("cascadener.cli.common.find_checkpoint", lambda _: pytest.fail("the model was looked for"))
    code, err = run_cli(infer.main, ["--text", "x", "--labels", "person", "--k", "3", "--min-votes", "5"], capsys)
    assert_one_error_line(code, err, "min_votes 5 is more than k 3")


@pytest.mark.parametrize("change, expected", [
    ({"k": 0}, "k must be a positive integer"),
    ({"min_votes": 4}, "min_votes 4 is more than k 3"),
    ({"min_votes": 0}, "min_votes must be a positive integer"),
    ({"max_segment_chars": 3}, "max_segment_chars must be at least 10"),
    ({"label_tokens": 0}, "label_tokens must be a positive integer"),
    ({"prompt_format": "fancy"}, "unknown prompt_format 'fancy'"),
])
def test_options_refuse_what_would_tag_nothing(change, expected):
    with pytest.raises(ValueError, match=expected):
        Options(**change)


# --- eval.py ------------------------------------------------------------------------------------

def test_eval_refuses_to_score_nothing(tmp_path, capsys):
    (tmp_path / "gold.txt").write_text("")
    (tmp_path / "pred.txt").write_text("\n\n")
    code, err = run_cli(evaluate.main, ["--predictions", str(tmp_path / "pred.txt"),
                                        "--gold", str(tmp_path / "gold.txt")], capsys)
    assert_one_error_line(code, err, "gold.txt: no documents: nothing to score", "pred.txt")


@pytest.mark.parametrize("case, gold, expected", [
    ("missing file", None, ["No such file", "gold.txt"]),
    ("not UTF-8", b"Kobe B-PER\n\xe9t\xe9 O\n", ["gold.txt:2: not UTF-8 text"]),
    ("a CoNLL line with no tag", b"Kobe\n", ["gold.txt:1: expected a token and a tag"]),
])
def test_eval_bad_gold_files(case, gold, expected, tmp_path, capsys):
    (tmp_path / "pred.txt").write_text("Kobe B-PER\n", encoding="utf-8")
    if gold is not None:
        (tmp_path / "gold.txt").write_bytes(gold)
    code, err = run_cli(evaluate.main, ["--predictions", str(tmp_path / "pred.txt"),
                                        "--gold", str(tmp_path / "gold.txt")], capsys)
    assert_one_error_line(code, err, *expected)


# --- the library API ------------------------------------------------------------------------------

def test_labels_as_a_string_are_refused():
    with pytest.raises(TypeError, match=r"labels must be a list of names such as \['person'\]"):
        resolve_categories("person", None)
    with pytest.raises(ValueError, match="no entity types"):
        resolve_categories([], None)
    assert resolve_categories(["person"], None).roots == ["person"]


def test_documents_serialize_as_the_jsonl_record():
    doc = Document("Kobe in Paris", [Span(8, 13, "location"), Span(0, 4, "person", ("person",), 0.5)], id="d1")
    assert json.loads(doc.to_json()) == doc.to_dict() == {
        "text": "Kobe in Paris", "id": "d1", "entities": [
            {"start": 0, "end": 4, "text": "Kobe", "label": "person", "path": ["person"], "score": 0.5},
            {"start": 8, "end": 13, "text": "Paris", "label": "location", "path": [], "score": None}]}


def test_threads_follow_the_flag_then_omp_num_threads(monkeypatch):
    import torch
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    set_threads(None)
    assert torch.get_num_threads() == 1          # torch already follows OMP_NUM_THREADS
    set_threads(2)
    assert torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    set_threads(None)
    assert torch.get_num_threads() == 3          # neither given: every core


def test_the_library_sets_no_threads():
    for path in (REPO / "cascadener").rglob("*.py"):
        if "cli" not in path.parts:
            assert "set_num_threads" not in path.read_text(encoding="utf-8"), path


# --- one real process ---------------------------------------------------------------------------

def test_a_real_process_prints_one_line(tiny_ckpt, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    poison(ckpt)
    run = subprocess.run([sys.executable, str(REPO / "infer.py"), "--text", "Kobe", "--labels", "person",
                          "--model", str(ckpt), "--dtype", "fp32", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout == ""
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1].startswith("error: ") and "model.norm.weight" in run.stderr
    assert len(run.stderr.splitlines()) == 2      # "loading ..." and the error


def test_activated_adapters_with_a_format_that_has_no_head(tiny_ckpt, tmp_path, capsys):
    model, cfg = load_model(tiny_ckpt), LoRAConfig(r=2, lora_alpha=4, activated=True)
    inject(model, cfg)
    save_adapter(model, cfg, tmp_path / "ext")
    code, err = run_cli(infer.main, ["--text", "x", "--labels", "person", "--model", str(tiny_ckpt), "--adapter",
                                     str(tmp_path / "ext"), "--prompt-format", "prefix"], capsys)
    assert_one_error_line(code, err, "activated adapters", "use --prompt-format joint")


def test_an_adapter_asked_for_other_prompts_than_it_learnt(tiny_ckpt, tmp_path, capsys):
    model, cfg = load_model(tiny_ckpt), LoRAConfig(r=2, lora_alpha=4)
    inject(model, cfg)
    save_adapter(model, cfg, tmp_path / "ext")
    (tmp_path / "ext" / "train_config.json").write_text('{"prompt_format": "prefix", "system": null}')
    argv = ["--text", "x", "--labels", "person", "--model", str(tiny_ckpt), "--adapter", str(tmp_path / "ext")]
    code, err = run_cli(infer.main, argv + ["--prompt-format", "joint"], capsys)
    assert_one_error_line(code, err, "trained on 'prefix' prompts", "use --prompt-format prefix")
    assert "loading" not in err                         # refused before the weights load
    (tmp_path / "ext" / "train_config.json").write_text('{"prompt_format": "prefix"')
    code, err = run_cli(infer.main, argv, capsys)
    assert_one_error_line(code, err, "train_config.json: not a readable training record")
