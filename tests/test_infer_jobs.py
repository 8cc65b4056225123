"""infer.py's batch jobs (cascadener/cli/jobs.py) with a stub pipeline: reading records, failure
isolation, chunk positions, journals and resume, sharding and merging, error records in every format,
and a fuzz of the reader and writers. The real engine runs in test_infer_cli.py and test_infer_jobs_kill.py."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cascadener.cli import infer, jobs
from cascadener.cli.jobs import JobError, JobFolder, Journal, read_records
from cascadener.geic.spans import Document, Span

LABELS = ["--labels", "person"]


# --------------------------------------------------------------------------------------------- the stub

class StubTagger:
    """predict_batch's contract without a model: capitalised words are persons; a text containing
    BOOM makes the whole batch raise, as a text that breaks the engine would. Counts texts tagged."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.calls, self.tagged = delay, 0, 0

    def __call__(self, texts: list[str]) -> list[Document]:
        self.calls += 1
        if any("BOOM" in t for t in texts):
            raise RuntimeError("stub cannot tag BOOM")
        time.sleep(self.delay * len(texts))
        self.tagged += len(texts)
        return [Document(t, [Span(m.start(), m.end(), "person", ("person",), 0.5)
                             for m in re.finditer(r"\b[A-Z]\w*", t)]) for t in texts]


def stub_main(argv: list[str], tagger: StubTagger | None = None) -> int:
    """infer.main with the stub in place of the model (also the entry point of the kill tests' subprocesses)."""
    tagger = tagger or StubTagger(float(next((a.split("=")[1] for a in argv if a.startswith("--delay=")), 0)))
    load, infer.load = infer.load, lambda args, tree: tagger
    try:
        return infer.main([a for a in argv if not a.startswith("--delay=")] + LABELS)
    finally:
        infer.load = load


def lines_file(path: Path, n: int) -> Path:
    path.write_text("".join(f'{{"text": "Text {i} by Ada Lovelace in London", "id": "r{i}"}}\n' for i in range(n)),
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- reading

def records(data: bytes, fmt: str = "auto") -> list[tuple]:
    return [(r.line, r.text, r.id, r.lang, r.error) for r in read_records(io.BytesIO(data), fmt)]


READER_CASES = [   # input, --input-format, (line, text, id, lang, error prefix) per record
    (b'a plain line\n\n  \n{not json\n', "auto", [(1, "a plain line", "", "en", ""), (4, "{not json", "", "en", "")]),
    (b'{"text": "A", "id": 7, "lang": "de"}\nplain\n[1,2,3]\n5\n"s"\nnull\n{"x": 1}\n', "auto",
     [(1, "A", "7", "de", ""), (2, None, "", "en", "invalid JSON (Expecting value "),
      (3, None, "", "en", 'expected a JSON object with a'), (4, None, "", "en", 'expected a JSON object with a'),
      (5, None, "", "en", 'expected a JSON object with a'), (6, None, "", "en", 'expected a JSON object with a'),
      (7, None, "", "en", 'record has no non-empty "text')]),
    (b'[1,2,3]\n{"text": "x"}\n', "auto", [(1, "[1,2,3]", "", "en", ""), (2, '{"text": "x"}', "", "en", "")]),
    (b'plain\n', "jsonl", [(1, None, "", "en", "invalid JSON (Expecting value ")]),
    (b'{"text": "x"}\n', "lines", [(1, '{"text": "x"}', "", "en", "")]),
    (b'\xef\xbb\xbfbom\r\nok\xff\xfe\nlast', "auto",
     [(1, "bom", "", "en", ""), (2, None, "", "en", "line is not UTF-8 (byte 0xff "), (3, "last", "", "en", "")]),
    (b'{"text": "x", "id": [1]}\n{"text": "\\ud800"}\n{"text": "x", "id": true}\n', "jsonl",
     [(1, None, "", "en", '"id" must be a string or an '), (2, None, "", "en", '"text" is not valid Unicode '),
      (3, None, "", "en", '"id" must be a string or an ')]),
    (b'{"text": "x", "n": ' + b"9" * 5000 + b'}\n' + b"[" * 100000 + b"\n", "jsonl",
     [(1, None, "", "en", "invalid JSON (a number too long)"), (2, None, "", "en", "invalid JSON (nested too deeply)")]),
]


@pytest.mark.parametrize("data, fmt, expected", READER_CASES)
def test_read_records(data, fmt, expected):
    got = records(data, fmt)
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert all(g[4].startswith(e[4]) and bool(g[4]) == bool(e[4]) for g, e in zip(got, expected)), got


# --------------------------------------------------------------------------------------------- tagging

@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), max_size=40))
def test_a_failing_text_costs_only_itself(bad):
    tagger = StubTagger()
    texts = [f"BOOM {i}" if b else f"Text {i}" for i, b in enumerate(bad)]
    out = jobs.tag_isolated(tagger, texts)
    assert [isinstance(o, str) for o in out] == bad
    assert all(o == "RuntimeError: stub cannot tag BOOM" for o in out if isinstance(o, str))
    assert [o.text for o in out if isinstance(o, Document)] == [t for t in texts if "BOOM" not in t]
    assert tagger.tagged == len(texts) - sum(bad)          # every good text tagged once, none lost or repeated


