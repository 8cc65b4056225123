"""Prefix cache on hierarchical classification: prompt tokens computed with and without reuse.

    python bench/bench_prefix.py                          # DynamicNER, 100 held-out sentences, prefix format
    python bench/bench_prefix.py --prompt-format paper --sentences 50 --json prefix.json

The classifier stage alone (cascadener.ner.pipeline.CascadeNER.classify) over the 155-type DynamicNER
tree (8 -> 31 -> 155), on the gold mentions of held-out sentences of the authors' example file
(sentences 601 on; 1-600 are what demonstrations are drawn from elsewhere): every mention is
classified coarse to fine, each level offering the children of the previous answer. Two runs over
the same model, in one process:

* reuse: the engine as it runs by default, with the radix prefix cache kept across calls;
* none: the same engine with no prefix cache at all (within one batch, a prefix every row shares
  is still computed once: that is not a cache, and the authors' loop does not do it either, so
  the baseline figure is the prompt tokens requested, every one of which their loop computes).

Reported: prompts, prompt tokens requested, tokens computed in each run and the ratio
computed / requested (goal: <= 30% with reuse), seconds, and whether both runs chose the same
paths (reuse changes what is computed, not what comes out: in float32 they must agree; in
bfloat16 a different batch shape rounds differently, and a near-tie can flip).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark this tree's cascadener, whatever else is installed

from common import OthersShare, machine_info, shared_data  # noqa: E402

from cascadener.cli.common import add_model_args, load_pipeline  # noqa: E402
from cascadener.data import load_documents  # noqa: E402
from cascadener.engine.scheduler import PrefillCounter  # noqa: E402
from cascadener.geic.hierarchy import Hierarchy  # noqa: E402
from cascadener.geic.spans import Span  # noqa: E402
from cascadener.ner.pipeline import Stats  # noqa: E402

GOAL = 0.30
HELD_OUT_FROM = 600


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dynamicner", default=shared_data("dynamicner"),
                    help="directory with example.json and DynamicNER.json (default: $CASCADENER_DATA/dynamicner)")
    ap.add_argument("--sentences", type=int, default=100, help="held-out sentences with at least one mention")
    ap.add_argument("--json", help="also write the figures here")
    add_model_args(ap)
    ap.set_defaults(prompt_format="prefix")
    args = ap.parse_args()
    if args.dynamicner is None:
        ap.error("give --dynamicner DIR or set CASCADENER_DATA (the shared datasets directory)")
    return args


def main() -> None:
    args = parse_args()
    root = Path(args.dynamicner)
    tree = Hierarchy.load(root / "DynamicNER.json")
    docs = [d for d in load_documents(root / "example.json")[HELD_OUT_FROM:] if d.spans][:args.sentences]
    texts = [d.text for d in docs]
    mentions = [[Span(s.start, s.end) for s in d.spans] for d in docs]
    args.engine = "fast"
    ner = load_pipeline(args)
    print(f"# {machine_info()}\n# {len(docs)} sentences, {sum(map(len, mentions))} mentions; tree of "
          f"{len(tree.roots)} roots, depth {tree.depth()}; prompt format {args.prompt_format}; {args.dtype}",
          flush=True)

    results = {}
    for name, cache in (("reuse", ner.classifier.prefix_cache), ("none", None)):
        engine = replace(ner.classifier, prefix_cache=cache, counter=PrefillCounter())
        run = replace(ner, extractor=engine, classifier=engine, stats=Stats())
        with OthersShare() as others:
            start = time.perf_counter()
            labelled = run.classify(texts, mentions, tree)
            seconds = time.perf_counter() - start
        c = engine.counter
        results[name] = {"prompts": run.stats.classification_prompts, "requested": c.requested,
                         "computed": c.computed, "ratio": c.computed / c.requested, "seconds": round(seconds, 1),
                         "others_cpu_share": others.value, "paths": [[s.path for s in ss] for ss in labelled]}
        r = results[name]
        print(f"{name:5s}: {r['prompts']} prompts, {r['requested']} prompt tokens requested, {r['computed']} "
              f"computed ({r['ratio']:.1%}), {seconds:.1f} s, others' CPU share {others.value:.0%}", flush=True)

    pairs = [(a, b) for x, y in zip(results["reuse"]["paths"], results["none"]["paths"]) for a, b in zip(x, y)]
    differ = sum(a != b for a, b in pairs)
    ratio = results["reuse"]["ratio"]
    print(f"\nmentions whose path differs with and without reuse: {differ} of {len(pairs)} "
          f"(0 expected in float32; in bfloat16 other batch shapes round differently and flip near-ties)")
    print(f"prefill computed with the prefix cache <= {GOAL:.0%} of the prompt tokens: "
          f"{'PASS' if ratio <= GOAL else 'MISS'} ({ratio:.1%}; without the cache {results['none']['ratio']:.1%}); "
          f"time {results['reuse']['seconds']} s vs {results['none']['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "paths_differing": differ, "runs": {
            n: {k: v for k, v in r.items() if k != "paths"} for n, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
