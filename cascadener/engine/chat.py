"""Chat completions over a loaded model: conversations in, answer strings out.

The pipeline talks to this interface only (text-level requests, no tensors), so the decoding
machinery under it can change — batching, prefix caching, constraints — without the pipeline
noticing: free generation runs under the continuous-batching scheduler, extraction under the copy
constraint (copydecode), classification by constrained greedy decoding over the offered labels (scoring).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from cascadener.qwen2.checkpoint import load_model
from cascadener.engine.copydecode import copy_mark
from cascadener.engine.fastlinear import prepare_for_inference
from cascadener.engine.generation import PrefillCounter, SamplingParams
from cascadener.qwen2.lora import load_adapter
from cascadener.qwen2.model import Qwen2
from cascadener.engine.prefix_cache import PrefixCache
from cascadener.engine.scheduler import generate_continuous
from cascadener.engine.scoring import choose_greedy
from cascadener.qwen2.tokenizer import Tokenizer, load_tokenizer


@dataclass
class Completion:
    text: str
    tokens: int
    finished: bool          # False when max_new_tokens cut the answer short


@dataclass
class Choice:
    answer: str
    probability: float      # under the model restricted to the offered answers (scoring.py)


@dataclass
class ChatEngine:
    model: Qwen2
    tokenizer: Tokenizer
    generation_config: dict
    batch_size: int = 32
    counter: PrefillCounter = field(default_factory=PrefillCounter)
    prefix_cache: PrefixCache | None = field(default_factory=PrefixCache)   # None: recompute every prompt

    @classmethod
    def load(cls, path: str | Path, adapter: str | Path | None = None, dtype: torch.dtype = torch.bfloat16,
             batch_size: int = 32, reuse_prefixes: bool = True, int8: bool = False) -> ChatEngine:
        """The adapter is merged, then the linears take their inference form (cascadener.engine.fastlinear):
        oneDNN-packed on CPU, or weight-only int8 with `int8`."""
        path = Path(path)
        model = load_model(path, dtype)
        if adapter is not None:
            load_adapter(model, adapter, merge=True)
        prepare_for_inference(model, int8)
        gen_file = path / "generation_config.json"
        gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
        return cls(model, load_tokenizer(path), gen, batch_size,
                   prefix_cache=PrefixCache() if reuse_prefixes else None)

    def sampling(self, k_sampled: bool, max_new_tokens: int, seed: int | None = None) -> SamplingParams:
        """Greedy, or the checkpoint's own sampling settings (what HF generate() does by default)."""
        base = dict(max_new_tokens=max_new_tokens, stop_ids=self.tokenizer.stop_ids,
                    vocab_limit=self.tokenizer.vocab_size, seed=seed)
        if not k_sampled:
            return SamplingParams(**base)
        return SamplingParams.from_generation_config(self.generation_config, **base)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def complete(self, conversations: Sequence[list[dict]], params: SamplingParams | Sequence[SamplingParams]
                 ) -> list[Completion]:
        """One completion per conversation, in input order. params: one for all, or one each.

        Continuous batching (cascadener/scheduler.py): a finished answer's row goes to the next
        conversation at once. A seeded request gets its own stream, seed + its index, so the k
        samples of one text differ and no answer depends on the batch it ran in.
        """
        per = list(params) if isinstance(params, (list, tuple)) else [params] * len(conversations)
        per = [p if p.seed is None else replace(p, seed=p.seed + i) for i, p in enumerate(per)]
        gens = generate_continuous(self.model, [self.prompt_ids(c) for c in conversations], per,
                                   self.batch_size, self.pad_id, self.counter, self.prefix_cache)
        return [Completion(self.tokenizer.decode(g.tokens), len(g.tokens), g.finish_reason == "stop") for g in gens]

    def copy_mark(self, conversations: Sequence[list[dict]], sources: Sequence[str],
                  params: SamplingParams) -> list[Completion]:
        """Extraction under the copy constraint: each answer is its source plus `##` marks, decoded
        with copy-speculation (see cascadener/copydecode). Identical requests stay adjacent, so the
        k samples of one text share a batch and its prefill."""
        order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))
        results = copy_mark(self.model, self.tokenizer, [self.prompt_ids(conversations[i]) for i in order],
                            [sources[i] for i in order], temperature=params.temperature, top_k=params.top_k,
                            top_p=params.top_p, seed=params.seed, pad_id=self.pad_id, counter=self.counter,
                            prefix_cache=self.prefix_cache, batch_size=self.batch_size)
        out: list[Completion | None] = [None] * len(sources)
        for i, r in zip(order, results):
            out[i] = Completion(r.text, len(r.tokens), r.faithful)
        return out  # type: ignore[return-value]

    def choose(self, conversations: Sequence[list[dict]], answers: Sequence[Sequence[str]]) -> list[Choice]:
        """For each conversation, the offered answer that constrained greedy decoding picks
        (cascadener/scoring.py), with its probability: never off the list."""
        end = self.tokenizer.stop_ids[:1]           # the end-of-turn token closes every answer
        prompts = [self.prompt_ids(c) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))    # less padding per batch
        out: list[Choice | None] = [None] * len(prompts)
        for n in range(0, len(order), self.batch_size):
            batch = order[n:n + self.batch_size]
            cands = [[self.tokenizer.encode(a) + end for a in answers[i]] for i in batch]
            picks = choose_greedy(self.model, [prompts[i] for i in batch], cands, self.pad_id, self.counter,
                                  self.prefix_cache)
            for i, (best, p) in zip(batch, picks):
                out[i] = Choice(answers[i][best], p)
        return out  # type: ignore[return-value]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.stop_ids[-1] if self.tokenizer.stop_ids else 0

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))
