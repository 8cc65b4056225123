"""Time and memory against text length: one text of each size, tagged in a fresh process.

    python bench/bench_long.py --model DIR --sizes 5000,50000,500000 --k 1
    python bench/bench_long.py --model DIR --adapter out/joint --prompt-format joint --demos '' --k 1
    python bench/bench_long.py --tiny --sizes 5000,50000        # a random tiny checkpoint (tests/tiny.py)

The text is prose: CoNLL-2003 training sentences (from $CASCADENER_DATA, spacing undone) joined
one after another until the size is reached, or, without the datasets, distinct sentences made
from a few word lists. Every sentence is different, so the prefix cache cannot pass whole
segments off as seen before. The default prompt format is `instruct` with five demonstrations
drawn from CoNLL-2003 dev (what an untrained instruct checkpoint needs); the tiny checkpoint's
random weights mark nearly every word, so its runs are mostly classification.

Each size runs in its own process (bench/common.py `run_child`), which reports the seconds
`predict` took, the RSS once the model is loaded and the peak RSS (`ru_maxrss`); "tagging" is the
difference. The parent prints a table and, from one size to the next, how many times the seconds
and the tagging memory grew against how many times the text did ("of linear": 1.00 is linear).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark this tree's cascadener, whatever else is installed

from common import (ChildError, detokenize, emit, machine_info, peak_rss_mib, run_child, shared_data,  # noqa: E402
                    timed)

LABELS = "person,location,organization,miscellaneous"
FIRST = "Anna Boris Chen Dmitri Elena Farid Grace Hiro Ingrid Jamal Kofi Lena Marco Nadia Olaf Priya".split()
LAST = "Keller Moreau Tanaka Okafor Novak Silva Larsen Haddad Petrov Walsh Romano Jensen Costa Ibrahim".split()
PLACES = "Lisbon Nairobi Osaka Quito Tallinn Lyon Hamburg Perth Cairo Denver Krakow Seoul Lima Oslo".split()
ORGS = ["the World Bank", "Siemens", "the Red Cross", "Reuters", "the University of Ghent", "Airbus",
        "the European Commission", "Toyota", "UNESCO", "the Bundesbank", "Nokia", "the IMF"]
VERBS = ["met", "called", "praised", "criticised", "interviewed", "joined", "thanked", "visited"]


def conll_sentences() -> list[str] | None:
    """CoNLL-2003 train sentences as people write them, or None without the datasets."""
    path = shared_data("conll2003", "iob2", "train.txt")
    if path is None or not Path(path).exists():
        return None
    from cascadener.data import load_documents
    return [detokenize(d.text) for d in load_documents(path)]


def made_up_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = f"{rng.choice(FIRST)} {rng.choice(LAST)}", f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        out.append(f"On day {i + 1}, {a} of {rng.choice(ORGS)} {rng.choice(VERBS)} {b} in "
                   f"{rng.choice(PLACES)} before flying to {rng.choice(PLACES)}.")
    return out


def prose(chars: int) -> tuple[str, str]:
    """At least `chars` characters of distinct sentences (up to the end of the one that reaches
    the size), and where they came from."""
    sentences, source = conll_sentences(), "CoNLL-2003 train"
    if sentences is None:
        sentences, source = made_up_sentences(chars // 60 + 1), "made-up sentences"
    parts, total = [], 0
    for s in sentences:
        if total >= chars:
            break
        parts.append(s)
        total += len(s) + 1
    if total < chars:
        raise SystemExit(f"error: {source} holds only {total} characters, fewer than {chars}")
    return " ".join(parts), source


def rss_mib() -> float:
    """Resident set size now (the peak so far may be the checkpoint's loading, not the model held)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return peak_rss_mib()


def child(args: argparse.Namespace) -> None:
    import torch

    from cascadener.data.labels import load_labelled
    from cascadener.geic.sampling import few_shot
    from cascadener.ner.pipeline import CascadeNER, Options
    torch.set_num_threads(args.threads)
    text, source = prose(args.size)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    demos = few_shot(load_labelled(args.demos), args.shots, seed=0) if args.demos else []
    adapter = args.adapter or None
    load_s, ner = timed(lambda: CascadeNER.load(model=args.model, extractor_adapter=adapter,
                                                classifier_adapter=adapter, dtype=dtype, demos=demos, options=Options(
        k=args.k, prompt_format=args.prompt_format, max_segment_chars=args.max_segment_chars)))
    loaded = rss_mib()
    seconds, doc = timed(lambda: ner.predict(text, labels=args.labels.split(",")))
    emit({"chars": len(text), "source": source, "seconds": round(seconds, 2), "load_seconds": round(load_s, 2),
          "rss_loaded_mib": round(loaded, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
          "spans": len(doc.spans), "segments": ner.stats.segments,
          "classification_prompts": ner.stats.classification_prompts})


def table(rows: list[dict]) -> str:
    lines = ["| chars | seconds | s per 1k chars | peak RSS MiB | model loaded MiB | tagging MiB | segments | "
             "mentions | others' CPU |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['chars']:,} | {r['seconds']:.1f} | {1000 * r['seconds'] / r['chars']:.3f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['rss_loaded_mib']:.0f} | {r['tagging_mib']:.0f} | "
                     f"{r['segments']} | {r['spans']} | {r['others_cpu_share']:.0%} |")
    for a, b in zip(rows, rows[1:]):
        grow = b["chars"] / a["chars"]
        lines.append(f"\n{a['chars']:,} -> {b['chars']:,} characters (x{grow:.1f}): seconds x"
                     f"{b['seconds'] / a['seconds']:.1f} ({b['seconds'] / a['seconds'] / grow:.2f} of linear), "
                     f"tagging memory x{b['tagging_mib'] / max(a['tagging_mib'], 1):.1f} "
                     f"({b['tagging_mib'] / max(a['tagging_mib'], 1) / grow:.2f} of linear), "
                     f"peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (default: $CASCADENER_ASSETS)")
    ap.add_argument("--tiny", action="store_true", help="a random tiny checkpoint built by tests/tiny.py")
    ap.add_argument("--sizes", default="5000,50000,500000", help="text lengths in characters, comma-separated")
    ap.add_argument("--adapter", default="", help="one adapter for both stages (train.py --task joint; use "
                                                  "with --prompt-format joint --demos '')")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--prompt-format", default="instruct",
                    help="instruct (default): the untrained instruct checkpoint marks entities in it; the paper "
                         "format wants the authors' fine-tuned models")
    ap.add_argument("--demos", default=shared_data("conll2003", "iob2", "valid.txt"),
                    help="labelled file the instruct format's demonstrations come from (default: CoNLL-2003 dev "
                         "under $CASCADENER_DATA; '' for none)")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--max-segment-chars", type=int, default=600)
    ap.add_argument("--labels", default=LABELS)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="write the rows and machine facts here")
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)        # child side: one run
    args = ap.parse_args()
    if args.size is not None:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            sys.path.insert(0, str(REPO / "tests"))
            from tiny import write_tiny_checkpoint
            args.model = str(write_tiny_checkpoint(Path(tmp) / "tiny"))
        args.model = args.model or os.environ.get("CASCADENER_ASSETS")
        if not args.model:
            ap.error("give --model DIR, --tiny, or set CASCADENER_ASSETS")
        common = ["--model", args.model, "--adapter", args.adapter, "--k", str(args.k), "--prompt-format", args.prompt_format,
                  "--max-segment-chars", str(args.max_segment_chars), "--labels", args.labels,
                  "--demos", args.demos or "", "--shots", str(args.shots),
                  "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
        info = machine_info() | {"model": "tiny" if args.tiny else args.model, "adapter": args.adapter, "k": args.k,
                                 "prompt_format": args.prompt_format, "demos": args.demos, "shots": args.shots,
                                 "threads": args.threads}
        print(f"# {json.dumps(info)}", flush=True)
        rows = []
        for size in map(int, args.sizes.split(",")):
            try:
                r = run_child(__file__, ["--size", str(size), *common], args.threads)
            except ChildError as e:          # killed for memory, say: the other sizes still count
                print(f"# {size} characters: {e}", flush=True)
                continue
            r["tagging_mib"] = r["peak_rss_mib"] - r["rss_loaded_mib"]
            print(f"# {json.dumps(r)}", flush=True)
            rows.append(r)
    if rows:
        print(f"\ntext: {rows[0]['source']}\n{table(rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
