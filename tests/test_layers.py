"""The package's folders are layers, and every import points down (README, "Layout"): a model
never knows about NER, the NER side never about training. Read from the source, lazy imports too."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cascadener"
# top to bottom, as README.md lists them; a folder may import only folders below it
LAYERS = ["cli", "training", "evaluation", "ner", "engine", "qwen2", "data", "geic", "kernels"]
IMPORT = re.compile(r"^\s*(?:from|import)\s+cascadener\.(\w+)", re.M)


def test_every_import_points_down():
    assert sorted(LAYERS) == sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    upward = []
    for layer in LAYERS:
        for source in sorted((PACKAGE / layer).rglob("*.py")):
            for target in IMPORT.findall(source.read_text(encoding="utf-8")):
                if target != layer and LAYERS.index(target) < LAYERS.index(layer):
                    upward.append(f"{source.relative_to(PACKAGE)} imports cascadener.{target}")
    assert not upward, upward
