"""Score NER predictions.

    python eval.py --predictions pred.txt --gold test.txt [--report report.json]

Saved predictions: column files (token and tag, sentence by sentence), GEIC JSON or JSONL, on each
side independently; documents pair by position and must have the same text. Prints micro P/R/F1,
a per-type table, extraction-only and lenient scores; ``--report`` also writes them as JSON.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cascadener.data.tags import SCHEMES
from cascadener.evaluate import evaluate_files, notes, write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Not required=True: other modes (running a model over --data) add their own inputs; main() checks.
    saved = parser.add_argument_group("saved predictions (no model)")
    saved.add_argument("--predictions", help="predicted file: column file, .json (GEIC) or .jsonl")
    saved.add_argument("--gold", help="gold file, same choice of formats")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--lang", help="language of column files; zh/ja join tokens without spaces")
    reading.add_argument("--scheme", default="auto", choices=("auto", *SCHEMES),
                         help="tag scheme of column files (default: detect per file)")
    parser.add_argument("--report", help="also write the scores as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.predictions is None or args.gold is None:
        parser.error("give --predictions and --gold")
    return score_saved(args)


def score_saved(args: argparse.Namespace) -> int:
    try:
        scored = evaluate_files(args.predictions, args.gold, lang=args.lang, scheme=args.scheme)
        if args.report:
            write_report(scored, args.report, predictions=args.predictions, gold=args.gold)
    except (ValueError, OSError) as e:      # DataError is a ValueError and names file and line
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"predictions {args.predictions} vs gold {args.gold}")
    print(scored.report.table())
    for line in notes(scored):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
