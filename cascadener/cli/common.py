"""Command-line plumbing shared by infer.py and eval.py: the model and pipeline options, built once."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cascadener.data.labels import load_labelled
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.sampling import few_shot
from cascadener.geic.spans import Document
from cascadener.qwen2.locate import find_checkpoint
from cascadener.ner.pipeline import CascadeNER, Options, default_threads
from cascadener.ner.prompts import FORMATS

NAIVE_LABEL_TOKENS = 512   # the authors' max_new_tokens for a label answer
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="one checkpoint for both stages (HF layout); default: $CASCADENER_ASSETS "
                                   "or weights/*")
    g.add_argument("--extractor", help="checkpoint for extraction (with --classifier)")
    g.add_argument("--classifier", help="checkpoint for classification (with --extractor)")
    g.add_argument("--extractor-adapter", help="PEFT LoRA adapter directory for the extractor")
    g.add_argument("--classifier-adapter", help="PEFT LoRA adapter directory for the classifier")
    g.add_argument("--adapter", help="one adapter for both stages (train.py --task joint): one model is "
                                     "loaded, and classification reuses the cache of the extraction prompts")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    g.add_argument("--batch-size", type=int, default=32,
                   help="sequences the fast engine decodes together (the naive engine: 1)")
    g.add_argument("--chunk", type=int, default=1024,
                   help="texts handed to the pipeline at a time; the engine's batches are drawn from them")
    g.add_argument("--int8", action="store_true", help="weight-only int8 linear layers (faster CPU decode)")
    g.add_argument("--engine", choices=("fast", "naive"), default="fast",
                   help="naive = the authors' loop, for auditing: one prompt at a time, generated until it "
                        "ends, no batching, no shared prefill, no constraints")
    g = p.add_argument_group("pipeline")
    g.add_argument("--k", type=int, default=3, help="extraction runs fused by union (1 = greedy)")
    g.add_argument("--min-votes", type=int, default=1, help="keep spans found in at least this many runs")
    g.add_argument("--prompt-format", choices=sorted(FORMATS), default="paper")
    g.add_argument("--system", help="system prompt (default: the format's own)")
    g.add_argument("--zero-shot", action="store_true", help='offer "unknown" when no type applies')
    g.add_argument("--no-constrain", dest="constrain", action="store_false",
                   help="generate labels as free text and match them to the list (the authors' way) "
                        "instead of scoring the candidates")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-segment-chars", type=int, default=600, help="split longer texts at sentence ends")
    g.add_argument("--demos", help="labelled file to draw few-shot demonstrations from (instruct format)")
    g.add_argument("--shots", type=int, default=5, help="demonstrations drawn by stratified sampling")
    g = p.add_argument_group("labels")
    g.add_argument("--labels", help="comma-separated flat label list, e.g. person,location,organization")
    g.add_argument("--categories", help="category tree: DynamicNER.json, a nested JSON tree, or a label list file")


def options_from_args(args: argparse.Namespace) -> Options:
    naive = args.engine == "naive"
    return Options(k=args.k, min_votes=args.min_votes, prompt_format=args.prompt_format, system=args.system,
                   zero_shot=args.zero_shot, constrain=args.constrain and not naive, seed=args.seed,
                   max_segment_chars=args.max_segment_chars, label_tokens=NAIVE_LABEL_TOKENS if naive else 16)


def categories_from_args(args: argparse.Namespace) -> Hierarchy | None:
    if args.labels and args.categories:
        raise SystemExit("error: give --labels or --categories, not both")
    if args.categories:
        return Hierarchy.load(Path(args.categories))
    if args.labels:
        return Hierarchy.flat([s.strip() for s in args.labels.split(",") if s.strip()])
    return None


def demos_from_args(args: argparse.Namespace, tree: Hierarchy | None = None,
                    names: dict[str, str] | None = None) -> list[Document]:
    """Few-shot demonstrations: a stratified sample (paper eq. 4) of --demos, labels made readable."""
    if not args.demos:
        return []
    return few_shot(load_labelled(args.demos, tree, names), args.shots, seed=args.seed)


def load_pipeline(args: argparse.Namespace, demos=()) -> CascadeNER:
    default_threads()
    if bool(args.extractor) != bool(args.classifier):
        raise SystemExit("error: --extractor and --classifier go together (or use --model)")
    if args.adapter and (args.extractor_adapter or args.classifier_adapter or args.extractor):
        raise SystemExit("error: --adapter serves both stages of one --model; it does not go with "
                         "--extractor, --extractor-adapter or --classifier-adapter")
    model = None if args.extractor else find_checkpoint(args.model)
    print(f"loading {model or f'{args.extractor} + {args.classifier}'} ({args.dtype})", file=sys.stderr)
    return CascadeNER.load(model=model, extractor=args.extractor, classifier=args.classifier,
                           extractor_adapter=args.extractor_adapter or args.adapter,
                           classifier_adapter=args.classifier_adapter or args.adapter,
                           dtype=DTYPES[args.dtype], batch_size=1 if args.engine == "naive" else args.batch_size,
                           options=options_from_args(args), reuse_prefixes=args.engine != "naive",
                           demos=demos, int8=args.int8)