@given(st.integers(0, 60), st.integers(1, 9), st.data())
def test_chunks_keep_their_positions_when_resumed(n, size, data):
    start = data.draw(st.integers(0, n))
    got = list(jobs.chunks(iter(range(start, n)), size, start))
    assert [x for c in got for x in c] == list(range(start, n))
    assert all(c[0] % size == 0 for c in got[1:]) and all(len(c) <= size for c in got)
    assert all((c[-1] + 1) % size == 0 for c in got[:-1])


# --------------------------------------------------------------------------------------------- journals

def run_job(folder: JobFolder, data: bytes, rank: int = 0, world: int = 1, chunk: int = 3,
            tagger: StubTagger | None = None) -> None:
    journal = Journal(folder.journal(rank, world))
    recs = jobs.shard(read_records(io.BytesIO(data)), rank, world)
    start = journal.resume(recs)
    jobs.run(recs, tagger or StubTagger(), jobs.Sink(journal=journal), chunk, jobs.SignalGuard(), start=start)
    journal.close()
    jobs.mark_done(folder, rank, world, 0)


INPUT = b"".join(b'{"text": "Ada %d in Paris", "id": "%d"}\n' % (i, i) if i % 7 != 3 else b"[%d]\n" % i
                 for i in range(30)) + b'{"text": "BOOM"}\n\n\nEnd\n'


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_merge_to_the_single_process_output(tmp_path, world):
    outputs = []
    for w in (1, world):
        folder = JobFolder(tmp_path / f"out{w}.jsonl")
        folder.open({"processes": w})
        for rank in reversed(range(w)):
            run_job(folder, INPUT, rank, w)
        tally = jobs.merge(folder, w, jobs.JsonlWriter())
        assert (tally.records, tally.errors) == (32, 6) and not folder.path.exists()
        outputs.append(folder.output.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1]
    rows = [json.loads(x) for x in outputs[0].splitlines()]
    assert rows[3] == {"error": 'expected a JSON object with a "text" string, got an array', "line": 4}
    assert rows[30]["error"].startswith("RuntimeError") and rows[31]["error"].startswith("invalid JSON")


def test_resume_drops_a_partial_line_and_finishes_the_same_file(tmp_path):
    whole = JobFolder(tmp_path / "whole.jsonl")
    whole.open({})
    run_job(whole, INPUT)
    journal = whole.journal(0, 1).read_bytes()
    cut = JobFolder(tmp_path / "cut.jsonl")
    cut.open({})
    lines = journal.splitlines(True)
    cut.journal(0, 1).write_bytes(b"".join(lines[:10]) + lines[10][:25])      # killed while writing line 11
    tagger = StubTagger()
    run_job(cut, INPUT, tagger=tagger)
    assert cut.journal(0, 1).read_bytes() == journal
    assert tagger.tagged == 32 - 10 - 4 - 1        # the rest only, less 4 unreadable records and BOOM


def test_resume_refuses_a_changed_input(tmp_path):
    folder = JobFolder(tmp_path / "out.jsonl")
    folder.open({})
    run_job(folder, INPUT)
    changed = INPUT.replace(b"Ada 5 ", b"Bob 5 ")
    with pytest.raises(JobError, match="input has changed.* record 6, from line 6 of the input, is different now"):
        Journal(folder.journal(0, 1)).resume(read_records(io.BytesIO(changed)))


