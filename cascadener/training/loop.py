"""Supervised fine-tuning with LoRA: the loop and its pieces.

LoRA adapters on a frozen Qwen2, cross-entropy on the answer tokens only, AdamW on the adapters,
linear warmup then cosine decay, gradient accumulation and clipping, bfloat16 autocast with
float32 adapter weights, optional per-block gradient checkpointing, periodic dev F1 with the best
adapter kept, and checkpoints from which a killed run resumes exactly.

Reproducibility is by construction rather than by snapshot: the data order (batches.py), the
learning rate (lr_at) and the dropout masks (seed_step) are functions of (seed, step, rank), so
resuming only needs the adapter weights, AdamW's moments and the step counter.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cascadener.qwen2.checkpoint import DTYPES, load_model
from cascadener.engine.chat import ChatEngine
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.sampling import stratified_subset
from cascadener.geic.spans import Document
from cascadener.qwen2.lora import gated, inject, load_adapter, lora_layers, save_adapter
from cascadener.qwen2.model import Qwen2
from cascadener.ner.pipeline import Options
from cascadener.ner.prompts import get_format
from cascadener.ner.trained import RECORD, prompts_named, trained_with
from cascadener.qwen2.tokenizer import Tokenizer, load_tokenizer
from cascadener.training import distributed
from cascadener.training.batches import Batch, Packed, Plan, collate, pack_sentence
from cascadener.training.checkpointing import (BEST, TrainState, checkpoint_dir, load_training_state, save_best, save_checkpoint,
                            save_merged)
from cascadener.training.config import TrainConfig, TrainError
from cascadener.training.distributed import World
from cascadener.training.evaluation import dev_scores
from cascadener.data.labels import dataset_types, load_labelled
from cascadener.training.examples import (chat_examples, load_task_data, tokenize_all,
                                          view_examples)
from cascadener.training.mixture import describe, load_mixture, read_mixture

CONFIG_FILE, LOG_FILE, DEV_LOG_FILE = RECORD, "train_log.jsonl", "dev_log.jsonl"


class Crash(Exception):
    """--stop-after: the run stops dead after a step, saving nothing (tests of --resume)."""


# --- model ----------------------------------------------------------------------------------------

def build_model(cfg: TrainConfig, device: torch.device, adapter: Path | None = None) -> Qwen2:
    """The base with LoRA adapters: fresh, or those of a checkpoint being resumed. Adapters are
    float32 (the master weights AdamW updates, see lora.LoRALinear); with bf16 the frozen base is
    loaded straight in bfloat16, which halves its memory (never a float32 copy, even briefly) and
    is what the matmuls run in anyway."""
    model = load_model(cfg.base, DTYPES[cfg.dtype], device)
    torch.manual_seed(cfg.seed)                     # the same adapter init in every process
    adapter = adapter or (Path(cfg.init_adapter) if cfg.init_adapter else None)
    if adapter is None:
        inject(model, cfg.lora())
    else:
        loaded, wanted = load_adapter(model, adapter, merge=False), cfg.lora()
        if (loaded.r, loaded.lora_alpha, sorted(loaded.target_modules)) != (
                wanted.r, wanted.lora_alpha, sorted(wanted.target_modules)):
            raise TrainError(f"{adapter}: adapter has rank {loaded.r}, alpha {loaded.lora_alpha:g}, targets "
                             f"{','.join(loaded.target_modules)}; the run asks rank {wanted.r}, alpha "
                             f"{wanted.lora_alpha:g}, targets {','.join(wanted.target_modules)}")
        if loaded.activated != wanted.activated:
            raise TrainError(f"{adapter}: the adapter is {'' if loaded.activated else 'not '}activated; the run "
                             f"{'asks' if wanted.activated else 'does not ask'} --activated")
        for layer in lora_layers(model).values():   # the run's dropout, not the adapter's
            layer.dropout.p = cfg.lora_dropout
    if cfg.grad_checkpoint:
        checkpoint_blocks(model)
    return model.train()


def checkpoint_blocks(model: Qwen2) -> None:
    """Keep only each block's input in forward and recompute the rest in backward. The instance
    attribute shadows Block.forward, so module names (and adapter keys) stay as they are; the
    recomputation replays the same dropout masks (checkpoint saves the RNG state)."""
    for block in model.layers:
        block.forward = partial(checkpoint, block.forward, use_reentrant=False)


def precision(cfg: TrainConfig, device: torch.device) -> AbstractContextManager:
    # Autocast runs the matmuls in bfloat16 and casts the float32 adapters per op; the base is
    # stored in bfloat16 already, so it is never cast.
    return torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bf16" else nullcontext()


def token_loss_sum(model: Qwen2, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy over the answer tokens. The LM head (151936 x 896 in the 0.5B model,
    the largest matmul) runs only at the positions that predict them, not at every prompt position."""
    hidden = model.hidden_states(batch.inputs, pad_mask=batch.pad_mask,
                                 layout=(batch.positions, batch.mask))         # (B, T, C)
    logits = model.lm_head(hidden.flatten(0, 1)[batch.predict_at]).float()     # (N, V)
    return F.cross_entropy(logits, batch.targets, reduction="sum")


