"""Test helpers for data files.

The raw benchmark files live in $CASCADENER_DATA, else <repo>/../shared/datasets; a fresh clone has
neither, and tests that need them skip with the reason rather than fail.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path | None:
    env = os.environ.get("CASCADENER_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "datasets"
    return path if path.is_dir() else None


def dataset_file(relative: str) -> Path:
    """``datasets_dir() / relative``, or skip the calling test saying what is missing."""
    root = datasets_dir()
    if root is None:
        pytest.skip("shared datasets not found: set CASCADENER_DATA to the datasets directory "
                    "(the one holding conll2003/, crossner/, wikiann/, dynamicner/)")
    path = root / relative
    if not path.is_file():
        pytest.skip(f"{relative} not found under {root}")
    return path


def read_columns(path: Path) -> list[list[tuple[str, str]]]:
    """(token, last column) pairs per sentence, read independently of cascadener.data (an oracle's view)."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if current:
                sentences.append(current)
            current = []
        else:
            current.append((cols[0], cols[-1]))
    return sentences


def assert_read_error(reader, path: Path, content: str, line: int, message: str) -> None:
    """Reading `content` from `path` fails with a DataError naming the file and the line."""
    from cascadener.data import DataError

    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        reader(path)
    assert (err.value.path, err.value.line) == (str(path), line)
    assert message in str(err.value) and str(err.value).startswith(f"{path}:{line}: ")
