"""Helpers shared by the benchmarks under bench/.

* the prompts every benchmark feeds (the same eight chat prompts as the HF baseline script);
* machine facts (cpu model, cores, library versions, date, load average) without importing torch;
* physical probes: large-array memory bandwidth and a small matmul, torch with a fixed thread count;
* how busy other processes keep the CPUs (before a run, and during it);
* fresh-subprocess runs: a child prints one ``RESULT {json}`` line, the parent parses it, so each
  configuration gets its own process and its own peak RSS.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

if TYPE_CHECKING:
    from cascadener import Tokenizer

T = TypeVar("T")
RESULT_PREFIX = "RESULT "

CHAT_PROMPTS = (
    "Write a Python function that reverses a string.",
    "What is the capital of France?",
    "Explain what a hash map is in two sentences.",
    "List three uses of the Fourier transform.",
    "Translate 'good morning' into German and Spanish.",
    "Extract the named entities: Kobe Bryant played for the Los Angeles Lakers.",
    "Why is the sky blue?",
    "Write a SQL query that counts rows per user in a table called events.",
)


def default_model_dir() -> str:
    """$CASCADENER_ASSETS, else where shared/tools/make-real-qwen2 puts the real checkpoint."""
    return os.environ.get("CASCADENER_ASSETS") or str(
        Path.home() / ".cache" / "cascadener-assets" / "qwen2.5-coder-0.5b-instruct")


def shared_data(*parts: str) -> str | None:
    """A path under $CASCADENER_DATA (the shared datasets directory), or None when it is unset."""
    root = os.environ.get("CASCADENER_DATA")
    return str(Path(root, *parts)) if root else None


def chat_prompt_ids(tok: Tokenizer, batch: int) -> list[list[int]]:
    """The first `batch` chat prompts, ChatML-rendered (default system turn included) and encoded."""
    if not 1 <= batch <= len(CHAT_PROMPTS):
        raise ValueError(f"batch must be 1..{len(CHAT_PROMPTS)}, got {batch}")
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}])) for p in CHAT_PROMPTS[:batch]]


def long_prompt_ids(tok: Tokenizer, length: int) -> list[int]:
    """A plain-text prompt of exactly `length` tokens (the chat prompts repeated, then cut)."""
    ids = tok.encode(" ".join(CHAT_PROMPTS * (length // 8 + 1)))[:length]
    if len(ids) != length:
        raise ValueError(f"could not build a {length}-token prompt (got {len(ids)})")
    return ids


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Rows padded on the left to one width, and their attention masks (1 = real token)."""
    width = max(len(p) for p in prompts)
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return ids, mask


def detokenize(text: str) -> str:
    """CoNLL's token-spaced text as people write it: no space before closing punctuation,
    `'s` or `n't`, nor after an opening bracket."""
    text = re.sub(r" ([.,:;!?%)\]]|'s\b|n't\b)", r"\1", text)
    return re.sub(r"([(\[$]) ", r"\1", text)


# --- timing and memory ---------------------------------------------------------------------------

def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall time of one call (CPU work is synchronous) and its result."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time over `repeats` calls; warm up before calling this."""
    return min(timed(fn)[0] for _ in range(repeats))


def peak_rss_mib() -> float:
    """High-water resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- machine facts and physical probes -----------------------------------------------------------

def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "torch": _version("torch"), "transformers": _version("transformers"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def memory_bandwidth(threads: int, gib: float = 1.0, repeats: int = 5, copy: bool = True,
                     device: str = "cpu") -> dict:
    """Large-array bandwidth with torch on `threads` threads (or on a GPU): read (sum) and copy
    (read + write bytes).

    The array (1 GiB by default) is far larger than the last-level cache, so this is DRAM speed:
    the ceiling for streaming weights during batch-1 decode. Best of `repeats` after one warm-up.
    """
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32, device=device)
    x.sum()
    out = {"read_GBps": round(x.nbytes / best_time(synced(x.sum, device), repeats) / 1e9, 1)}
    if copy:
        y = torch.empty_like(x)
        y.copy_(x)
        out["copy_GBps"] = round(2 * x.nbytes / best_time(synced(lambda: y.copy_(x), device), repeats) / 1e9, 1)
    return out


def synced(fn: Callable[[], T], device: str) -> Callable[[], T]:
    """`fn`, waiting for the GPU's queued work at the end (CUDA calls return before it is done)."""
    import torch

    if not str(device).startswith("cuda"):
        return fn

    def call() -> T:
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return call


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """fp32 n^3 matmul speed: a quick compute probe to show CPU-speed drift next to a timing."""
    import torch

    torch.set_num_threads(threads)
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)  # into a preallocated output: allocator and page-fault costs stay out
    return round(2 * n ** 3 / best_time(lambda: torch.mm(a, b, out=c), repeats) / 1e9, 1)


# --- other people's work on the machine -----------------------------------------------------------
# On a shared 2-core machine another job halves a benchmark's speed; /proc/stat tells how much of
# the CPUs were busy, and getrusage how much of that was our own children.

def _cpu_ticks() -> tuple[int, int]:
    """(all, busy) clock ticks summed over the CPUs since boot: user..steal of /proc/stat's first line."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks), sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_busy_fraction(window_s: float = 2.0) -> float:
    """Share of the CPUs busy over `window_s` while this process sleeps: other people's work."""
    total0, busy0 = _cpu_ticks()
    time.sleep(window_s)
    total1, busy1 = _cpu_ticks()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15) -> float:
    """Wait (at most `max_wait_s`) until other processes use < `threshold` of the CPUs; return the
    last busy fraction seen, so a run that had to start on a busy machine says so."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu_busy_fraction()
    while busy >= threshold and time.monotonic() < deadline:
        busy = cpu_busy_fraction()
    return round(busy, 2)


class OthersShare:
    """Share of the CPUs other processes took while a `with` block of this process ran."""
    value: float = 0.0

    def __enter__(self) -> OthersShare:
        self._ticks, self._own = _cpu_ticks(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        (total0, busy0), (total1, busy1) = self._ticks, _cpu_ticks()
        own_ticks = (time.process_time() - self._own) * os.sysconf("SC_CLK_TCK")
        self.value = round(max(0.0, (busy1 - busy0 - own_ticks) / max(1, total1 - total0)), 3)


# --- fresh-subprocess runs -----------------------------------------------------------------------

class ChildError(RuntimeError):
    pass


def child_env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                TOKENIZERS_PARALLELISM="false")


def emit(result: dict) -> None:
    """Child side: report the result as the one line the parent looks for."""
    print(RESULT_PREFIX + json.dumps(result, ensure_ascii=False), flush=True)


def run_child(script: str, args: list[str], threads: int) -> dict:
    """Run `python script args...` in a fresh process and return the dict it emitted, plus
    `others_cpu_share`: the share of the CPUs that other processes took while it ran."""
    total0, busy0, own0 = *_cpu_ticks(), _children_cpu_s()
    p = subprocess.run([sys.executable, script, *args], env=child_env(threads), capture_output=True, text=True)
    total1, busy1, own1 = *_cpu_ticks(), _children_cpu_s()
    own_ticks = (own1 - own0) * os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy1 - busy0 - own_ticks) / max(1, total1 - total0))
    for line in p.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX):]), "others_cpu_share": round(others, 3)}
    raise ChildError(f"{' '.join(args)} exited {p.returncode} without a result\n"
                     f"--- stdout ---\n{p.stdout[-3000:]}\n--- stderr ---\n{p.stderr[-3000:]}")
