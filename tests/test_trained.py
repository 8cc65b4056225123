"""The prompts weights were trained on (ner/trained.py): read from train.py's record beside them,
taken when none are asked for, and refused when others are."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cascadener import load_model
from cascadener.cli import infer
from cascadener.cli.common import options_from_args
from cascadener.ner.pipeline import CascadeNER, Options, fitted
from cascadener.ner.trained import RECORD, Trained, agreed, trained_with
from cascadener.qwen2.lora import LoRAConfig, inject, save_adapter


def recorded(folder: Path, prompt_format: str, system: str | None = None) -> Path:
    """A folder with train.py's record in it (the other keys of a real one do not matter here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).write_text(json.dumps({"task": "joint", "prompt_format": prompt_format, "system": system}))
    return folder


def test_a_record_is_read_and_its_absence_is_none(tmp_path):
    assert trained_with(None) is None and trained_with(tmp_path) is None
    assert trained_with(recorded(tmp_path / "a", "joint", "Be brief.")) == \
        Trained("joint", "Be brief.", tmp_path / "a" / RECORD)


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not a readable training record"),
    ('{"prompt_format": "fancy", "system": null}', "got 'fancy' and None"),
    ('{"prompt_format": "joint", "system": 3}', "got 'joint' and 3"),
    ('["joint"]', "a training record needs prompt_format"),
])
def test_a_bad_record_is_refused_naming_its_file(tmp_path, content, expected):
    (tmp_path / RECORD).write_text(content)
    with pytest.raises(ValueError, match=expected) as e:
        trained_with(tmp_path)
    assert str(tmp_path / RECORD) in str(e.value)


def test_the_stages_weights_must_agree(tmp_path):
    joint, prefix, bare = recorded(tmp_path / "j", "joint"), recorded(tmp_path / "p", "prefix"), tmp_path
    assert agreed([bare, None, joint, joint]).prompt_format == "joint"
    assert agreed([bare, None]) is None
    with pytest.raises(ValueError, match="trained on different prompts") as e:
        agreed([joint, prefix])
    assert str(joint / RECORD) in str(e.value) and str(prefix / RECORD) in str(e.value)
    with pytest.raises(ValueError, match="different prompts"):
        agreed([joint, recorded(tmp_path / "s", "joint", "Be brief.")])


def test_options_are_fitted_to_the_record(tmp_path):
    joint = trained_with(recorded(tmp_path / "j", "joint", "Be brief."))
    assert fitted(None, None) == Options() and fitted(Options(k=1), None) == Options(k=1)
    assert fitted(None, joint) == Options(prompt_format="joint", system="Be brief.")
    assert fitted(Options(k=1, prompt_format="joint"), joint) == Options(k=1, prompt_format="joint", system="Be brief.")
    with pytest.raises(ValueError, match="use --prompt-format joint") as e:
        fitted(Options(prompt_format="prefix"), joint)
    assert "trained on 'joint' prompts with the system prompt 'Be brief.'" in str(e.value)
    with pytest.raises(ValueError, match="leave --system out"):
        fitted(Options(prompt_format="joint", system="Be verbose."), joint)


@pytest.fixture
def joint_adapter(tiny_ckpt, tmp_path) -> Path:
    model, cfg = load_model(tiny_ckpt), LoRAConfig(r=2, lora_alpha=4)
    inject(model, cfg)
    save_adapter(model, cfg, tmp_path / "joint")
    return recorded(tmp_path / "joint", "joint")


def test_the_pipeline_takes_the_adapters_format_and_refuses_another(tiny_ckpt, joint_adapter):
    ner = CascadeNER.load(model=tiny_ckpt, extractor_adapter=joint_adapter, classifier_adapter=joint_adapter,
                          dtype=torch.float32, device="cpu")
    assert ner.options.prompt_format == "joint" and ner.format.name == "joint"
    with pytest.raises(ValueError, match="use --prompt-format joint"):
        CascadeNER.load(model=tiny_ckpt, extractor_adapter=joint_adapter, classifier_adapter=joint_adapter,
                        dtype=torch.float32, device="cpu", options=Options(prompt_format="prefix"))


def test_the_clis_default_is_the_recorded_format(tiny_ckpt, joint_adapter):
    def parsed(*extra: str):
        return infer.parser().parse_args(["--text", "x", "--labels", "person", "--model", str(tiny_ckpt), *extra])
    args = parsed("--adapter", str(joint_adapter))
    assert options_from_args(args).prompt_format == "joint" and args.prompt_format == "joint"
    args = parsed()                                        # a bare base model: the authors' format
    assert options_from_args(args).prompt_format == "paper" and args.prompt_format == "paper"
