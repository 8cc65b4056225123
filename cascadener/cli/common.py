"""Command-line plumbing shared by infer.py and eval.py: the model and pipeline options, threads,
and the one place where whatever loading a pipeline refuses becomes one line `error: ...`."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch

from cascadener.data import DataError
from cascadener.data.labels import load_labelled, with_paths
from cascadener.engine.device import resolve_device
from cascadener.geic.hierarchy import CategoryError, Hierarchy, label_list
from cascadener.geic.sampling import few_shot
from cascadener.geic.spans import Document
from cascadener.ner.pipeline import MIN_SEGMENT_CHARS, CascadeNER, Options, fitted
from cascadener.ner.prompts import PROMPT_FORMATS
from cascadener.ner.trained import agreed
from cascadener.qwen2.checkpoint import DTYPES
from cascadener.qwen2.locate import find_checkpoint

NAIVE_LABEL_TOKENS = 512   # the authors' max_new_tokens for a label answer
# What loading a pipeline may refuse, each naming its file, tensor or option: ValueError covers
# CheckpointError, TokenizerError and AdapterError, and adapters the prompt format cannot serve
# (activated ones without the joint format); OSError covers WeightsNotFound and unreadable files.
LOAD_ERRORS = (ValueError, OSError)


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= low (--k 0 would run nothing, --chunk 0 loop forever)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n
    return parse


def device_arg(text: str) -> str:
    """An argparse type: a device the engine can run on (cascadener.engine.device.resolve_device)."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_model_args(p: argparse.ArgumentParser) -> None:
    positive = at_least(1)
    g = p.add_argument_group("model")
    g.add_argument("--model", help="one checkpoint for both stages (HF layout); default: $CASCADENER_ASSETS, "
                                   "else the weights folder (see weights/README.md)")
    g.add_argument("--extractor", help="checkpoint for extraction (with --classifier)")
    g.add_argument("--classifier", help="checkpoint for classification (with --extractor)")
    g.add_argument("--extractor-adapter", help="PEFT LoRA adapter directory for the extractor (an activated one, "
                                               "train.py --activated, also loads the base model beside it)")
    g.add_argument("--classifier-adapter", help="PEFT LoRA adapter directory for the classifier")
    g.add_argument("--adapter", help="one adapter for both stages (train.py --task joint): one model is "
                                     "loaded, and classification reuses the cache of the extraction prompts")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    g.add_argument("--batch-size", type=positive, default=32,
                   help="sequences the fast engine decodes together (the naive engine: 1)")
    g.add_argument("--chunk", type=positive, default=1024,
                   help="texts handed to the pipeline at a time; the engine's batches are drawn from them")
    g.add_argument("--threads", type=positive,
                   help="torch CPU threads (default: $OMP_NUM_THREADS when set, else every core)")
    g.add_argument("--int8", action="store_true", help="weight-only int8 linear layers (faster CPU decode)")
    g.add_argument("--device", type=device_arg, default="auto",
                   help="auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N")
    g.add_argument("--engine", choices=("fast", "naive"), default="fast",
                   help="naive = the authors' loop, for auditing: one prompt at a time, generated until it "
                        "ends, no batching, no shared prefill, no constraints")
    g = p.add_argument_group("pipeline")
    g.add_argument("--k", type=positive, default=3, help="extraction runs fused by union (1 = greedy)")
    g.add_argument("--min-votes", type=positive, default=1,
                   help="keep spans found in at least this many runs (at most --k)")
    g.add_argument("--prompt-format", choices=sorted(PROMPT_FORMATS),
                   help="must match how the model was trained: paper = the authors' checkpoints (their exact "
                        "strings); instruct = an untrained instruct model (with --demos); prefix = this "
                        "project's two adapters (train.py --task extract/classify); joint = one adapter for "
                        "both stages (train.py --task joint), or two activated ones (train.py --activated). "
                        "Default: the one train.py recorded beside the adapter (train_config.json), else paper")
    g.add_argument("--system", help="system prompt (default: the recorded one, else the format's own)")
    g.add_argument("--zero-shot", action="store_true", help='offer "unknown" when no type applies')
    g.add_argument("--no-constrain", dest="constrain", action="store_false",
                   help="generate labels as free text and match them to the list (the authors' way) "
                        "instead of scoring the candidates")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-segment-chars", type=at_least(MIN_SEGMENT_CHARS), default=600,
                   help="split longer texts at sentence ends")
    g.add_argument("--demos", help="labelled file to draw few-shot demonstrations from (instruct and joint formats)")
    g.add_argument("--shots", type=positive, default=5, help="demonstrations drawn by stratified sampling")
    g = p.add_argument_group("labels")
    g.add_argument("--labels", help="comma-separated flat label list, e.g. person,location,organization")
    g.add_argument("--categories", help="category tree: DynamicNER.json, a nested JSON tree, or a label list "
                                        "file (one label per line)")


