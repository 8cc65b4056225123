"""Tag text with CascadeNER.

    python infer.py --text "Kobe Bryant played for the Lakers." --labels person,organization,location
    python infer.py --input texts.jsonl --categories DynamicNER.json --format jsonl --output out.jsonl
    python infer.py --input - --labels person,location --format html --output page.html < lines.txt
    torchrun --nproc_per_node 4 infer.py --input big.jsonl --labels person,location --output out.jsonl

Input: one record per non-blank line, plain text or a JSON object with a "text" string (and optional
"id", "lang"); see --input-format. A record that cannot be read or tagged becomes an error record in its
place ({"error", "line", "id"} in jsonl/json, a `# error line N: ...` comment in conll, a notice in html,
a line in pretty), the run goes on, a closing line on stderr counts texts, entities and errors, and the
exit status is 1.

Jobs with --output: records are tagged --chunk at a time (default 256) and each chunk is saved as it
finishes in OUTPUT.partial/, with a progress line on stderr. OUTPUT itself appears (or is replaced) only
when the job is complete, in every format. If the job stops (Ctrl-C, SIGTERM, a kill, a crash), run the
same command again: it continues after the last saved record and writes what an uninterrupted run writes,
byte for byte (each chunk is computed from a fresh prefix cache, and chunks keep their boundaries). Ctrl-C
and SIGTERM exit at once with status 130/143 (a chunk being saved is saved first). A folder left by a job
with other settings is refused; delete it to start over. Without --output, records go to stdout a chunk
at a time (an html page at the end) and nothing is resumable.

torchrun (or any launcher that sets RANK and WORLD_SIZE) shards the input: process r tags every
WORLD_SIZE-th record, saves its own part and resumes on its own; process 0 waits for every part and
writes OUTPUT in input order. On several machines OUTPUT's folder must be shared by all of them.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cascadener.cli import jobs
from cascadener.cli.common import (add_model_args, categories_from_args, demos_from_args, load_pipeline,
                                   options_from_args)
from cascadener.cli.jobs import JobError, JobFolder, Record
from cascadener.geic.spans import Document
from cascadener.ner import render

OUTPUT_FORMATS = ("pretty", "json", "jsonl", "html", "conll")
CHUNK = 256      # big enough for the engine to keep its batches full, small enough to save work often
# Options that change what is tagged: a job resumes only with the same values (--chunk, --batch-size
# and --format may change between runs).
RESULT_OPTIONS = ("text", "input", "input_format", "lang", "labels", "categories", "model", "extractor",
                  "classifier", "adapter", "extractor_adapter", "classifier_adapter", "dtype", "int8", "engine",
                  "k", "min_votes", "prompt_format", "system", "zero_shot", "constrain", "seed",
                  "max_segment_chars", "demos", "shots")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one text to tag")
    src.add_argument("--input", help="file of plain lines or JSONL records; - for stdin")
    p.add_argument("--input-format", choices=jobs.INPUT_FORMATS, default="auto",
                   help="lines: every line is a text; jsonl: every line a JSON object; auto (default): jsonl "
                        "when the first non-blank line is a JSON object, else lines")
    p.add_argument("--lang", default="en", help="language of --text / plain lines (zh and ja render without spaces)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                   help="default: pretty for --text, jsonl for --input; json for --input is one array")
    p.add_argument("--output", help="write here instead of stdout (a resumable job, see above)")
    p.add_argument("--no-color", action="store_true", help="plain brackets in pretty output")
    add_model_args(p)
    p.set_defaults(chunk=CHUNK)
    return p


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:         # Ctrl-C outside tagging (loading, waiting for other processes)
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _main(argv: list[str] | None) -> int:
    p = parser()
    args = p.parse_args(argv)
    fmt = args.format or ("pretty" if args.text is not None else "jsonl")
    tree = categories_from_args(args)
    if tree is None:
        raise SystemExit("error: give the entity types with --labels a,b,c or --categories FILE")
    options_from_args(args)     # a bad option, or a prompt format the weights were not trained on
    try:
        rank, world = jobs.ranks()
    except JobError as e:
        return fail(str(e))
    if world > 1 and (args.output is None or args.input in (None, "-")):
        p.error(f"WORLD_SIZE={world}: a sharded job needs --input FILE (not stdin) and --output")

    # Everything a user can get wrong is checked before the model loads.
    folder = JobFolder(Path(args.output)) if args.output else None
    try:
        source = open_input(args)
    except JobError as e:
        return fail(str(e))
    with source as stream:
        try:
            if folder is not None:
                folder.open(settings(args, world))
        except (OSError, JobError) as e:
            return fail(str(e))
        if folder is None:
            return to_stdout(args, fmt, tree, read(args, stream))
        if rank == 0 and Path(args.output).exists():
            print(f"{args.output} exists; it is replaced when this job is complete", file=sys.stderr)
        ran = None
        if not folder.done_marker(rank, world).exists():
            ran = to_journal(args, tree, folder, rank, world, stream)
            if isinstance(ran, int):
                return ran
    if rank != 0:
        return 0
    jobs.wait_for_parts(folder, world, lambda ranks: print(
        f"waiting for process{'es' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}", file=sys.stderr))
    try:
        tally = jobs.merge(folder, world, jobs.writer_for(fmt, single=args.text is not None))
    except (OSError, ValueError) as e:      # JobError and a damaged journal's JSON are ValueErrors
        return fail(str(e))
    print(summary(tally, ran) + f" -> {args.output}", file=sys.stderr)
    return 1 if tally.errors else 0


def open_input(args: argparse.Namespace) -> Any:
    if args.text is not None:
        return nullcontext(None)
    if args.input == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return open(args.input, "rb")
    except OSError as e:
        raise JobError(f"cannot read --input {args.input}: {e.strerror}") from None


def read(args: argparse.Namespace, source: Any) -> Iterator[Record]:
    if args.text is not None:
        return iter([Record(1, text=args.text, lang=args.lang)])
    return jobs.read_records(source, args.input_format, args.lang)


def settings(args: argparse.Namespace, world: int) -> dict[str, Any]:
    values = {name: getattr(args, name, None) for name in RESULT_OPTIONS}
    if args.input not in (None, "-"):
        values["input"] = os.path.abspath(args.input)
    return values | {"processes": world}


def load(args: argparse.Namespace, tree: Any) -> jobs.Tagger:
    """The pipeline as a Tagger (what it cannot load ends the program with one line `error: ...`)."""
    ner = load_pipeline(args, demos=demos_from_args(args, tree))

    def tag(texts: list[str]) -> list[Document]:
        ner.forget()        # each chunk computed from scratch: a resumed job writes the same scores
        return ner.predict_batch(texts, categories=tree)
    return tag


@dataclass
class Ran:
    """What this process tagged in this run."""
    tally: jobs.Tally
    seconds: float


def summary(tally: jobs.Tally, ran: Ran | None) -> str:
    line = f"{tally.records:,} texts, {tally.entities:,} entities, {tally.errors:,} errors"
    if ran is not None and ran.seconds > 0:
        line += f", {ran.seconds:.1f} s ({ran.tally.records / ran.seconds:.2f} texts/s)"
    return line


def to_stdout(args: argparse.Namespace, fmt: str, tree: Any, records: Iterator[Record]) -> int:
    tag = load(args, tree)
    writer = jobs.writer_for(fmt, single=args.text is not None,
                             color=not args.no_color and render.wants_color(sys.stdout))
    sink = jobs.Sink(writer, sys.stdout)
    sys.stdout.write(writer.start())
    # A progress line would tear through records printed on the same terminal.
    show = args.text is None and not sys.stdout.isatty()
    ran = tag_job(args, tag, records, sink, jobs.Progress(None) if show else None)
    if isinstance(ran, int):
        return ran
    sys.stdout.write(writer.end())
    if args.text is None:
        print(summary(ran.tally, ran), file=sys.stderr)
    return 1 if ran.tally.errors else 0


def to_journal(args: argparse.Namespace, tree: Any, folder: JobFolder, rank: int, world: int,
               source: Any) -> Ran | int:
    """This process's share of the job into its journal, then its completion marker."""
    journal = jobs.Journal(folder.journal(rank, world))
    records = jobs.shard(read(args, source), rank, world)
    label = f"process {rank}/{world}: " if world > 1 else ""
    try:
        start = journal.resume(records)
    except (OSError, JobError) as e:
        return fail(str(e))
    if start:
        print(f"{label}resuming after the {start:,} texts saved in {journal.path}", file=sys.stderr)
    tag = load(args, tree)
    progress = None
    if rank == 0 and args.text is None:
        total = None if args.input == "-" else len(range(rank, jobs.count_lines(args.input), world))
        progress = jobs.Progress(total, start, label=label)
    try:
        ran = tag_job(args, tag, records, jobs.Sink(journal=journal), progress, start)
    finally:
        journal.close()
    if isinstance(ran, int):
        return ran
    jobs.mark_done(folder, rank, world, start + ran.tally.records)
    if world > 1:
        print(f"{label}{summary(ran.tally, ran)} -> {journal.path}", file=sys.stderr)
    return ran


def tag_job(args: argparse.Namespace, tag: jobs.Tagger, records: Iterator[Record], sink: jobs.Sink,
            progress: jobs.Progress | None, start: int = 0) -> Ran | int:
    """Run the job under the signal guard: what it tagged, or the exit status of an interruption."""
    guard = jobs.SignalGuard()
    began = time.perf_counter()
    stopped = None
    try:
        with guard.installed():
            jobs.run(records, tag, sink, args.chunk, guard, progress, start)
    except jobs.Interrupted as e:
        stopped = e
    finally:
        if progress is not None:
            progress.close()          # before any message, which would otherwise share its line
    if stopped is not None:
        saved = "saved; rerun the same command to continue" if sink.journal is not None else "written"
        print(f"interrupted by {stopped}: {start + sink.tally.records:,} texts {saved}", file=sys.stderr)
        return 128 + stopped.signum
    return Ran(sink.tally, time.perf_counter() - began)


if __name__ == "__main__":
    sys.exit(main())
