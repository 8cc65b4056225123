"""Where checkpoints are looked for, and the message when none is found."""
from __future__ import annotations

import os
from pathlib import Path

REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
HOW_TO_GET = ("Get weights with `python -m cascadener.qwen2.download Qwen/Qwen2.5-0.5B-Instruct` "
              "(writes weights/Qwen2.5-0.5B-Instruct), or pass any checkpoint directory in the Hugging Face "
              "layout with --model DIR. See weights/README.md.")


class WeightsNotFound(FileNotFoundError):
    pass


def find_checkpoint(explicit: str | Path | None = None) -> Path:
    """--model DIR if given, else $CASCADENER_ASSETS, else the first checkpoint under weights/."""
    if explicit is not None:
        path = Path(explicit)
        if not (path / "config.json").exists():
            raise WeightsNotFound(f"{path}: not a checkpoint directory (no config.json). {HOW_TO_GET}")
        return path
    looked = []
    env = os.environ.get("CASCADENER_ASSETS")
    if env:
        looked.append(f"$CASCADENER_ASSETS={env}")
        if (Path(env) / "config.json").exists():
            return Path(env)
    else:
        looked.append("$CASCADENER_ASSETS (not set)")
    found = sorted(p.parent for p in REPO_WEIGHTS.glob("*/config.json"))
    looked.append(f"{REPO_WEIGHTS}/*/config.json")
    if found:
        return found[0]
    raise WeightsNotFound(f"no model weights found; looked in {', '.join(looked)}. {HOW_TO_GET}")
