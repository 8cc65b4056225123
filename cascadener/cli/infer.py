"""Tag text with CascadeNER.

    python infer.py --text "Kobe Bryant played for the Lakers." --labels person,organization,location
    python infer.py --input texts.jsonl --categories DynamicNER.json --format jsonl --output out.jsonl
    python infer.py --input - --labels person,location --format html --output page.html < lines.txt

Input records are plain lines, or JSONL objects with a "text" field (and optional "id", "lang").
A bad record becomes {"error": ..., "line": N} in the output and the run goes on.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator, TextIO

from cascadener.ner import render
from cascadener.cli.common import add_model_args, categories_from_args, demos_from_args, load_pipeline
from cascadener.data.jsonl import to_record
from cascadener.geic.spans import Document
from cascadener.qwen2.locate import WeightsNotFound

FORMATS = ("pretty", "json", "jsonl", "html", "conll")


@dataclass
class Record:
    line: int
    text: str | None = None
    lang: str = "en"
    id: str = ""
    error: str | None = None


def read_records(stream: TextIO, lang: str = "en") -> Iterator[Record]:
    for n, raw in enumerate(stream, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if not line.lstrip().startswith("{"):
            yield Record(n, text=line, lang=lang)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield Record(n, error=f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text:
            yield Record(n, error='record has no non-empty "text" string')
            continue
        yield Record(n, text=text, lang=str(obj.get("lang", lang)), id=str(obj.get("id", "")))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one text to tag")
    src.add_argument("--input", help="file of plain lines or JSONL records; - for stdin")
    p.add_argument("--lang", default="en", help="language of --text / plain lines (zh and ja render without spaces)")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: pretty for --text, jsonl for --input")
    p.add_argument("--output", help="write here instead of stdout")
    p.add_argument("--no-color", action="store_true", help="plain brackets in pretty output")
    add_model_args(p)
    return p


def emit(fmt: str, doc: Document | None, rec: Record, out: TextIO, color: bool) -> None:
    if doc is None:
        out.write(json.dumps({"error": rec.error, "line": rec.line}, ensure_ascii=False) + "\n")
    elif fmt == "pretty":
        out.write(render.pretty(doc, color=color) + "\n")
    elif fmt == "conll":
        out.write(render.conll(doc))
    else:
        out.write(json.dumps(to_record(doc), ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fmt = args.format or ("pretty" if args.text else "jsonl")
    tree = categories_from_args(args)
    if tree is None:
        raise SystemExit("error: give the entity types with --labels a,b,c or --categories FILE")
    if args.text is not None:
        records = [Record(0, text=args.text, lang=args.lang)]
    else:
        with (nullcontext(sys.stdin) if args.input == "-" else open(args.input, encoding="utf-8")) as f:
            records = list(read_records(f, args.lang))
    try:
        ner = load_pipeline(args, demos=demos_from_args(args, tree))
    except WeightsNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    good = [r for r in records if r.error is None]
    docs: dict[int, Document] = {}
    start = time.perf_counter()
    for n in range(0, len(good), args.chunk):
        chunk = good[n:n + args.chunk]
        try:
            tagged = ner.predict_batch([r.text for r in chunk], categories=tree)
        except Exception as e:  # one failing batch must not cost the others their output
            for r in chunk:
                r.error = f"{type(e).__name__}: {e}"
            continue
        for r, d in zip(chunk, tagged):
            d.lang, d.id = r.lang, r.id
            docs[r.line] = d
        done, secs = min(n + args.chunk, len(good)), time.perf_counter() - start
        print(f"\r{done}/{len(good)} texts, {done / secs:.2f} texts/s", end="", file=sys.stderr, flush=True)
    if good:
        print(file=sys.stderr)
    with (open(args.output, "w", encoding="utf-8") if args.output else nullcontext(sys.stdout)) as out:
        if fmt == "html":
            out.write(render.html([docs[r.line] for r in records if r.line in docs]))
        elif fmt == "json" and args.text is not None and 0 in docs:
            out.write(json.dumps(to_record(docs[0]), ensure_ascii=False, indent=2) + "\n")
        else:
            for r in records:
                emit(fmt, docs.get(r.line), r, out, color=not args.no_color and render.wants_color(out))
    return 1 if any(r.error for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
