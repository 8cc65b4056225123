"""Chat completions over a loaded model: conversations in, answers out, with a policy per request.

The pipeline talks to this interface only (text-level requests, no tensors): a conversation, its
SamplingParams, and optionally a constraint (cascadener.engine.constraint) that the caller built.
Everything under it (continuous batching, the prefix cache, copy-speculation, the device) is the
scheduler's business (cascadener.engine.scheduler).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from cascadener.engine.constraint import Constraint
from cascadener.engine.device import resolve_device
from cascadener.engine.fastlinear import prepare_for_inference
from cascadener.engine.prefix_cache import PrefixCache
from cascadener.engine.sampling import SamplingParams
from cascadener.engine.scheduler import N_DRAFT, PrefillCounter, generate
from cascadener.qwen2.checkpoint import load_generation_config, load_model
from cascadener.qwen2.lora import load_adapter
from cascadener.qwen2.model import Qwen2
from cascadener.qwen2.tokenizer import Tokenizer, load_tokenizer


@dataclass
class Completion:
    text: str
    tokens: list[int]
    finished: bool              # False when max_new_tokens cut the answer short
    logprob: float | None = None    # constrained requests: log-probability under the constrained model


@dataclass
class ChatEngine:
    model: Qwen2
    tokenizer: Tokenizer
    generation_config: dict
    batch_size: int = 32
    counter: PrefillCounter = field(default_factory=PrefillCounter)
    prefix_cache: PrefixCache | None = field(default_factory=PrefixCache)   # None: recompute every prompt
    n_draft: int = N_DRAFT      # copy-speculation: draft tokens verified per forward (0 = off)
    base: Qwen2 | None = None   # an activated adapter's base model: it reads each prompt's head

    @classmethod
    def load(cls, path: str | Path, adapter: str | Path | None = None, dtype: torch.dtype = torch.bfloat16,
             batch_size: int = 32, reuse_prefixes: bool = True, int8: bool = False,
             device: str | torch.device = "auto", beside: ChatEngine | None = None) -> ChatEngine:
        """The adapter is merged, then the linears take their inference form
        (cascadener.engine.fastlinear): oneDNN-packed on a CPU, or weight-only int8 with `int8`;
        plain linears (and SDPA attention) on CUDA.

        An activated adapter (cascadener.qwen2.lora) also needs its base model as it came: loaded
        here, or taken from `beside`, an engine with an activated adapter on the same checkpoint,
        whose prefix cache it then shares (the two read every head with one base, so the heads the
        one computed serve the other)."""
        path = Path(path)
        model = load_model(path, dtype, resolve_device(device))
        activated = adapter is not None and load_adapter(model, adapter, merge=True).activated
        prepare_for_inference(model, int8)
        engine = cls(model, load_tokenizer(path), load_generation_config(path), batch_size,
                     prefix_cache=PrefixCache() if reuse_prefixes else None)
        if activated and beside is not None and beside.base is not None:
            engine.base, engine.prefix_cache = beside.base, beside.prefix_cache
        elif activated:
            engine.base = prepare_for_inference(load_model(path, dtype, model.device), int8)
        return engine

    def sampling(self, k_sampled: bool, max_new_tokens: int, seed: int | None = None) -> SamplingParams:
        """Greedy, or the checkpoint's own sampling settings (what HF generate() does by default)."""
        base = dict(max_new_tokens=max_new_tokens, stop_ids=self.tokenizer.stop_ids,
                    vocab_limit=self.tokenizer.vocab_size, seed=seed)
        if not k_sampled:
            return SamplingParams(**base)
        return SamplingParams.from_generation_config(self.generation_config, **base)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def complete(self, conversations: Sequence[list[dict]], params: SamplingParams | Sequence[SamplingParams],
                 constraints: Sequence[Constraint | None] | None = None,
                 heads: Sequence[list[dict] | None] | None = None) -> list[Completion]:
        """One completion per conversation, in input order. params: one for all, or one each;
        constraints: None (all free), or one each (None = free); heads: the conversation each
        one begins with (PromptFormat.head; None: none), which an activated adapter leaves to its
        base, and which a plain one ignores.

        A seeded request draws from its own stream, seeded by the seed, its prompt and its run
        index (the n-th identical prompt of the call is run n), so the k samples of one text
        differ and each is the same whatever else was asked alongside.
        """
        prompts = [self.prompt_ids(c) for c in conversations]
        activations = None
        if self.base is not None:
            if heads is None or len(heads) != len(prompts) or any(h is None for h in heads):
                raise ValueError("an activated adapter needs the head of every conversation "
                                 "(a prompt format whose prompts share one: joint)")
            activations = [self.tokenizer.head_length(p, h) for p, h in zip(prompts, heads)]
        gens = generate(self.model, prompts, params, constraints, batch_size=self.batch_size, pad_id=self.pad_id,
                        counter=self.counter, prefix_cache=self.prefix_cache, n_draft=self.n_draft,
                        base=self.base, activations=activations)
        return [Completion(self.tokenizer.decode(g.tokens), g.tokens, g.finish_reason == "stop", g.logprob)
                for g in gens]

    def forget(self) -> None:
        """Drop every cached prefix: what comes next is computed exactly as after a fresh load."""
        if self.prefix_cache is not None:
            self.prefix_cache = PrefixCache(self.prefix_cache.budget)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.stop_ids[-1] if self.tokenizer.stop_ids else 0

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))
