"""LoRA training step: ours (train.py's loop) against HF transformers + PEFT, same checkpoint,
same batch, same LoRA, same precision, side by side in one run.

    python bench/bench_train.py                        # batch 8 of CoNLL-2003 extraction examples, 3 rounds
    python bench/bench_train.py --batch 4 --steps 4 --rounds 2 --json train.json

The batch: the first `--batch` stratified CoNLL-2003 train sentences as extraction examples in
the prefix format (what `train.py --task extract` trains on), right-padded, loss on the answer
tokens only. Both sides get the same token ids and masks.

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


def batch_examples(model_dir: str, data: str, n: int):
    """(inputs, pad_mask, targets, loss_mask) of n extraction examples, as train.py builds them."""
    from cascadener import load_tokenizer
    from cascadener.data import load_documents
    from cascadener.geic.sampling import stratified_subset
    from cascadener.ner.prompts import get_format
    from cascadener.training.batches import collate
    from cascadener.training.examples import extraction_examples, tokenize

    docs = stratified_subset(load_documents(data), n, seed=0)[:n]
    tok = load_tokenizer(model_dir)
    examples = [tokenize(e, tok) for e in extraction_examples(docs, get_format("prefix"))]
    return collate(examples, pad_id=0)


def ours_step_fn(model_dir: str, batch):
    from cascadener.qwen2.lora import LoRAConfig, inject
    from cascadener.training.loop import token_loss_sum
    from cascadener import load_model

    model = load_model(model_dir, torch.bfloat16)       # as train.py --dtype bf16 (training.loop.build_model)
    inject(model, LoRAConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    n_targets = int(batch.loss_mask.sum())

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = token_loss_sum(model, batch)
        (loss / n_targets).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item() / n_targets
    return step


def hf_step_fn(model_dir: str, batch):
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
    # Ours are pre-shifted (inputs = ids[:-1], targets = ids[1:]); HF takes the whole sequence and
    # shifts the labels itself, so rebuild ids and put -100 wherever ours takes no loss.
    first = batch.inputs[:, :1]
    inputs = torch.cat([first, torch.where(batch.pad_mask, batch.targets, 0)], dim=1)
    attention = torch.cat([torch.ones_like(first), batch.pad_mask.long()], dim=1)
    labels = torch.cat([torch.full_like(first, -100), torch.where(batch.loss_mask, batch.targets, -100)], dim=1)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=inputs, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def child(side: str, model_dir: str, data: str, n: int, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = batch_examples(model_dir, data, n)
    step = (ours_step_fn if side == "ours" else hf_step_fn)(model_dir, batch)
    first_loss = step()                         # warm-up
    times, losses = [], []
    for _ in range(steps):
        t = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t)
    tokens = int(batch.pad_mask.sum())
    return {"side": side, "best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
            "tokens_per_s": round(tokens / min(times), 1), "tokens": tokens, "shape": list(batch.inputs.shape),
            "answer_tokens": int(batch.loss_mask.sum()), "first_loss": round(first_loss, 4),
            "losses": [round(x, 4) for x in losses], "peak_rss_mib": round(peak_rss_mib())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model_dir())
    ap.add_argument("--data", default=shared_data("conll2003", "iob2", "train.txt"),
                    help="CoNLL train file (default: $CASCADENER_DATA/conll2003/iob2/train.txt)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per child, after one warm-up")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--child", choices=("ours", "hf"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.data is None:
        ap.error("give --data or set CASCADENER_DATA (the shared datasets directory)")
    if args.child:
        emit(child(args.child, args.model, args.data, args.batch, args.steps, args.threads))
        return

    print(f"# {machine_info()}\n# batch {args.batch}, {args.steps} timed steps, {args.rounds} rounds", flush=True)
    runs = []
    script = str(Path(__file__).resolve())
    for rnd in range(args.rounds):
        for side in (("ours", "hf") if rnd % 2 == 0 else ("hf", "ours")):
            r = run_child(script, ["--child", side, "--model", args.model, "--data", args.data, "--batch",
                                   str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)],
                          args.threads)
            runs.append(r | {"round": rnd})
            print(f"[round {rnd + 1}] {side:4s}: step {r['best_s']} s best, {r['median_s']} s median, "
                  f"{r['tokens_per_s']} tok/s, peak RSS {r['peak_rss_mib']} MiB, loss {r['first_loss']} -> "
                  f"{r['losses'][-1]}, others {r['others_cpu_share']:.0%}", flush=True)
    best = {s: min((r for r in runs if r["side"] == s), key=lambda r: r["best_s"]) for s in ("ours", "hf")}
    o, h = best["ours"], best["hf"]
    star = lambda r: "*" if r["others_cpu_share"] > OTHERS_LIMIT else ""  # noqa: E731
    print(f"\n| side | step s (best / median) | tokens/s | peak RSS MiB |\n|---|---|---|---|")
    for name, r in (("ours", o), ("HF + PEFT", h)):
        print(f"| {name} | {r['best_s']}{star(r)} / {r['median_s']} | {r['tokens_per_s']} | {r['peak_rss_mib']} |")
    print(f"\nstep time ours/HF {o['best_s'] / h['best_s']:.2f} (goal <= 1: {'PASS' if o['best_s'] <= h['best_s'] else 'MISS'}); "
          f"peak RSS ours/HF {o['peak_rss_mib'] / h['peak_rss_mib']:.2f} "
          f"(goal < 1: {'PASS' if o['peak_rss_mib'] < h['peak_rss_mib'] else 'MISS'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except ChildError as e:
        sys.exit(f"bench_train: a child run failed: {e}")
