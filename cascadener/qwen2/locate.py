"""Where checkpoints are looked for and downloaded to, and the message when none is found.

Downloaded weights live in one folder, `weights_dir()`: $CASCADENER_HOME/weights when that is set;
else the weights/ folder of the source checkout this package sits in (as after `pip install -e .`);
else the user cache, ($XDG_CACHE_HOME or ~/.cache)/cascadener/weights. Never inside
site-packages, where a reinstall would lose them.
"""
from __future__ import annotations

import os
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]     # the repository, when this is a source checkout


class WeightsNotFound(FileNotFoundError):
    pass


def weights_dir() -> Path:
    if os.environ.get("CASCADENER_HOME"):
        return Path(os.environ["CASCADENER_HOME"]) / "weights"
    if (SOURCE_ROOT / "pyproject.toml").is_file() and (SOURCE_ROOT / "cascadener").is_dir():
        return SOURCE_ROOT / "weights"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cascadener" / "weights"


def how_to_get() -> str:
    return ("Get weights with `python -m cascadener.qwen2.download Qwen/Qwen2.5-0.5B-Instruct` (writes "
            f"{weights_dir() / 'Qwen2.5-0.5B-Instruct'}), or pass any checkpoint directory in the Hugging Face "
            "layout with --model DIR. See weights/README.md.")


def find_checkpoint(explicit: str | Path | None = None) -> Path:
    """--model DIR if given, else $CASCADENER_ASSETS, else the first checkpoint in weights_dir()."""
    if explicit is not None:
        path = Path(explicit)
        if not (path / "config.json").exists():
            raise WeightsNotFound(f"{path}: not a checkpoint directory (no config.json). {how_to_get()}")
        return path
    looked = []
    env = os.environ.get("CASCADENER_ASSETS")
    if env:
        looked.append(f"$CASCADENER_ASSETS={env}")
        if (Path(env) / "config.json").exists():
            return Path(env)
    else:
        looked.append("$CASCADENER_ASSETS (not set)")
    found = sorted(p.parent for p in weights_dir().glob("*/config.json"))
    looked.append(f"{weights_dir()}/*/config.json")
    if found:
        return found[0]
    raise WeightsNotFound(f"no model weights found; looked in {', '.join(looked)}. {how_to_get()}")
