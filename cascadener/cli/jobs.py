"""Batch jobs behind `infer.py --input`: stream, resume, shard across processes, isolate failures.

    tag = lambda texts: ner.predict_batch(texts, categories=tree)
    for chunk in chunks(read_records(open(path, "rb")), 256):    # lazily, a Record per non-blank line
        items = tag_chunk(tag, chunk)                            # a Document or a Failure per record

Without an output file, each chunk's items go to stdout as they are done. An output file is made in two
steps. While the job runs, each process appends its finished records to its own journal in
`<output>.partial/` (JSON lines, whole lines, flushed per chunk); when every journal is complete, one
process renders them, in input order and in the output's format, to a temporary file that then replaces
`<output>` in one rename. So an existing `<output>` is always a finished job, and a rerun of
the same command continues from the journals: the records they hold are checked against the input
(line number and text) and skipped, a partial last line is dropped, and the chunks keep the positions
they had, so the finished file is the one an uninterrupted run writes.

Sharding needs no process group: process `rank` of `world` takes the records whose index (counting
non-blank lines) is rank modulo world, so record i is entry i // world of journal i % world, and rank 0
merges by taking one entry from each journal in turn once each has its completion marker. The journals
must be on a file system every process sees.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from cascadener.data.jsonl import from_record
from cascadener.geic.spans import Document
from cascadener.ner import render
from cascadener.ner.render import Failure, RenderError

INPUT_FORMATS = ("auto", "lines", "jsonl")
Item = Document | Failure
Tagger = Callable[[list[str]], list[Document]]     # texts -> one Document each, in order (may raise)


class JobError(ValueError):
    """A job that cannot start or go on (unreadable journal, settings or input that changed)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that failure isolation does not catch it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------------------------- reading

@dataclass
class Record:
    line: int                     # 1-based line of the input
    text: str | None = None       # None when the line is not a usable record
    lang: str = "en"
    id: str = ""
    error: str = ""


def read_records(lines: Iterable[bytes], input_format: str = "auto", lang: str = "en") -> Iterator[Record]:
    """One Record per non-blank line of a byte stream; a line that is not a usable record is a Record
    with `error` set, so every non-blank line gives exactly one output record.

    input_format: "lines" (every line is a text), "jsonl" (every line a JSON object with a "text"
    string, optional "id" and "lang"; other keys are ignored) or "auto": jsonl when the first
    non-blank line is a JSON object, otherwise lines. Lines are split at \\n only; a trailing \\r
    (Windows files) and a UTF-8 byte order mark are dropped. Each line is decoded on its own, so a
    line that is not UTF-8 costs only its own record.
    """
    fmt = input_format
    for n, raw in enumerate(lines, 1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if n == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Record(n, error=f"line is not UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1})")
            continue
        if not line.strip():
            continue
        if fmt == "auto":
            fmt = "jsonl" if isinstance(_loads(line), dict) else "lines"
        yield Record(n, text=line, lang=lang) if fmt == "lines" else _json_record(n, line, lang)


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):      # JSONDecodeError, huge integers, deep nesting
        return None


