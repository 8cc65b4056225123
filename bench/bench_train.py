"""LoRA training step: ours (train.py's loop) against HF transformers + PEFT, same checkpoint,
same batch, same LoRA, same precision, side by side in one run.

    python bench/bench_train.py                        # batch 8 of CoNLL-2003 extraction examples, 3 rounds
    python bench/bench_train.py --batch 4 --steps 4 --rounds 2 --json train.json
    python bench/bench_train.py --task joint          # + ours without packing: what packing buys

The batch: a stratified sample of `--batch` CoNLL-2003 train sentences as extraction examples in
the prefix format (what `train.py --task extract` trains on), right-padded, loss on the answer
tokens only. Both sides get the same token ids and masks. With `--task joint`, the sentences'
joint-format examples (each sentence's extraction and its questions, which share their heads):
ours packs each sentence's examples into one token tree as train.py does, "unpacked" is ours with
every example its own row, HF gets every example as its own row.

Both sides use the recipe train.py uses with --dtype bf16: frozen base weights stored in
bfloat16, LoRA r=16, alpha=32, dropout 0.05 on q,k,v,o,gate,up,down with float32 adapter
weights, bfloat16 autocast, AdamW (lr 2e-4), gradient clipping at 1.0.

* ours: cascadener.training (the LM head only at the loss positions);
* HF: AutoModelForCausalLM + peft.get_peft_model, loss from ``labels`` with -100 on the prompt,
  the way a PEFT user trains (HF computes the head at every position).

Each (side, round) runs in a fresh process, so peak RSS is that side's alone: one warm-up step,
then `--steps` timed steps; the best and median step time are kept, and the best round over
`--rounds`. Sides alternate which goes first. Other processes' share of the CPUs is measured
during each child; above 10% a figure is marked `*` and is not conclusive.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark this tree's cascadener, whatever else is installed

from common import (ChildError, default_model_dir, emit, machine_info, peak_rss_mib, run_child,  # noqa: E402
                    shared_data)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA, DROPOUT, LR, CLIP = 16, 32, 0.05, 2e-4, 1.0
OTHERS_LIMIT = 0.10


def batch_examples(model_dir: str, data: str, n: int, task: str):
    """n sentences' examples (token ids and loss masks), one list per sentence, as train.py builds them."""
    from cascadener import load_tokenizer
    from cascadener.ner.prompts import get_format
    from cascadener.training.examples import chat_examples, load_task_data, tokenize_all

    docs, tree = load_task_data(data, None, n, seed=0)          # a stratified sample, readable labels
    fmt = get_format("prefix" if task == "extract" else "joint")
    return tokenize_all(chat_examples(task, docs, tree, fmt, 0), load_tokenizer(model_dir), 10**9)[0]


