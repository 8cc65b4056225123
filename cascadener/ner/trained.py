"""What weights were trained on: the prompt format and system prompt that train.py records beside
every adapter it writes (train_config.json), read back so that inference sends the same strings.

An adapter answers only the prompts it was trained on: a pair of `prefix` adapters asked with
`joint` prompts tags almost nothing (span F1 0.04, BENCHMARKS.md "Two activated adapters"), with no
error anywhere. So loading takes the format from the record when none is asked for, and refuses
one that differs. Weights without a record (a base model, the authors' checkpoints, another
tool's adapter) are taken on trust.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cascadener.ner.prompts import PROMPT_FORMATS

# train.py writes it into the run's folder and copies it into best/, checkpoint/ and merged/, so
# every directory of weights a run leaves says what it was trained on.
RECORD = "train_config.json"


@dataclass(frozen=True)
class Trained:
    prompt_format: str
    system: str | None           # None: the format's own default
    record: Path                 # the file it was read from

    @property
    def prompts(self) -> tuple[str, str | None]:
        return self.prompt_format, self.system

    def describe(self) -> str:
        return prompts_named(self.prompt_format, self.system)


def prompts_named(prompt_format: str, system: str | None) -> str:
    return f"{prompt_format!r} prompts" + (f" with the system prompt {system!r}" if system is not None else "")


def trained_with(directory: str | Path | None) -> Trained | None:
    """The record beside the weights in `directory`, or None when there is none."""
    if directory is None:
        return None
    path = Path(directory) / RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable training record ({e})") from None
    fmt, system = (data.get("prompt_format"), data.get("system")) if isinstance(data, dict) else (None, None)
    if fmt not in PROMPT_FORMATS or not (system is None or isinstance(system, str)):
        raise ValueError(f"{path}: a training record needs prompt_format (one of {', '.join(sorted(PROMPT_FORMATS))}) "
                         f"and system (a string or null); got {fmt!r} and {system!r}")
    return Trained(fmt, system, path)


def agreed(directories: Iterable[str | Path | None]) -> Trained | None:
    """The one record that the weights of `directories` share (None when none has a record).
    Two that differ are refused: one pipeline sends one format to both stages."""
    records = [r for r in map(trained_with, directories) if r is not None]
    for other in records[1:]:
        if other.prompts != records[0].prompts:
            raise ValueError(f"the weights were trained on different prompts: {records[0].describe()} "
                             f"({records[0].record}), {other.describe()} ({other.record})")
    return records[0] if records else None
