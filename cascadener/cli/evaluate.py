"""Score NER predictions, or run a model over labelled data (one file or a suite of them) and score that.

    python eval.py --predictions pred.txt --gold test.txt [--report report.json]
    python eval.py --data test.txt --sample 300 --k 1 [--model DIR] [--report r.json] [--html r.html]
    python eval.py --suite bench/suites/crossner-dev.toml --adapter out/joint [--report r.json] [--html r.html]

Saved predictions: column files (token and tag, sentence by sentence), GEIC JSON or JSONL, on each
side independently; documents pair by position and must have the same text. Prints micro P/R/F1,
a per-type table, extraction-only and lenient scores; ``--report`` also writes them as JSON.

With ``--data`` (a column file, GEIC JSON or JSONL) the pipeline tags every text. The label set
defaults to the dataset's own types under readable names (PER -> person, ...; ``--label-map``
overrides), ``--sample N`` takes the paper's stratified subset, and the report adds ``seconds``.
With ``--categories`` and ``--levels 1,2,3`` each level of the tree is scored on its own.

With ``--suite`` (TOML or JSON; see cascadener/evaluation/suite.py for the keys) one loaded model
runs several test sets and prints one table in the shape of the paper's Tables 2/3: span P/R/F1,
extraction-only F1, the authors' lenient F1 and sentences/s per set, and their average.
``--html`` writes a self-contained page with per-type bars and a confusion matrix of types per set.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cascadener.cli.common import add_model_args, load_pipeline
from cascadener.data import write_jsonl
from cascadener.data.tags import SCHEMES
from cascadener.evaluation import report
from cascadener.evaluation.saved import evaluate_files, notes, write_report
from cascadener.evaluation.suite import LoadedSet, SuiteResult, TestSet, evaluate, load_set, parse_set, read_suite
from cascadener.geic.hierarchy import label_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Not required=True: the modes take different inputs; main() checks.
    saved = parser.add_argument_group("saved predictions (no model)")
    saved.add_argument("--predictions", help="predicted file: column file, .json (GEIC) or .jsonl")
    saved.add_argument("--gold", help="gold file, same choice of formats")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--lang", help="language of column files; zh/ja join tokens without spaces")
    reading.add_argument("--scheme", default="auto", choices=("auto", *SCHEMES),
                         help="tag scheme of column files (default: detect per file)")
    parser.add_argument("--report", help="also write the scores as JSON to this file")
    model = parser.add_argument_group("running a model (--data or --suite)")
    model.add_argument("--data", help="labelled file to tag and score: column file, .json (GEIC) or .jsonl")
    model.add_argument("--suite", help="TOML or JSON file listing test sets, run with one loaded model")
    model.add_argument("--data-root", help="where relative paths in a suite resolve (default: $CASCADENER_DATA, "
                                           "else the suite file's folder)")
    model.add_argument("--label-map", help="JSON object mapping the dataset's type codes to label names")
    model.add_argument("--levels", help="with --categories: score these levels of the tree, e.g. 1,2,3")
    model.add_argument("--sentences", help="only sentences FIRST-LAST of the file (1-based), before sampling")
    model.add_argument("--sample", type=int, help="a stratified sample of N sentences (seeded by --seed); "
                                                  "with --suite it replaces every set's sample")
    model.add_argument("--limit", type=int, help="only the first N sentences (of each set)")
    model.add_argument("--html", help="write the report as one self-contained HTML page")
    model.add_argument("--save-predictions", help="write the predictions as JSONL (with --suite: a folder, "
                                                  "one file per set)")
    add_model_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = list(sys.argv[1:] if argv is None else argv)     # recorded in the reports
    if args.data is not None and args.suite is not None:
        parser.error("--data runs one file, --suite several: give one of them")
    if args.data is not None or args.suite is not None:
        if args.predictions or args.gold:
            parser.error("--data/--suite run a model; --predictions/--gold score saved files: give one or the other")
        return run_model(args)
    if args.predictions is None or args.gold is None:
        parser.error("give --predictions and --gold, or --data, or --suite")
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


def parse_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"--sentences takes FIRST-LAST, e.g. 601-900, not {text!r}")
    return int(first), int(last)


def data_set(args: argparse.Namespace) -> TestSet:
    """The one test set that --data and its options describe."""
    labels = tuple(label_list(args.labels)) if args.labels is not None else ()
    levels = tuple(n.strip() for n in args.levels.split(",")) if args.levels else ()
    if not all(n.isdigit() for n in levels):
        raise ValueError(f"--levels takes whole numbers separated by commas, e.g. 1,2,3, not {args.levels!r}")
    record = dict(path=args.data, scheme=args.scheme, lang=args.lang, label_map=args.label_map, labels=labels,
                  categories=args.categories, levels=tuple(int(n) for n in levels),
                  sentences=parse_range(args.sentences) if args.sentences else None,
                  sample=args.sample, seed=args.seed, demos=args.demos, shots=args.shots)
    return parse_set({k: v for k, v in record.items() if v is not None}, args.data)   # as a suite's set


def load_sets(args: argparse.Namespace) -> tuple[str, list[LoadedSet]]:
    if args.data is not None:
        spec = data_set(args)
        return args.data, [load_set(spec, ".", args.limit)]
    for name in ("labels", "categories", "label_map", "levels", "sentences", "demos"):
        if getattr(args, name):
            raise ValueError(f"--{name.replace('_', '-')} is a per-set key in a suite file, not an option of --suite")
    suite = read_suite(args.suite, args.data_root)
    specs = [replace(s, sample=args.sample) if args.sample else s for s in suite.sets]
    return suite.name, [load_set(s, suite.root, args.limit) for s in specs]


def progress(name: str):
    def show(done: int, total: int, seconds: float) -> None:
        end = "\n" if done == total else ""
        print(f"\r{name}: {done}/{total} sentences, {done / seconds:.2f}/s", end=end, file=sys.stderr, flush=True)
    return show


def slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "set"


def run_model(args: argparse.Namespace) -> int:
    try:
        name, sets = load_sets(args)
        ner = load_pipeline(args)
    except (ValueError, OSError) as e:      # SuiteError, DataError and CategoryError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 1
    results = []
    for s in sets:
        print(f"{s.spec.title}: {len(s.gold)} sentences, labels {', '.join(s.tree.roots)}", file=sys.stderr)
        results.append(evaluate(ner, s, chunk=args.chunk, progress=progress(s.spec.title)))
    result = SuiteResult(name, results)
    try:
        write_outputs(args, result)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.data is not None:
        (only,) = results
        print(f"{args.data}: {only.run.report.sentences} sentences, labels {', '.join(only.labels)}")
        print(only.run.report.table())
        print(f"{only.run.seconds:.1f} s, {only.run.sentences_per_second or 0:.2f} sentences/s; {vars(only.run.stats)}")
    else:
        print(report.table(result))
    return 0


def write_outputs(args: argparse.Namespace, result: SuiteResult) -> None:
    meta = {"command": args.command, "options": {
        k: getattr(args, k) for k in ("model", "adapter", "extractor", "classifier", "extractor_adapter",
                                      "classifier_adapter", "dtype", "int8", "device", "threads", "engine", "k",
                                      "min_votes", "prompt_format", "zero_shot", "constrain", "seed")}}
    if args.report:
        if args.data is not None:            # one file: its scores at the top, as before suites existed
            (only,) = result.sets
            data = report.row_dict(only.rows[-1]) | {"data": args.data, "labels": only.labels,
                                                     "pipeline": report.set_dict(only)["pipeline"]} | meta
            if only.spec.levels:
                data["levels"] = [report.row_dict(r) for r in only.rows]
        else:
            data = report.to_dict(result, **meta)
        Path(args.report).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.html:
        Path(args.html).write_text(report.page(result, " ".join(meta["command"])), encoding="utf-8")
    if args.save_predictions:
        if args.data is not None:
            write_jsonl(result.sets[0].run.predictions, args.save_predictions)
        else:
            folder = Path(args.save_predictions)
            folder.mkdir(parents=True, exist_ok=True)
            for s in result.sets:
                write_jsonl(s.run.predictions, folder / f"{slug(s.spec.title)}.jsonl")


if __name__ == "__main__":
    sys.exit(main())