# --- one optimizer step ---------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warmup over cfg.warmup steps, then cosine decay to min_lr_ratio * lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, total - 1 - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed torch's generator (dropout) from (seed, step, rank), so a resumed run draws the same masks."""
    torch.manual_seed(random.Random(f"dropout-{seed}-{step}-{rank}").getrandbits(63))


@dataclass
class StepResult:
    loss: float         # mean token loss over the global batch
    grad_norm: float    # before clipping
    lr: float
    tokens: int         # real tokens in the global batch
    seconds: float      # of this process's forward, backward and update


def train_step(model: Qwen2, optimizer: torch.optim.Optimizer, plan: Plan, step: int, total: int,
               cfg: TrainConfig, world: World) -> StepResult:
    start = time.perf_counter()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    seed_step(cfg.seed, step, world.rank)
    n_targets = plan.targets_at(step)
    loss_sum = 0.0
    for packs in plan.micro_batches(step, world.rank, world.size):
        batch = collate(packs, pad_id=0).to(world.device)    # any id: padding is masked out
        # the gate stays on through backward, where checkpointed blocks run forward again
        with gated(model, batch.adapted[batch.pad_mask] if cfg.activated else None):
            with precision(cfg, world.device):
                loss = token_loss_sum(model, batch)
            (loss / n_targets).backward()   # accumulates: the step's gradient is of the global token mean
        loss_sum += loss.item()
    loss_sum = world.sum_grads(params, loss_sum)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    lr = lr_at(step, cfg, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum / n_targets, float(grad_norm), lr, plan.tokens_at(step), time.perf_counter() - start)


# --- progress -------------------------------------------------------------------------------------

class Progress:
    """A stderr line and a train_log.jsonl record every log_every steps (main process only).
    Throughput counts training time only; the ETA extrapolates wall time, evaluations included."""

    def __init__(self, out: Path, world: World, cfg: TrainConfig, start: int, total: int):
        self.path, self.on, self.every = out / LOG_FILE, world.is_main, cfg.log_every
        self.start, self.total = start, total
        self.t0 = time.perf_counter()
        self.tokens, self.seconds = 0, 0.0          # since the last record

    def step(self, step: int, result: StepResult) -> None:
        self.tokens, self.seconds = self.tokens + result.tokens, self.seconds + result.seconds
        if not self.on or (step % self.every and step != self.total):
            return
        tokens_per_s = self.tokens / max(self.seconds, 1e-9)
        eta = (time.perf_counter() - self.t0) / (step - self.start) * (self.total - step)
        record = {"step": step, "loss": round(result.loss, 6), "lr": result.lr,
                  "tokens_per_s": round(tokens_per_s, 1), "grad_norm": round(result.grad_norm, 6)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"step {step}/{self.total}  loss {result.loss:.4f}  lr {result.lr:.2e}  "
              f"{tokens_per_s:.0f} tok/s  eta {format_seconds(eta)}", file=sys.stderr, flush=True)
        self.tokens, self.seconds = 0, 0.0


