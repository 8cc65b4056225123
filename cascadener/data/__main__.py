"""``python -m cascadener.data convert IN OUT [--from FMT] [--to FMT] [--lang L] [--scheme S]``

Converts between column files (``conll``), the authors' GEIC JSON (``geic``) and our JSONL
(``jsonl``); formats default to detection from the file names/content. Entities that could not be
carried over are listed on stderr; malformed input exits with status 1 and ``file:line: message``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cascadener.data import FORMATS, DataError, Problem, detect_format, read_documents, save_documents
from cascadener.data.tags import SCHEMES

_SHOWN = 10   # problems listed individually before summarising


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cascadener.data",
                                     description="Convert NER data between column files, GEIC JSON and JSONL.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert between conll, geic and jsonl")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--from", dest="src", choices=FORMATS, help="input format (default: detect)")
    convert.add_argument("--to", dest="dst", choices=FORMATS, help="output format (default: from extension)")
    convert.add_argument("--lang", help="language of the documents; zh/ja join column-file tokens without spaces")
    convert.add_argument("--scheme", default="auto", choices=("auto", *SCHEMES),
                         help="tag scheme of an input column file (default: detect)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = read_documents(args.input, args.src or "auto", args.lang, args.scheme)
        dst = args.dst or detect_format(args.output, sniff=False)
        written = save_documents(result.documents, args.output, dst)
    except (DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n_entities = sum(len(d.spans) for d in result.documents)
    scheme = f", {result.scheme.upper()}" if result.scheme else ""
    print(f"read {len(result.documents)} documents, {n_entities} entities from {args.input}{scheme}; "
          f"wrote {args.output} ({dst})", file=sys.stderr)
    _report("repaired while reading", result.repaired)
    _report("left out while reading", result.dropped)
    _report("not written exactly", written)
    return 0


def _report(what: str, problems: list[Problem]) -> None:
    if not problems:
        return
    print(f"{len(problems)} entities {what}:", file=sys.stderr)
    for p in problems[:_SHOWN]:
        print(f"  {p.where}: {p.mention!r}: {p.reason}", file=sys.stderr)
    if len(problems) > _SHOWN:
        print(f"  ... and {len(problems) - _SHOWN} more", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
