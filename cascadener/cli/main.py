"""`cascadener infer|eval|train|convert|download ...`: the installed front end of the root scripts."""
from __future__ import annotations

import sys
from importlib import import_module

COMMANDS = {
    "infer": ("cascadener.cli.infer", "tag texts (python infer.py)"),
    "eval": ("cascadener.cli.evaluate", "score predictions, or run a model over labelled data (python eval.py)"),
    "train": ("cascadener.cli.train", "fine-tune a LoRA adapter (python train.py)"),
    "convert": ("cascadener.data.__main__", "convert between CoNLL, GEIC JSON and JSONL"),
    "download": ("cascadener.qwen2.download", "download a checkpoint in the Hugging Face layout"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<9} {help}" for name, (_, help) in COMMANDS.items())
    return f"usage: cascadener COMMAND [ARGS...]\n\ncommands:\n{rows}\n\n`cascadener COMMAND --help` for each."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module = import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