def test_job_folder_checks_before_anything_runs(tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        JobFolder(tmp_path / "no" / "out.jsonl").open({})
    with pytest.raises(JobError, match="is a folder"):
        JobFolder(tmp_path).open({})
    folder = JobFolder(tmp_path / "out.jsonl")
    folder.open({"k": 3, "labels": "a"})
    folder.open({"k": 3, "labels": "a"})
    folder.open({"k": 1, "labels": "a"})            # nothing saved yet: the new settings win
    folder.journal(0, 1).write_text('{"line": 1, "text": "x", "entities": []}\n')
    with pytest.raises(JobError, match=r"other settings \(k 1 -> 3\)"):
        folder.open({"k": 3, "labels": "a"})


def test_progress_counts_down_while_a_chunk_decodes():
    p = jobs.Progress(100, 20, stream=io.StringIO())          # 20 done by an earlier run
    p.start, p.last, p.done = 0.0, 10.0, 60                    # 40 in 10 s: 4 texts/s, 40 to go
    assert p.line(12.0) == "60/100 texts (60%) · 4.00 texts/s · ETA 8s · 12s elapsed"
    assert p.line(15.0) == "60/100 texts (60%) · 4.00 texts/s · ETA 5s · 15s elapsed"
    p.close()
    q = jobs.Progress(None, stream=io.StringIO())             # stdin: no total, no ETA
    assert q.line(q.start + 75) == "0 texts · 1m15s elapsed"
    q.close()


def test_signals_wait_for_the_write_in_progress():
    guard = jobs.SignalGuard()
    with guard.installed():
        with pytest.raises(jobs.Interrupted, match="SIGINT"):
            with guard.write():
                os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C while a chunk is being saved ...
                written = True                           # ... lets the saving finish
        assert written
        with pytest.raises(jobs.Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)         # outside a write: at once
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# --------------------------------------------------------------------------------------------- the CLI

def test_cli_checks_output_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(infer, "load", lambda *a: pytest.fail("the model was loaded"))
    src = lines_file(tmp_path / "in.jsonl", 3)
    assert infer.main(["--input", str(src), "--output", str(tmp_path / "no/out.jsonl")] + LABELS) == 2
    assert capsys.readouterr().err == f"error: the folder of --output {tmp_path}/no/out.jsonl does not exist\n"
    assert infer.main(["--input", str(tmp_path / "missing.txt")] + LABELS) == 2
    assert "No such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        infer.main(["--input", str(src), "--chunk", "0"] + LABELS)
    assert "argument --chunk: must be at least 1, got 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        infer.main(["--input", "-", "--output", str(tmp_path / "o.jsonl")] + LABELS)
    assert "needs --input FILE (not stdin) and --output" in capsys.readouterr().err


def test_cli_replaces_an_existing_output_only_when_complete(tmp_path, capsys):
    src = lines_file(tmp_path / "in.jsonl", 12)
    out = tmp_path / "out.jsonl"
    out.write_text("an earlier result\n")

    class Killed(StubTagger):
        def __call__(self, texts):
            if self.calls == 2:
                raise jobs.Interrupted(15)     # what the SIGTERM handler raises
            return super().__call__(texts)

    assert stub_main(["--input", str(src), "--output", str(out), "--chunk", "4"], Killed()) == 143
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM: 8 texts saved; rerun the same command to continue" in err
    assert out.read_text() == "an earlier result\n"
    assert stub_main(["--input", str(src), "--output", str(out), "--k", "1", "--chunk", "4"]) == 2
    assert "other settings (k 3 -> 1)" in capsys.readouterr().err
    tagger = StubTagger()
    assert stub_main(["--input", str(src), "--output", str(out), "--chunk", "5"], tagger) == 0
    assert tagger.tagged == 4 and "resuming after the 8 texts saved in " in capsys.readouterr().err
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"r{i}" for i in range(12)]


@pytest.mark.parametrize("to_file", [False, True])
def test_stdin_is_read_as_it_comes(tmp_path, capsys, monkeypatch, to_file):
    stdin = io.TextIOWrapper(io.BytesIO(b'{"text": "Ada", "id": 1}\n\n{"text": "Bob"}\n'))
    monkeypatch.setattr(sys, "stdin", stdin)
    out = tmp_path / "out.jsonl"
    assert stub_main(["--input", "-"] + (["--output", str(out)] if to_file else [])) == 0
    text = out.read_text() if to_file else capsys.readouterr().out
    assert [(r["text"], r.get("id")) for r in map(json.loads, text.splitlines())] == [("Ada", "1"), ("Bob", None)]