def options_from_args(args: argparse.Namespace) -> Options:
    """The pipeline's options, checked against what the weights were trained on (ner/trained.py):
    --prompt-format and --system left out become the recorded ones, and are written back to
    `args` so that reports and job manifests name the format that ran."""
    naive = args.engine == "naive"
    try:
        trained = agreed([args.model, args.extractor, args.classifier, args.adapter, args.extractor_adapter,
                          args.classifier_adapter])
        args.prompt_format = args.prompt_format or (trained.prompt_format if trained else "paper")
        options = fitted(Options(k=args.k, min_votes=args.min_votes, prompt_format=args.prompt_format,
                                 system=args.system, zero_shot=args.zero_shot,
                                 constrain=args.constrain and not naive, seed=args.seed,
                                 max_segment_chars=args.max_segment_chars,
                                 label_tokens=NAIVE_LABEL_TOKENS if naive else 16), trained)
        args.system = options.system
        return options
    except ValueError as e:      # what one flag cannot check alone, e.g. --min-votes above --k
        raise SystemExit(f"error: {e}") from None


def categories_from_args(args: argparse.Namespace) -> Hierarchy | None:
    if args.labels is not None and args.categories:
        raise SystemExit("error: give --labels or --categories, not both")
    try:
        if args.categories:
            return Hierarchy.load(args.categories)
        if args.labels is not None:
            return Hierarchy.flat(label_list(args.labels))
    except CategoryError as e:
        where = "" if args.categories else f"--labels {args.labels!r}: "
        raise SystemExit(f"error: {where}{e}") from None
    return None


def demos_from_args(args: argparse.Namespace, tree: Hierarchy | None = None,
                    names: dict[str, str] | None = None) -> list[Document]:
    """Few-shot demonstrations: a stratified sample (paper eq. 4) of --demos, labels made readable,
    with their paths down the tree (a mention is marked under whichever of its ancestors is offered)."""
    if not args.demos:
        return []
    try:
        docs = load_labelled(args.demos, tree, names)
    except (DataError, OSError) as e:
        raise SystemExit(f"error: --demos: {e}") from None
    demos = few_shot(docs, args.shots, seed=args.seed)
    return with_paths(demos, tree) if tree is not None else demos


def set_threads(threads: int | None) -> None:
    """--threads, else $OMP_NUM_THREADS (torch follows it already), else every core. Only the CLIs
    set process-wide threads; the library never does. tokenizers' own pool would only fight torch."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        torch.set_num_threads(threads)
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(os.cpu_count() or 1)


def load_pipeline(args: argparse.Namespace, demos=()) -> CascadeNER:
    options = options_from_args(args)       # first: a bad option must not wait for the weights to load
    if bool(args.extractor) != bool(args.classifier):
        raise SystemExit("error: --extractor and --classifier go together (or use --model)")
    if args.adapter and (args.extractor_adapter or args.classifier_adapter or args.extractor):
        raise SystemExit("error: --adapter serves both stages of one --model; it does not go with "
                         "--extractor, --extractor-adapter or --classifier-adapter")
    if args.int8 and resolve_device(args.device).type != "cpu":
        raise SystemExit("error: --int8 is a CPU form of the linears; use it with --device cpu")
    set_threads(args.threads)
    try:
        model = None if args.extractor else find_checkpoint(args.model)
        print(f"loading {model or f'{args.extractor} + {args.classifier}'} ({args.dtype})", file=sys.stderr)
        return CascadeNER.load(model=model, extractor=args.extractor, classifier=args.classifier,
                               extractor_adapter=args.extractor_adapter or args.adapter,
                               classifier_adapter=args.classifier_adapter or args.adapter,
                               dtype=DTYPES[args.dtype], batch_size=1 if args.engine == "naive" else args.batch_size,
                               options=options, reuse_prefixes=args.engine != "naive", demos=demos, int8=args.int8,
                               device=args.device)
    except LOAD_ERRORS as e:
        raise SystemExit(f"error: {e}") from None