def ours_step_fn(model_dir: str, groups, packed: bool):
    from cascadener.qwen2.lora import LoRAConfig, inject
    from cascadener.training.batches import collate, pack
    from cascadener.training.loop import token_loss_sum
    from cascadener import load_model

    model = load_model(model_dir, torch.bfloat16)       # as train.py --dtype bf16 (training.loop.build_model)
    inject(model, LoRAConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    batch = collate([pack(g) for g in groups] if packed else [pack([e]) for g in groups for e in g], pad_id=0)
    n_targets = len(batch.targets)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = token_loss_sum(model, batch)
        (loss / n_targets).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item() / n_targets
    return step


def hf_step_fn(model_dir: str, groups):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(model_dir, **{key: torch.bfloat16})
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    for p in model.parameters():          # float32 adapters, as ours (PEFT's autocast_adapter_dtype)
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    # Right-padded ids; HF shifts the labels itself, so -100 wherever ours takes no loss.
    examples = [e for g in groups for e in g]
    T = max(len(e) for e in examples)
    inputs = torch.tensor([e.ids + [0] * (T - len(e)) for e in examples])
    attention = torch.tensor([[1] * len(e) + [0] * (T - len(e)) for e in examples])
    labels = torch.tensor([[i if m else -100 for i, m in zip(e.ids, e.loss_mask)] + [-100] * (T - len(e))
                           for e in examples])

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=inputs, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def child(side: str, model_dir: str, data: str, n: int, task: str, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    groups = batch_examples(model_dir, data, n, task)
    step = hf_step_fn(model_dir, groups) if side == "hf" else ours_step_fn(model_dir, groups, side == "ours")
    first_loss = step()                         # warm-up
    times, losses = [], []
    for _ in range(steps):
        t = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t)
    examples = [e for g in groups for e in g]
    tokens = sum(map(len, examples))
    return {"side": side, "best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
            "tokens_per_s": round(tokens / min(times), 1), "tokens": tokens,
            "shape": [len(examples), max(map(len, examples))], "answer_tokens": sum(e.n_targets for e in examples),
            "first_loss": round(first_loss, 4), "losses": [round(x, 4) for x in losses],
            "peak_rss_mib": round(peak_rss_mib())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model_dir())
    ap.add_argument("--data", default=shared_data("conll2003", "iob2", "train.txt"),
                    help="CoNLL train file (default: $CASCADENER_DATA/conll2003/iob2/train.txt)")
    ap.add_argument("--batch", type=int, default=8, help="sentences")
    ap.add_argument("--task", choices=("extract", "joint"), default="extract")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per child, after one warm-up")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--child", choices=("ours", "unpacked", "hf"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.data is None:
        ap.error("give --data or set CASCADENER_DATA (the shared datasets directory)")
    if args.child:
        emit(child(args.child, args.model, args.data, args.batch, args.task, args.steps, args.threads))
        return

    print(f"# {machine_info()}\n# {args.task}, batch {args.batch} sentences, {args.steps} timed steps, "
          f"{args.rounds} rounds", flush=True)
    runs = []
    script = str(Path(__file__).resolve())
    sides = ("ours", "unpacked", "hf") if args.task == "joint" else ("ours", "hf")
    for rnd in range(args.rounds):
        for side in (sides if rnd % 2 == 0 else sides[::-1]):
            r = run_child(script, ["--child", side, "--model", args.model, "--data", args.data, "--batch",
                                   str(args.batch), "--task", args.task, "--steps", str(args.steps),
                                   "--threads", str(args.threads)], args.threads)
            runs.append(r | {"round": rnd})
            print(f"[round {rnd + 1}] {side:8s}: step {r['best_s']} s best, {r['median_s']} s median, "
                  f"{r['tokens_per_s']} tok/s, peak RSS {r['peak_rss_mib']} MiB, loss {r['first_loss']} -> "
                  f"{r['losses'][-1]}, others {r['others_cpu_share']:.0%}", flush=True)
    best = {s: min((r for r in runs if r["side"] == s), key=lambda r: r["best_s"]) for s in sides}
    o, h = best["ours"], best["hf"]
    star = lambda r: "*" if r["others_cpu_share"] > OTHERS_LIMIT else ""  # noqa: E731
    print("\n| side | step s (best / median) | tokens/s | peak RSS MiB |\n|---|---|---|---|")
    names = {"ours": "ours", "unpacked": "ours, unpacked", "hf": "HF + PEFT"}
    for side in sides:
        r = best[side]
        print(f"| {names[side]} | {r['best_s']}{star(r)} / {r['median_s']} | {r['tokens_per_s']} | {r['peak_rss_mib']} |")
    print(f"\nstep time ours/HF {o['best_s'] / h['best_s']:.2f} (goal <= 1: {'PASS' if o['best_s'] <= h['best_s'] else 'MISS'}); "
          f"peak RSS ours/HF {o['peak_rss_mib'] / h['peak_rss_mib']:.2f} "
          f"(goal < 1: {'PASS' if o['peak_rss_mib'] < h['peak_rss_mib'] else 'MISS'})")
    if "unpacked" in best:
        print(f"packing by sentence: step time unpacked/packed {best['unpacked']['best_s'] / o['best_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except ChildError as e:
        sys.exit(f"bench_train: a child run failed: {e}")