def format_seconds(s: float) -> str:
    h, rest = divmod(int(s), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def truncate_log(path: Path, step: int) -> None:
    """Drop records past `step`: a resumed run logs those steps again."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("".join(l + "\n" for l in lines if l.strip() and json.loads(l)["step"] <= step),
                        encoding="utf-8")


def note(world: World, message: str) -> None:
    if world.is_main:
        print(message, file=sys.stderr, flush=True)


# --- the run --------------------------------------------------------------------------------------

def check_out_dir(cfg: TrainConfig, out: Path, resuming: bool) -> None:
    """A fresh run must not overwrite another run's checkpoint; a resumed one must be the same run."""
    saved = out / CONFIG_FILE
    if not resuming:
        if checkpoint_dir(out) is not None:
            raise TrainError(f"{out} holds a checkpoint of another run: pass --resume to continue "
                             f"it, or choose another --out")
        return
    differences = cfg.trajectory_differences(json.loads(saved.read_text()))
    if differences:
        raise TrainError(f"--resume with settings that differ from the run in {out}: "
                         f"{', '.join(differences)}")


def check_prompts(cfg: TrainConfig) -> None:
    """An adapter continued on other prompts than it learnt would start from nothing it can use."""
    trained = trained_with(cfg.init_adapter)
    if trained and trained.prompts != (cfg.prompt_format, cfg.system):
        raise TrainError(f"--init-adapter {cfg.init_adapter} was trained on {trained.describe()} ({trained.record}); "
                         f"the run asks for {prompts_named(cfg.prompt_format, cfg.system)}: leave --prompt-format and "
                         f"--system out to continue on the recorded ones")


@dataclass
class Data:
    sequences: list[Packed]         # each sentence's examples as token trees (one, or a few if long)
    tree: Hierarchy | None          # the categories dev F1 is scored on (flat: the data's own types)
    dev: list[Document]
    summary: str


def load_data(cfg: TrainConfig, tokenizer: Tokenizer) -> Data:
    fmt = get_format(cfg.prompt_format, cfg.system)
    if cfg.mixture:
        loaded, views = load_mixture(read_mixture(cfg.mixture), cfg.seed)
        chats = [view_examples(view, cfg.task, fmt) for _, view in views]
        counts = Counter(name for (name, _), group in zip(views, chats) for _ in group)
        what = f"{cfg.mixture} ({len(views)} sentence views)\n{describe(loaded, counts)}\n"
        tree = Hierarchy.load(cfg.categories) if cfg.categories else None
    else:
        docs, tree = load_task_data(cfg.data, cfg.categories, cfg.shots, cfg.seed)
        chats = chat_examples(cfg.task, docs, tree, fmt, cfg.seed)
        what = f"{len(docs)} sentences{f'; labels {tree.roots}' if cfg.task != 'extract' else ''}; "
    if cfg.activated and not fmt.lists_types:
        raise TrainError(f"--activated needs prompts that share a head (--prompt-format joint), not "
                         f"{cfg.prompt_format!r}")
    groups, too_long = tokenize_all(chats, tokenizer, cfg.max_len, cfg.activated)
    if not groups:
        raise TrainError(f"no training examples in {cfg.data or cfg.mixture} (after --shots and --max-len)")
    packs = [p for g in groups for p in pack_sentence(g)]
    dev = load_labelled(cfg.dev, tree) if cfg.dev else []
    if dev and tree is None:            # a mixture without --categories: the dev set's own types
        tree = Hierarchy.flat(dataset_types(dev))
    dev = stratified_subset(dev, cfg.dev_sample, cfg.seed)
    tokens, packed = sum(len(e) for g in groups for e in g), sum(len(p) for p in packs)
    summary = (f"{cfg.task}: {sum(map(len, groups))} examples from {what}"
               f"{f'{too_long} longer than --max-len left out, ' if too_long else ''}"
               f"{sum(p.n_targets for p in packs)} answer tokens; packed by sentence into {len(packs)} "
               f"sequences of {packed} tokens ({tokens / packed:.2f}x fewer); {len(dev)} dev sentences")
    return Data(packs, tree, dev, summary)


def train(cfg: TrainConfig) -> TrainState:
    world = distributed.init(cfg.device)
    try:
        return run(cfg, world)
    finally:
        distributed.shutdown()


def run(cfg: TrainConfig, world: World) -> TrainState:
    out = Path(cfg.out)
    check_prompts(cfg)
    tokenizer = load_tokenizer(cfg.base)
    data = load_data(cfg, tokenizer)
    ckpt = checkpoint_dir(out) if cfg.resume else None
    check_out_dir(cfg, out, ckpt is not None)
    model = build_model(cfg, world.device, ckpt)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = load_training_state(ckpt, optimizer) if ckpt else TrainState()
    plan = Plan(data.sequences, cfg.batch_size, cfg.batch_size * cfg.grad_accum * world.size, cfg.seed)
    total = cfg.steps or math.ceil(cfg.epochs * plan.steps_per_epoch)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not ckpt:                    # a resumed run is the saved one (checked), and other processes read it
            (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        truncate_log(out / LOG_FILE, state.step)
        truncate_log(out / DEV_LOG_FILE, state.step)
    note(world, f"{data.summary}; {plan.steps_per_epoch} steps per epoch of {plan.global_batch}; "
                f"{sum(p.numel() for p in params):,} trainable parameters; "
                f"{'resuming at' if ckpt else 'starting at'} step {state.step} of {total}")

    engine = ChatEngine(model, tokenizer, {}, cfg.batch_size)
    options = Options(k=1, prompt_format=cfg.prompt_format, system=cfg.system)
    progress = Progress(out, world, cfg, state.step, total)
    while state.step < total:
        result = train_step(model, optimizer, plan, state.step, total, cfg, world)
        state.step += 1
        progress.step(state.step, result)
        if cfg.stop_after == state.step:
            raise Crash(f"--stop-after {state.step}")
        if data.dev and (state.step == total or (cfg.eval_every and state.step % cfg.eval_every == 0)):
            evaluate(cfg, world, engine, options, data, state, out)
        if world.is_main and (state.step == total or (cfg.save_every and state.step % cfg.save_every == 0)):
            save_checkpoint(out, model, cfg.lora(), optimizer, state, cfg.base)

    if world.is_main:
        save_adapter(model, cfg.lora(), out, base=cfg.base)
        note(world, f"adapter written to {out}" + (f"; best dev F1 {state.best_f1:.4f} at step "
                                                   f"{state.best_step} in {out / BEST}" if data.dev else ""))
        if cfg.merge:
            note(world, f"merged model written to {save_merged(cfg.base, out, out)}")
    world.barrier()
    return state


def evaluate(cfg: TrainConfig, world: World, engine: ChatEngine, options: Options, data: Data,
             state: TrainState, out: Path) -> None:
    start = time.perf_counter()
    prf = dev_scores(engine, options, cfg.task, data.dev, data.tree, world)
    better = state.best_f1 is None or prf.f1 > state.best_f1
    if better:
        state.best_f1, state.best_step = prf.f1, state.step
    if not world.is_main:
        return
    scores = {"step": state.step, "precision": prf.precision, "recall": prf.recall, "f1": prf.f1,
              "sentences": len(data.dev), "seconds": round(time.perf_counter() - start, 1)}
    with open(out / DEV_LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(scores) + "\n")
    note(world, f"dev step {state.step}: P {prf.precision:.4f} R {prf.recall:.4f} F1 {prf.f1:.4f}"
                f"{' (best)' if better else ''} in {scores['seconds']} s")
    if better:
        save_best(out, engine.model, cfg.lora(), cfg.base, scores)