def _json_record(n: int, line: str, lang: str) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return Record(n, error=f"invalid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        return Record(n, error="invalid JSON (nested too deeply)")
    except ValueError:              # int() refuses numbers of thousands of digits
        return Record(n, error="invalid JSON (a number too long)")
    if not isinstance(obj, dict):
        return Record(n, error=f'expected a JSON object with a "text" string, got {_json_type(obj)}')
    rid = obj.get("id")
    rid = str(rid) if isinstance(rid, int) and not isinstance(rid, bool) else rid
    rid = "" if rid is None else rid
    text, lang = obj.get("text"), obj.get("lang") or lang
    problem = ('record has no non-empty "text" string' if not isinstance(text, str) or not text else
               '"id" must be a string or an integer' if not isinstance(rid, str) else
               '"lang" must be a string' if not isinstance(lang, str) else
               next((f'"{key}" is not valid Unicode (a lone surrogate)' for key, v in
                     (("text", text), ("id", rid), ("lang", lang)) if not _encodable(v)), ""))
    if problem:
        return Record(n, id=rid if isinstance(rid, str) and _encodable(rid) else "", error=problem)
    return Record(n, text=text, lang=lang, id=rid)


def _json_type(obj: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(obj), "a number")


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def count_lines(path: str | os.PathLike) -> int:
    """Non-blank lines of a file, fast (bytes, ASCII whitespace): the progress line's total."""
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def shard(records: Iterable[Record], rank: int, world: int) -> Iterator[Record]:
    """The records of process `rank` of `world`: every world-th one, from the rank-th."""
    return islice(records, rank, None, world)


# --------------------------------------------------------------------------------------------- tagging

def tag_isolated(tag: Tagger, texts: list[str]) -> list[Document | str]:
    """A Document for each text, or the error message of a text that fails on its own: a batch that
    raises is split in halves and each retried, so one bad text costs only itself (and a few retries)."""
    try:
        return list(tag(texts))
    except Exception as e:  # noqa: BLE001 - anything a text can make the pipeline raise
        if len(texts) == 1:
            return [" ".join(f"{type(e).__name__}: {e}".split())[:1000]]
        half = len(texts) // 2
        return tag_isolated(tag, texts[:half]) + tag_isolated(tag, texts[half:])


def tag_chunk(tag: Tagger, records: Sequence[Record]) -> list[Item]:
    """The chunk's records as Documents (with their lang and id) or Failures, in order."""
    good = [r for r in records if r.text is not None]
    results = iter(tag_isolated(tag, [r.text for r in good]) if good else [])
    items: list[Item] = []
    for r in records:
        result = next(results) if r.text is not None else r.error
        if isinstance(result, Document):
            items.append(replace(result, lang=r.lang, id=r.id))
        else:
            items.append(Failure(r.line, result, r.id))
    return items


def chunks(records: Iterator[Record], size: int, start: int = 0) -> Iterator[list[Record]]:
    """Consecutive chunks on the grid of multiples of `size`, counting from record `start` (a resumed
    job cuts its first chunk short so the rest fall where they fell in the first run)."""
    first = size - start % size
    while chunk := list(islice(records, first)):
        yield chunk
        first = size


# --------------------------------------------------------------------------------------------- writing

class Writer:
    """An output format: the text before the first item, for each item, and after the last."""
    def start(self) -> str:
        return ""

    def item(self, item: Item) -> str:
        raise NotImplementedError

    def end(self) -> str:
        return ""


class JsonlWriter(Writer):
    def item(self, item: Item) -> str:
        return (item.to_json() if isinstance(item, Document) else json.dumps(item.to_dict(), ensure_ascii=False)) + "\n"


@dataclass
class JsonWriter(Writer):
    """A JSON array of records, one per line; one indented record when the job is a single --text."""
    single: bool = False
    count: int = 0

    def start(self) -> str:
        return "" if self.single else "["

    def item(self, item: Item) -> str:
        self.count += 1
        record = item.to_dict()
        if self.single:
            return json.dumps(record, ensure_ascii=False, indent=2) + "\n"
        return ("\n" if self.count == 1 else ",\n") + json.dumps(record, ensure_ascii=False)

    def end(self) -> str:
        return "" if self.single else ("\n]\n" if self.count else "]\n")


@dataclass
class PrettyWriter(Writer):
    color: bool = False

    def item(self, item: Item) -> str:
        if isinstance(item, Failure):
            return render.pretty_failure(item, self.color) + "\n"
        return render.pretty(item, self.color) + "\n"


class ConllWriter(Writer):
    def item(self, item: Item) -> str:
        return render.conll_failure(item) if isinstance(item, Failure) else render.conll(item)


@dataclass
class HtmlWriter(Writer):
    """One page: holds every item until the end (and checks each when it comes, see write_item)."""
    items: list[Item] = field(default_factory=list)

    def item(self, item: Item) -> str:
        if isinstance(item, Document):
            render.inline_spans(item)
        self.items.append(item)
        return ""

    def end(self) -> str:
        return render.html(self.items)


def writer_for(fmt: str, single: bool = False, color: bool = False) -> Writer:
    return {"jsonl": JsonlWriter, "conll": ConllWriter, "html": HtmlWriter,
            "json": lambda: JsonWriter(single), "pretty": lambda: PrettyWriter(color)}[fmt]()


@dataclass
class Tally:
    records: int = 0
    entities: int = 0
    errors: int = 0

    def add(self, item: Item) -> None:
        self.records += 1
        if isinstance(item, Failure):
            self.errors += 1
        else:
            self.entities += len(item.spans)


def write_item(writer: Writer, line: int, item: Item, tally: Tally) -> str:
    """The item in the writer's format; a document the view cannot show (RenderError) becomes a Failure."""
    try:
        text = writer.item(item)
    except RenderError as e:
        item = Failure(line, f"RenderError: {e}", item.id)
        text = writer.item(item)
    tally.add(item)
    return text


# --------------------------------------------------------------------------------------------- journals

def _entry(line: int, item: Item) -> str:
    record = item.to_dict() if isinstance(item, Failure) else {"line": line} | item.to_dict()
    return json.dumps(record, ensure_ascii=False) + "\n"


def _item(entry: dict[str, Any]) -> tuple[int, Item]:
    line = entry.pop("line")
    if "error" in entry:
        return line, Failure(line, entry["error"], entry.get("id", ""))
    return line, from_record(entry)


@dataclass
class JobFolder:
    """`<output>.partial/`: the settings of the job, one journal per process and its completion marker."""
    output: Path

    @property
    def path(self) -> Path:
        return self.output.with_name(self.output.name + ".partial")

    def journal(self, rank: int, world: int) -> Path:
        return self.path / f"part-{rank:05d}-of-{world:05d}.jsonl"

    def done_marker(self, rank: int, world: int) -> Path:
        return self.journal(rank, world).with_suffix(".done")

    def started(self) -> bool:
        """Whether any record was saved (a job that failed before its first chunk holds nothing to keep)."""
        return any(p.stat().st_size for p in self.path.glob("part-*.jsonl"))

    def open(self, settings: dict[str, Any]) -> None:
        """Create the folder, or check that the unfinished job in it has these settings. Raises JobError
        naming the settings that differ, OSError when the folder cannot be written."""
        if not self.output.parent.is_dir():
            raise JobError(f"the folder of --output {self.output} does not exist")
        if self.output.is_dir():
            raise JobError(f"--output {self.output} is a folder")
        settings_file = self.path / "settings.json"
        if settings_file.exists():
            before = json.loads(settings_file.read_text(encoding="utf-8"))
            changed = [f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in sorted(before.keys() | settings.keys())
                       if before.get(k) != settings.get(k)]
            if not changed:
                return
            if self.started():
                raise JobError(f"{self.path} holds an unfinished job with other settings ({'; '.join(changed)}): "
                               f"rerun it with its own settings to finish it, or delete the folder to start over")
        self.path.mkdir(exist_ok=True)
        tmp = self.path / f"settings.json.{os.getpid()}"     # every process writes the same; one rename wins
        tmp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, settings_file)


