"""What a run writes: resumable checkpoints, the adapter, the best adapter, merged weights.

Every directory is written under a temporary name and renamed into place, so a run killed at
any moment leaves the previous version whole. A checkpoint is small: the float32 LoRA weights
(PEFT layout, so a checkpoint is itself an adapter infer.py can load), AdamW's moments and the
step counter. Data order, learning rate and dropout masks are functions of (seed, step) (see
batches.py and loop.py), so the step counter is all the sampler, scheduler and RNG state there is.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cascadener.qwen2.checkpoint import load_model, save_model
from cascadener.qwen2.lora import LoRAConfig, load_adapter, save_adapter
from cascadener.ner.trained import RECORD

CHECKPOINT, BEST, MERGED = "checkpoint", "best", "merged"
# What merged/ copies from the base besides the weights: tokenizer and generation settings.
SIDE_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
              "special_tokens_map.json", "added_tokens.json")

STORED_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainState:
    step: int = 0                       # optimizer steps completed
    best_f1: float | None = None        # best dev F1 so far, and the step it was reached at
    best_step: int | None = None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`. rename() cannot replace a non-empty directory,
    so the old one is renamed aside first; `restore_dir` repairs a death between the two renames."""
    old = final.with_name(final.name + ".old")
    restore_dir(final)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def restore_dir(final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        try:
            os.replace(old, final)
        except FileNotFoundError:       # another process of the run got there first
            pass


def copy_record(out: Path, tmp: Path) -> None:
    """The run's record of the prompts it trained on (ner/trained.py) goes beside every set of
    weights it writes, so that inference can check any of them."""
    if (out / RECORD).exists():
        shutil.copy2(out / RECORD, tmp / RECORD)


def fresh_tmp(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(out: Path, model: torch.nn.Module, lora: LoRAConfig, optimizer: torch.optim.Optimizer,
                    state: TrainState, base: str) -> None:
    final = out / CHECKPOINT
    tmp = fresh_tmp(final)
    save_adapter(model, lora, tmp, base)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    copy_record(out, tmp)
    (tmp / "state.json").write_text(json.dumps(asdict(state)) + "\n")
    replace_dir(tmp, final)


def checkpoint_dir(out: Path) -> Path | None:
    """The run's checkpoint directory, if it has one."""
    restore_dir(out / CHECKPOINT)
    return out / CHECKPOINT if (out / CHECKPOINT / "state.json").exists() else None


def load_training_state(ckpt: Path, optimizer: torch.optim.Optimizer) -> TrainState:
    """AdamW's state and the counters; the adapter weights were loaded with the model."""
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    return TrainState(**json.loads((ckpt / "state.json").read_text()))


def save_best(out: Path, model: torch.nn.Module, lora: LoRAConfig, base: str, scores: dict) -> None:
    final = out / BEST
    tmp = fresh_tmp(final)
    save_adapter(model, lora, tmp, base)
    (tmp / "dev_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    copy_record(out, tmp)
    replace_dir(tmp, final)


def stored_dtype(base: Path) -> torch.dtype:
    """The dtype the base checkpoint declares (config.json torch_dtype, or dtype in newer files)."""
    cfg = json.loads((base / "config.json").read_text())
    return STORED_DTYPES.get(cfg.get("torch_dtype") or cfg.get("dtype"), torch.float32)


def save_merged(base: str | Path, adapter: Path, out: Path) -> Path:
    """Base + adapter folded into plain weights, official layout, in the base checkpoint's dtype,
    with its tokenizer and generation config: a model directory any Qwen2 loader reads."""
    base = Path(base)
    model = load_model(base, torch.float32)         # merge in float32, round once at the end
    load_adapter(model, adapter, merge=True)
    final = out / MERGED
    tmp = fresh_tmp(final)
    save_model(model.to(stored_dtype(base)), tmp)
    for name in SIDE_FILES:
        if (base / name).exists():
            shutil.copy2(base / name, tmp / name)
    copy_record(out, tmp)
    replace_dir(tmp, final)
    return final
