"""Extraction decoding speed: plain greedy vs copy-constrained greedy vs constrained + copy-speculation.

    python bench/bench_copy.py                       # 20 CoNLL-2003 test sentences, three prompt sets
    python bench/bench_copy.py --n 10 --formats paper --n-draft 8 --threads 1 --json out.json

Method:

* The real checkpoint ($CASCADENER_ASSETS) in bfloat16 with the engine's packed linears, every
  core, one process; with `--device cuda` on that GPU, as the engine runs there (plain linears).
* Sentences: the first `--n` of the CoNLL-2003 test split, in file order (short headlines included).
* Prompts: each `--formats` entry's extraction conversation, ChatML-rendered. `paper` is the
  authors' format (the bare sentence as the user turn): an untrained instruct model mostly answers
  it instead of copying, so its plain greedy output is rarely a copy. `instruct` asks for the marked
  copy, which the 0.5B instruct model mostly produces, with real marks, but it also rewrites
  CoNLL's token spacing ("Friday ." -> "Friday."), so its plain output is still not a faithful
  copy. A `/detok` suffix gives the sentences as people write them (no space before punctuation or
  `'s`), which the model does copy: that set checks the equality below.
* Methods, one sentence at a time (batch 1), run back to back per sentence in rotating order so
  that the machine's drift hits all of them alike. Other people's jobs on the 2 cores hurt the
  many small forwards of plain greedy far more than a few wide ones (OpenMP threads wait on each
  other at every operation), which would flatter speculation: so before each sentence the bench
  waits (`--wait-quiet`) until other processes use < 15% of the CPUs, and reports how busy they were.
  Methods:
    plain        `generate`, free greedy, budget 2 * source tokens + 32 (the pipeline's unconstrained one);
    constrained  `generate` under the copy constraint with `n_draft=0`: restricted head, one token per forward;
    speculative  the same with `n_draft=...`: copy-speculation;
  and, with `--batch B`, speculative over B sentences at once (rows accept different lengths).
* Time per call covers everything (prefill included). tok/s = output tokens (stop token excluded)
  / seconds; forwards/token = model calls (prefill included) / (output tokens + 1 for the stop).
  decode tok/s = output tokens / (seconds - that method's prefill seconds), the prefill timed once
  per sentence on its own: for plain greedy a forward with the full head at the prompt's last
  position, for the constrained methods one without the head (the engine reads the prompt's last
  hidden state through the restricted head). The decode columns compare the decoding methods
  alone; the end-to-end columns include that prefill difference. Batched rows
  have no decode figure (their prefill is batched).
* Equality: where plain greedy's output is a faithful marking of the source (the copy automaton
  accepts it), constrained and speculative output must be the same token ids. In bfloat16 a wider
  forward rounds differently, so a near-tie could in principle flip; any mismatch is listed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark this tree's cascadener, whatever else is installed

from common import (cpu_busy_fraction, default_model_dir, detokenize, machine_info, shared_data,  # noqa: E402
                    wait_for_quiet)

from cascadener import SamplingParams, Tokenizer, generate, load_model, load_tokenizer  # noqa: E402
from cascadener.engine.fastlinear import prepare_for_inference  # noqa: E402
from cascadener.engine.device import resolve_device  # noqa: E402
from cascadener.ner.copy import CopyConstraint  # noqa: E402
from cascadener.data import load_documents  # noqa: E402
from cascadener.ner.prompts import get_format  # noqa: E402

METHODS = ("plain", "constrained", "speculative")


@dataclass
class Run:
    format: str
    sentence: int
    method: str
    seconds: float
    tokens: list[int]
    forwards: int
    stopped: bool
    busy: float             # CPU share other processes used just before this sentence
    prefill: float = 0.0    # seconds of one forward over this sentence's prompt


def copy_mark(model, tok: Tokenizer, prompts: list[list[int]], sources: list[str], n_draft: int):
    """Each source copied under its copy constraint (the pipeline's extraction requests)."""
    automata = [CopyConstraint.for_tokenizer(tok).for_source(s) for s in sources]
    params = [SamplingParams(max_new_tokens=a.max_tokens) for a in automata]
    return generate(model, prompts, params, automata, n_draft=n_draft, batch_size=len(prompts))


def time_prefill(model, prompt: list[int], head: bool) -> float:
    """Seconds of one forward over the prompt, with the full head at its last position or none."""
    start = time.perf_counter()
    with torch.inference_mode():
        ids = torch.tensor([prompt], device=model.device)
        if head:
            model(ids, logits_at=slice(-1, None))
        else:
            model.hidden_states(ids)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - start


def run_one(name: str, i: int, method: str, model, tok: Tokenizer, prompt: list[int], source: str,
            n_draft: int, busy: float = 0.0) -> Run:
    start = time.perf_counter()
    if method == "plain":
        budget = 2 * len(tok.encode(source)) + 32
        g = generate(model, [prompt], SamplingParams(max_new_tokens=budget, stop_ids=tok.stop_ids,
                                                     vocab_limit=tok.vocab_size))[0]
        tokens, stopped = g.tokens, g.finish_reason == "stop"
        forwards = len(tokens) + stopped          # one per token, the prefill giving the first
    else:
        r = copy_mark(model, tok, [prompt], [source], n_draft if method == "speculative" else 0)[0]
        tokens, stopped, forwards = r.tokens, r.finish_reason == "stop", r.forward_passes
    return Run(name, i, method, time.perf_counter() - start, tokens, forwards, stopped, busy)


def bench_format(name: str, model, tok: Tokenizer, sources: list[str], n_draft: int, batch: int,
                 wait: float) -> list[Run]:
    fmt = get_format(name.split("/")[0])
    prompts = [tok.encode(tok.apply_chat_template(fmt.extraction(s))) for s in sources]
    runs: list[Run] = []
    for i, (p, s) in enumerate(zip(prompts, sources)):
        busy = wait_for_quiet(wait)
        prefill = {head: time_prefill(model, p, head) for head in (True, False)}
        for k in range(len(METHODS)):
            method = METHODS[(i + k) % len(METHODS)]          # rotate who goes first
            run = run_one(name, i, method, model, tok, p, s, n_draft, busy)
            run.prefill = prefill[method == "plain"]
            runs.append(run)
            print(f"  [{name} {i:2d}] {method:12s} {run.seconds:6.2f}s {len(run.tokens):3d} tok "
                  f"{run.forwards:3d} fwd  (others busy {busy:.2f})", flush=True)
    for b in range(0, len(sources) if batch > 1 else 0, batch):
        busy = wait_for_quiet(wait)
        start = time.perf_counter()
        results = copy_mark(model, tok, prompts[b:b + batch], sources[b:b + batch], n_draft)
        seconds = time.perf_counter() - start
        for j, r in enumerate(results):   # the batch's time is shared out by output length
            share = seconds * (len(r.tokens) + 1) / sum(len(x.tokens) + 1 for x in results)
            runs.append(Run(name, b + j, f"spec-batch{batch}", share, r.tokens, r.forward_passes,
                            r.finish_reason == "stop", busy))
        print(f"  [{name} {b:2d}+] spec-batch{batch} {seconds:6.2f}s", flush=True)
    return runs


def summarize(runs: list[Run], sources: dict[str, list[str]], constraint: CopyConstraint) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r.format for r in runs):
        mine = [r for r in runs if r.format == name]
        plain = {r.sentence: r for r in mine if r.method == "plain"}
        faithful = {i for i, r in plain.items()
                    if r.stopped and constraint.for_source(sources[name][i]).accepts(r.tokens)}
        plain_rate = plain_decode = None
        for method in dict.fromkeys(r.method for r in mine):
            rs = [r for r in mine if r.method == method]
            tokens = sum(len(r.tokens) for r in rs)
            seconds = sum(r.seconds for r in rs)
            rate = tokens / seconds
            decode = tokens / (seconds - sum(r.prefill for r in rs)) if method in METHODS else None
            if method == "plain":
                plain_rate, plain_decode = rate, decode
            same = [r.sentence for r in rs if r.sentence in faithful and r.tokens == plain[r.sentence].tokens]
            rows.append(dict(
                format=name, method=method, sentences=len(rs), tokens=tokens, seconds=round(seconds, 2),
                tok_per_s=round(rate, 2), speedup=round(rate / plain_rate, 2),
                decode_tok_per_s=decode and round(decode, 2), decode_speedup=decode and round(decode / plain_decode, 2),
                forwards_per_token=round(sum(r.forwards for r in rs) / sum(len(r.tokens) + 1 for r in rs), 3),
                faithful_plain=len(faithful), identical_to_plain=len(same),
                others_busy=round(sum(r.busy for r in rs) / len(rs), 2),
                mismatches=sorted(faithful - set(same)) if method != "plain" else []))
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("format", "method", "sentences", "tokens", "seconds", "tok_per_s", "speedup", "decode_tok_per_s",
            "decode_speedup", "forwards_per_token",
            "faithful_plain", "identical_to_plain", "mismatches", "others_busy")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in head) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model_dir())
    ap.add_argument("--data", default=shared_data("conll2003", "iob2", "test.txt"),
                    help="CoNLL test file (default: $CASCADENER_DATA/conll2003/iob2/test.txt)")
    ap.add_argument("--n", type=int, default=20, help="sentences (the first n of the file)")
    ap.add_argument("--formats", default="paper,instruct,instruct/detok",
                    help="prompt formats; NAME/detok runs NAME on the sentences with CoNLL's token spacing undone")
    ap.add_argument("--n-draft", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4, help="also run speculative copying in batches of B (1 = off)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--wait-quiet", type=float, default=120.0,
                    help="before each sentence, wait at most this many seconds for the other processes to calm down")
    ap.add_argument("--json", help="write the summary, per-sentence runs and machine facts here")
    args = ap.parse_args()
    if args.data is None:
        ap.error("give --data or set CASCADENER_DATA (the shared datasets directory)")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    # the model as the engine runs it (oneDNN-packed linears on a CPU): both methods get the same one
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        ap.error(f"--device: {e}")
    tok, model = load_tokenizer(args.model), prepare_for_inference(load_model(args.model, torch.bfloat16, device))
    constraint = CopyConstraint.for_tokenizer(tok)       # built once (about a second), outside the timings
    conll = [d.text for d in load_documents(args.data)[:args.n]]
    sources = {name: [detokenize(s) for s in conll] if name.endswith("/detok") else conll
               for name in args.formats.split(",")}
    info = machine_info() | {"busy_before": round(cpu_busy_fraction(), 2)}
    print(json.dumps(info))
    warm = get_format("paper").extraction(conll[0])
    for method in METHODS:                                 # first-call costs stay out of the table
        run_one("warm-up", 0, method, model, tok, tok.encode(tok.apply_chat_template(warm)), conll[0], args.n_draft)

    runs: list[Run] = []
    for name, texts in sources.items():
        runs += bench_format(name, model, tok, texts, args.n_draft, args.batch, args.wait_quiet)
    info["busy_after"] = round(cpu_busy_fraction(), 2)
    rows = summarize(runs, sources, constraint)
    print(json.dumps(info))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "summary": rows,
                                               "runs": [asdict(r) for r in runs]}, indent=1))


if __name__ == "__main__":
    main()