ERRORS_BY_FORMAT = {   # how the record on line 2 (not UTF-8) and line 3 (BOOM) show in each format
    "jsonl": ['{"error": "line is not UTF-8 (byte 0xff at byte 1)", "line": 2}',
              '{"error": "RuntimeError: stub cannot tag BOOM", "line": 3}'],
    "json": ['{"error": "line is not UTF-8 (byte 0xff at byte 1)", "line": 2},',
             '{"error": "RuntimeError: stub cannot tag BOOM", "line": 3},'],
    "conll": ["# error line 2: line is not UTF-8 (byte 0xff at byte 1)",
              "# error line 3: RuntimeError: stub cannot tag BOOM"],
    "pretty": ["error line 2: line is not UTF-8 (byte 0xff at byte 1)",
               "error line 3: RuntimeError: stub cannot tag BOOM"],
    "html": ['<p class="text">error line 2: line is not UTF-8 (byte 0xff at byte 1)</p>',
             '<p class="text">error line 3: RuntimeError: stub cannot tag BOOM</p>'],
}


@pytest.mark.parametrize("fmt", sorted(ERRORS_BY_FORMAT))
@pytest.mark.parametrize("to_file", [False, True])
def test_error_records_in_the_output_format(tmp_path, capsys, fmt, to_file):
    src = tmp_path / "in.txt"
    src.write_bytes(b"Ada in Paris\n\xff\nBOOM\nBob\n")
    out = tmp_path / f"out.{fmt}"
    assert stub_main(["--input", str(src), "--format", fmt] + (["--output", str(out)] if to_file else [])) == 1
    captured = capsys.readouterr()
    text = out.read_text(encoding="utf-8") if to_file else captured.out
    lines = text.splitlines()
    assert all(e in lines for e in ERRORS_BY_FORMAT[fmt])
    assert "4 texts, 3 entities, 2 errors" in captured.err.splitlines()[-1]
    if fmt == "json":
        assert [r.get("text", r.get("line")) for r in json.loads(text)] == ["Ada in Paris", 2, 3, "Bob"]


@pytest.mark.parametrize("fmt", sorted(infer.OUTPUT_FORMATS))
def test_a_document_a_view_cannot_show_becomes_an_error_in_it(fmt):
    overlapping = Document("New York City", [Span(0, 8, "location"), Span(4, 13, "location")], id="n")
    writer, tally = jobs.writer_for(fmt), jobs.Tally()
    text = writer.start() + jobs.write_item(writer, 7, overlapping, tally) + writer.end()
    inline = fmt in ("pretty", "conll", "html")
    assert (tally.records, tally.errors) == (1, int(inline))
    assert ("error line 7 (id n): RenderError: document n: spans [0, 8)" in text) == inline


# --------------------------------------------------------------------------------------------- fuzz

def random_line():
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                               max_leaves=6)
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
    record = st.fixed_dictionaries({"text": text}, optional={"id": st.text(max_size=5) | st.integers(),
                                                             "lang": text, "x": json_values})
    return st.one_of(
        text.map(lambda s: s.replace("\n", " ").encode("utf-8")),
        record.map(lambda r: json.dumps(r, ensure_ascii=bool(len(r) % 2)).encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v).encode("utf-8")),
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from([b"", b"   ", b"\r", b"{", b'{"text": ""}', b"\xef\xbb\xbf", b"BOOM", b"A" * 100_000,
                         ("Ada " * 5000 + "\u2028\x00\x1b[31m\ud7ff\U0010ffff").encode("utf-8")]))


def blank(line: bytes) -> bool:
    try:
        return not line.removesuffix(b"\r").decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(random_line(), max_size=120), st.sampled_from(sorted(infer.OUTPUT_FORMATS)),
       st.sampled_from(jobs.INPUT_FORMATS), st.integers(1, 50))
def test_fuzz_reader_and_writers(lines, fmt, input_format, chunk):
    """Any bytes in, every format out: no traceback, one record per non-blank line, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.write_bytes(b"\n".join(lines))
        code = stub_main(["--input", str(src), "--output", str(out), "--format", fmt, "--input-format",
                          input_format, "--chunk", str(chunk)])
        text = out.read_text(encoding="utf-8")
    expected = sum(not blank(line) for line in b"\n".join(lines).removeprefix(b"\xef\xbb\xbf").split(b"\n"))
    if fmt in ("jsonl", "json"):
        # split at \n only: str.splitlines() would also split inside texts, at U+2028 and friends
        rows = [json.loads(x) for x in text.split("\n")[:-1]] if fmt == "jsonl" else json.loads(text)
        assert len(rows) == expected
        assert code == (1 if any("error" in r for r in rows) else 0)
        failed = [r["line"] for r in rows if "error" in r]
        assert failed == sorted(failed)
