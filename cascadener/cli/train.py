"""Fine-tune the CascadeNER extractor or classifier with LoRA on a frozen Qwen2 checkpoint.

    python train.py --task extract --data eng.train --shots 400 --base DIR --out out/ext --epochs 2
    python train.py --task classify --data eng.train --dev eng.testa --out out/cls --steps 300 --merge
    python train.py --task joint --prompt-format joint --data eng.train --shots 400 --out out/joint
    python train.py --task joint --prompt-format joint --mixture recipes/universal.toml --out out/universal
    python train.py --task joint --prompt-format joint --data ai/train.txt --init-adapter out/universal --out out/ai
    python train.py --task extract --prompt-format joint --activated --data eng.train --out out/ext-a
    python train.py ... --resume         # continue a killed run exactly where its last checkpoint was
    torchrun --standalone --nproc_per_node 2 train.py ...   # data parallel (gloo on CPU, nccl on GPU)

The data is a CoNLL column file, GEIC .json or .jsonl; type codes become readable words (PER ->
person) unless --categories names them. Or --mixture FILE: several datasets, each sentence under
type lists drawn across them (cascadener/training/mixture.py describes the file). --init-adapter
continues from a trained adapter (few-shot adaptation: a domain's 100-200 sentences); its LoRA
rank, alpha and targets are the run's, and so are its prompt format and system prompt. OUT
receives the adapter in the PEFT layout (adapter_model.safetensors, adapter_config.json:
`infer.py --extractor-adapter OUT`, or `--adapter OUT` for a joint one), best/ (the adapter with
the best dev F1, with --dev), checkpoint/ (for --resume), merged/ (with --merge),
train_config.json (also in best/, checkpoint/ and merged/: infer.py and eval.py read the prompt
format from it), train_log.jsonl (one record per logged step) and dev_log.jsonl.
Global batch = --batch-size x --grad-accum x processes, in sentences.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch

from cascadener.cli.common import device_arg
from cascadener.ner.trained import trained_with
from cascadener.qwen2.locate import WeightsNotFound, find_checkpoint
from cascadener.qwen2.lora import ADAPTER_CONFIG, ALL_TARGETS, LoRAConfig
from cascadener.training.config import DEFAULT_BATCH_SIZE, DTYPES, TASKS, TrainConfig
from cascadener.training.loop import Crash, train

STOP_EXIT = 75      # exit status of a --stop-after "crash"

DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, required=True)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="training data: column file, .json (GEIC) or .jsonl")
    data.add_argument("--mixture", help="several datasets: a TOML or JSON file (see recipes/universal.toml)")
    p.add_argument("--base", help="base checkpoint (HF layout); default: $CASCADENER_ASSETS or weights/*")
    p.add_argument("--out", required=True, help="output directory")
    g = p.add_argument_group("data and prompts")
    g.add_argument("--dev", help="labelled dev file: span F1 at --eval-every steps and at the end, best kept")
    g.add_argument("--dev-sample", type=int, default=DEFAULTS["dev_sample"], help="stratified dev subset size")
    g.add_argument("--prompt-format", choices=("prefix", "joint", "paper"),
                   help="joint: one adapter for both stages, sharing the sentence's cache (with --task joint). "
                        f"Default: the --init-adapter's (its train_config.json), else {DEFAULTS['prompt_format']}")
    g.add_argument("--system", help="system prompt (default: the --init-adapter's, else the format's own)")
    g.add_argument("--categories", help="category tree (default: the data's types, flat); with --mixture, the "
                                        "dev set's")
    g.add_argument("--shots", type=int, help="train on a stratified few-shot sample of N sentences")
    g.add_argument("--max-len", type=int, default=DEFAULTS["max_len"], help="leave out longer examples (tokens)")
    g = p.add_argument_group("optimization")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=float, default=DEFAULTS["epochs"], help="passes over the data")
    g.add_argument("--batch-size", type=int, help="sentences per micro-batch (a sentence's examples, its extraction "
                   "and its questions, are packed into one sequence); default: "
                   + ", ".join(f"{n} for {t}" for t, n in DEFAULT_BATCH_SIZE.items()))
    g.add_argument("--grad-accum", type=int, default=DEFAULTS["grad_accum"], help="micro-batches per step")
    g.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    g.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="linear warmup steps")
    g.add_argument("--grad-clip", type=float, default=DEFAULTS["grad_clip"], help="max grad norm (0 = off)")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    g.add_argument("--dtype", choices=DTYPES, default=DEFAULTS["dtype"],
                   help="bf16: bfloat16 base and autocast, float32 adapters; fp32: all float32")
    g.add_argument("--grad-checkpoint", action="store_true", help="recompute blocks in backward (less memory)")
    g = p.add_argument_group("LoRA")
    g.add_argument("--init-adapter", help="start from this adapter (e.g. the universal one) instead of fresh "
                                          "weights; rank, alpha and targets default to its own")
    g.add_argument("--lora-rank", type=int, help=f"default {DEFAULTS['lora_rank']}")
    g.add_argument("--lora-alpha", type=float, help=f"default {DEFAULTS['lora_alpha']:g}")
    g.add_argument("--lora-dropout", type=float, default=DEFAULTS["lora_dropout"])
    g.add_argument("--targets", help=f"comma-separated module names (default {','.join(ALL_TARGETS)})")
    g.add_argument("--activated", action="store_true",
                   help="the adapter acts after each prompt's head (type list and sentence) only; the base "
                        "model reads the head, so an activated extractor and classifier on one base share "
                        "it at inference (--prompt-format joint)")
    g = p.add_argument_group("run")
    g.add_argument("--save-every", type=int, default=DEFAULTS["save_every"], help="checkpoint every N steps")
    g.add_argument("--eval-every", type=int, default=DEFAULTS["eval_every"], help="dev F1 every N steps")
    g.add_argument("--log-every", type=int, default=DEFAULTS["log_every"])
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint (fresh start if none)")
    g.add_argument("--merge", action="store_true", help="also write base + adapter merged to OUT/merged")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 per process under torchrun)")
    g.add_argument("--device", type=device_arg, default="auto",
                   help="auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N; torchrun: one GPU each")
    g.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)   # tests: crash after step N
    return p


def lora_defaults(init_adapter: str | None) -> tuple[int, float, str]:
    """Rank, alpha and targets: the adapter's own when the run starts from one."""
    if init_adapter is None:
        return DEFAULTS["lora_rank"], DEFAULTS["lora_alpha"], ",".join(ALL_TARGETS)
    path = Path(init_adapter) / ADAPTER_CONFIG
    try:
        cfg = LoRAConfig.from_peft(json.loads(path.read_text()), str(path))
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{path}: not a readable PEFT adapter config ({e})") from None
    return cfg.r, cfg.lora_alpha, ",".join(cfg.target_modules)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    rank, alpha, targets = lora_defaults(args.init_adapter)
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    trained = trained_with(args.init_adapter)       # the prompts it learnt, unless others are asked for
    values["prompt_format"] = args.prompt_format or (trained.prompt_format if trained else DEFAULTS["prompt_format"])
    if args.system is None and trained is not None:
        values["system"] = trained.system
    values["lora_rank"] = args.lora_rank or rank
    values["lora_alpha"] = args.lora_alpha or alpha
    values["targets"] = [t.strip() for t in (args.targets or targets).split(",") if t.strip()]
    values["base"] = str(find_checkpoint(args.base))
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, WeightsNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train(cfg)
    except Crash:
        os._exit(STOP_EXIT)             # a simulated crash: no cleanup either
    except (ValueError, OSError) as e:  # bad data, mixture, tree or adapter; a run that cannot start
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