class Journal:
    """One process's finished records as JSON lines: a Document's record with its input "line" first,
    or a Failure's error record. Appended a chunk at a time, flushed and synced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None

    def resume(self, records: Iterator[Record]) -> int:
        """Drop a partial last line, then take from `records` those the journal already holds, checking
        that each is the same input line with the same text. Returns how many were taken."""
        self.path.touch()          # an empty journal is a complete one for a process with no records
        _truncate_partial_line(self.path)
        done = 0
        with open(self.path, encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                try:
                    entry = json.loads(raw)
                    line, text = entry["line"], entry.get("text")
                except (ValueError, KeyError, TypeError) as e:
                    raise JobError(f"{self.path}:{n}: damaged journal ({e}); delete {self.path.parent} to start over") from None
                record = next(records, None)
                if record is None or record.line != line or (text is not None and record.text != text):
                    now = "no longer a record" if record is None or record.line != line else "different now"
                    raise JobError(f"the input has changed since {self.path} was written: its record {n}, from "
                                   f"line {line} of the input, is {now}; delete {self.path.parent} to start over")
                done += 1
        return done

    def append(self, entries: Iterable[tuple[int, Item]]) -> None:
        if self.file is None:
            self.file = open(self.path, "ab")
        self.file.write("".join(_entry(line, item) for line, item in entries).encode("utf-8"))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _truncate_partial_line(path: Path) -> None:
    """Cut a file after its last newline (what a kill in the middle of a write leaves)."""
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos != end:
            f.truncate(pos)


def mark_done(folder: JobFolder, rank: int, world: int, count: int) -> None:
    marker = folder.done_marker(rank, world)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"records": count}) + "\n", encoding="utf-8")
    os.replace(tmp, marker)


def wait_for_parts(folder: JobFolder, world: int, waiting: Callable[[list[int]], None],
                   poll: float = 1.0) -> None:
    """Until every process has marked its journal complete; `waiting` hears the ranks still running."""
    told: list[int] = []
    while missing := [r for r in range(world) if not folder.done_marker(r, world).exists()]:
        if missing != told:
            waiting(missing)
            told = missing
        time.sleep(poll)


def merge(folder: JobFolder, world: int, writer: Writer) -> Tally:
    """Every journal, in input order, rendered by `writer` into `folder.output` (replaced in one
    rename); the folder is removed afterwards."""
    tally = Tally()
    tmp = folder.path / "output.tmp"
    parts = [open(folder.journal(r, world), encoding="utf-8") for r in range(world)]
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(writer.start())
            previous, turn = 0, 0
            while raw := parts[turn % world].readline():
                line, item = _item(json.loads(raw))
                if line <= previous:
                    raise JobError(f"{parts[turn % world].name}: line {line} after line {previous}; "
                                   f"delete {folder.path} to start over")
                out.write(write_item(writer, line, item, tally))
                previous, turn = line, turn + 1
            if any(p.readline() for p in parts):
                raise JobError(f"the journals in {folder.path} do not interleave; delete the folder to start over")
            out.write(writer.end())
    finally:
        for p in parts:
            p.close()
    os.replace(tmp, folder.output)
    shutil.rmtree(folder.path)
    return tally


# --------------------------------------------------------------------------------------------- signals

class SignalGuard:
    """SIGINT and SIGTERM raise Interrupted at once, except while records are being written: then
    the write finishes first, so no record is ever cut in half by us."""

    def __init__(self) -> None:
        self.writing = False
        self.pending: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.writing:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        before = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in before.items():
                signal.signal(s, h)

    @contextmanager
    def write(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.pending is not None:
            raise Interrupted(self.pending)


# --------------------------------------------------------------------------------------------- progress

def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class Progress:
    """Texts done, texts/s and the time left, redrawn in place on a terminal every second (so the ETA
    counts down while a chunk decodes) and printed as a line every `interval` seconds otherwise."""
    total: int | None                  # records this process will write, None when unknown (stdin)
    done: int = 0                      # including those of an earlier run that this one resumes
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    interval: float = 60.0
    label: str = ""
    start: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)    # when `done` last moved
    resumed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.resumed = self.done
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.interval = 1.0 if tty else self.interval
        self.end = "\r" if tty else "\n"
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def advance(self, n: int) -> None:
        self.done += n
        self.last = time.monotonic()

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        ran = self.done - self.resumed
        rate = ran / (self.last - self.start) if ran and self.last > self.start else None
        parts = [f"{self.done:,}" + (f"/{self.total:,} texts ({100 * self.done // max(self.total, 1)}%)"
                                     if self.total is not None else " texts")]
        if rate:
            parts.append(f"{rate:.2f} texts/s")
            if self.total is not None:
                left = max(self.total - self.done, 0) / rate - (now - self.last)
                parts.append(f"ETA {duration(max(left, 0))}")
        parts.append(f"{duration(now - self.start)} elapsed")
        return self.label + " · ".join(parts)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write(self.line() + ("\x1b[K" if self.end == "\r" else "") + self.end)
            self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.end == "\r":
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# --------------------------------------------------------------------------------------------- the job

@dataclass
class Sink:
    """Where a chunk's items go: a stream in the output format, or a journal."""
    writer: Writer | None = None
    stream: TextIO | None = None
    journal: Journal | None = None
    tally: Tally = field(default_factory=Tally)

    def put(self, entries: list[tuple[int, Item]]) -> None:
        if self.journal is not None:
            for _, item in entries:
                self.tally.add(item)
            self.journal.append(entries)
        else:
            self.stream.write("".join(write_item(self.writer, line, item, self.tally) for line, item in entries))
            self.stream.flush()


def run(records: Iterator[Record], tag: Tagger, sink: Sink, chunk: int, guard: SignalGuard,
        progress: Progress | None = None, start: int = 0) -> Tally:
    """Tag `records` chunk by chunk into `sink`; `start` records were done by an earlier run."""
    for part in chunks(records, chunk, start):
        items = tag_chunk(tag, part)
        with guard.write():
            sink.put([(r.line, item) for r, item in zip(part, items)])
        if progress is not None:
            progress.advance(len(part))
    return sink.tally


def ranks(env: dict[str, str] = os.environ) -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK and WORLD_SIZE, (0, 1) without them."""
    try:
        rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise JobError(f"RANK={env.get('RANK')!r} and WORLD_SIZE={env.get('WORLD_SIZE')!r} must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise JobError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world
