"""Batch jobs in real processes: killed (SIGKILL, SIGTERM) half way and rerun, and sharded by
torchrun (Ctrl-C takes SIGTERM's path: test_infer_jobs.py sends it in-process). The kill tests drive infer.py's CLI with the stub pipeline of test_infer_jobs.py (the job
machinery is what they test, and it is fast); the torchrun test runs the tiny checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cascadener.cli import infer
from cascadener.cli.jobs import JobFolder
from test_infer_jobs import StubTagger, lines_file, stub_main

TESTS = Path(__file__).resolve().parent
DRIVER = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_infer_jobs as t; sys.exit(t.stub_main(sys.argv[1:]))"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_killed_job_reruns_to_the_uninterrupted_output(tmp_path, sig):
    src = lines_file(tmp_path / "in.jsonl", 400)
    reference, out = tmp_path / "reference.jsonl", tmp_path / "out.jsonl"
    assert stub_main(["--input", str(src), "--output", str(reference), "--chunk", "10"]) == 0
    args = ["--input", str(src), "--output", str(out), "--chunk", "10"]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args, "--delay=0.003"], stderr=subprocess.PIPE, text=True)
    journal = JobFolder(out).journal(0, 1)
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 200):     # half way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.005)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    saved = journal.read_bytes()
    done = saved.count(b"\n")
    assert not out.exists() and 200 <= done < 400
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:                           # a clear line, no traceback, and the chunk being saved was saved whole
        assert proc.returncode == 128 + sig and saved.endswith(b"\n")
        assert err.splitlines()[-1] == (f"interrupted by {sig.name}: {done} texts saved; "
                                        f"rerun the same command to continue")
        assert "Traceback" not in err
    tagger = StubTagger()
    assert stub_main(args, tagger) == 0
    assert out.read_bytes() == reference.read_bytes()
    assert tagger.tagged == 400 - done        # nothing saved was tagged again


def same_records(a: str, b: str) -> bool:
    """Equal JSONL outputs, scores up to float rounding: the engine's prefix cache keeps the keys and
    values of earlier prompts, and a prompt run from a cached prefix can differ from one run whole in
    the last bits, so a process that saw other prompts first may write 0.99944348 for 0.99944360."""
    ra, rb = [json.loads(x) for x in a.splitlines()], [json.loads(x) for x in b.splitlines()]
    scores = lambda rows: [e.pop("score") for r in rows for e in r["entities"]]
    sa, sb = scores(ra), scores(rb)
    return ra == rb and sa == pytest.approx(sb, abs=1e-5)


def test_torchrun_two_processes_write_what_one_writes(tiny_ckpt, tmp_path):
    """Sampled (k=3): a request's seed comes from its text and run, not from its batch or process."""
    src = tmp_path / "in.txt"
    src.write_text("Kobe Bryant\nParis\n北京\nAngela Merkel\nthe Lakers\n", encoding="utf-8")
    args = ["--input", str(src), "--model", str(tiny_ckpt), "--dtype", "fp32", "--k", "3", "--chunk", "2",
            "--labels", "person,location"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert infer.main(args + ["--output", str(one)]) == 0
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(TESTS.parent / "infer.py"), *args, "--output", str(two)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert same_records(two.read_text(encoding="utf-8"), one.read_text(encoding="utf-8"))
    assert "process 1/2: 2 texts" in run.stderr and not JobFolder(two).path.exists()
