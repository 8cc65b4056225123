"""Score NER predictions, or run a model over labelled data and score that.

    python eval.py --predictions pred.txt --gold test.txt [--report report.json]
    python eval.py --data test.txt --sample 300 --k 1 [--model DIR] [--report r.json] [--save-predictions p.jsonl]

Saved predictions: column files (token and tag, sentence by sentence), GEIC JSON or JSONL, on each
side independently; documents pair by position and must have the same text. Prints micro P/R/F1,
a per-type table, extraction-only and lenient scores; ``--report`` also writes them as JSON.

With ``--data`` (a column file, GEIC JSON or JSONL) the pipeline tags every text. The label set
defaults to the dataset's own types under readable names (PER -> person, ...; ``--label-map``
overrides), ``--sample N`` takes the paper's stratified subset, and the report adds ``seconds``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cascadener.data.tags import SCHEMES
from cascadener.cli.common import add_model_args, categories_from_args, demos_from_args, load_pipeline
from cascadener.data import write_jsonl
from cascadener.data.labels import dataset_types, load_label_map, load_labelled
from cascadener.evaluation.saved import evaluate_files, notes, write_report
from cascadener.evaluation.run import run
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.sampling import stratified_subset


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
    model = parser.add_argument_group("running a model (--data)")
    model.add_argument("--data", help="labelled file to tag and score: column file, .json (GEIC) or .jsonl")
    model.add_argument("--label-map", help="JSON object mapping the dataset's type codes to label names")
    model.add_argument("--limit", type=int, help="only the first N sentences")
    model.add_argument("--sample", type=int, help="a stratified sample of N sentences (seeded by --seed)")
    model.add_argument("--save-predictions", help="write the predictions as JSONL")
    add_model_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is not None:
        if args.predictions or args.gold:
            parser.error("--data runs a model; --predictions/--gold score saved files: give one or the other")
        return run_model(args)
    if args.predictions is None or args.gold is None:
        parser.error("give --predictions and --gold, or --data")
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


def run_model(args: argparse.Namespace) -> int:
    try:
        names = load_label_map(args.label_map) if args.label_map else {}
        given = categories_from_args(args)
        gold = load_labelled(args.data, given, names, lang=args.lang, scheme=args.scheme)
        tree = given or Hierarchy.flat(dataset_types(gold))
        if args.sample:
            gold = stratified_subset(gold, args.sample, seed=args.seed)
        gold = gold[:args.limit] if args.limit else gold
        ner = load_pipeline(args, demos=demos_from_args(args, tree, names))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result = run(ner, gold, tree, chunk=args.chunk)
    if args.save_predictions:
        write_jsonl(result.predictions, args.save_predictions)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(result.to_dict() | {"data": args.data, "labels": tree.roots}, f, indent=2)
            f.write("\n")
    print(f"{args.data}: {len(gold)} sentences, labels {', '.join(tree.roots)}")
    print(result.report.table())
    print(f"{result.seconds:.1f} s, {len(gold) / result.seconds:.2f} sentences/s; {vars(result.stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
