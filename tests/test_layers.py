"""The package's folders are layers (README, "Layout"): each imports only the folders below it, and
the two stacks under the NER side never meet: the model side (engine, qwen2, kernels) knows nothing
of entities, the data side (data, geic) nothing of models. Read from the source, lazy imports too."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cascadener"
MODEL, DATA = {"engine", "qwen2", "kernels"}, {"data", "geic"}
MAY_IMPORT = {
    "cli": {"training", "evaluation", "ner"} | MODEL | DATA,
    "training": {"ner"} | MODEL | DATA,
    "evaluation": {"ner"} | MODEL | DATA,
    "ner": MODEL | DATA,
    "engine": {"qwen2", "kernels"},
    "qwen2": {"kernels"},
    "kernels": set(),
    "data": {"geic"},
    "geic": set(),
}
IMPORT = re.compile(r"^\s*(?:from|import)\s+cascadener\.(\w+)", re.M)


def test_every_import_points_down_its_stack():
    assert set(MAY_IMPORT) == {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    wrong = [f"{source.relative_to(PACKAGE)} imports cascadener.{target}"
             for layer, allowed in MAY_IMPORT.items()
             for source in sorted((PACKAGE / layer).rglob("*.py"))
             for target in IMPORT.findall(source.read_text(encoding="utf-8"))
             if target != layer and target not in allowed]
    assert not wrong, wrong
