"""Batched autoregressive generation: left-padded prefill, then one token per step for every row.

Small named pieces in the gpt-fast manner: `prefill`, `decode_step`, `sample_next`, and `stream`
(a generator of tokens as they are produced) under the convenience `generate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from cascadener.qwen2.cache import StaticKVCache
from cascadener.qwen2.model import Qwen2
from cascadener.engine.prefix_cache import PrefixCache, cache_from_prefixes, row_kv


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0           # 0 = greedy
    top_k: int = 0                     # 0 = off
    top_p: float = 1.0                 # 1 = off
    repetition_penalty: float = 1.0    # 1 = off; HF semantics: divides positive logits, multiplies negative
    seed: int | None = None
    stop_ids: Sequence[int] = ()
    vocab_limit: int | None = None     # ids >= this are embedding padding and never produced

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid sampling parameters: {self}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @classmethod
    def from_generation_config(cls, gen: dict, **overrides) -> SamplingParams:
        """The checkpoint's generation_config.json (what HF's generate() would do by default)."""
        eos = gen.get("eos_token_id", [])
        params = dict(
            temperature=gen.get("temperature", 1.0) if gen.get("do_sample") else 0.0,
            top_k=gen.get("top_k", 0) or 0, top_p=gen.get("top_p", 1.0) or 1.0,
            repetition_penalty=gen.get("repetition_penalty", 1.0) or 1.0,
            stop_ids=[eos] if isinstance(eos, int) else list(eos))
        params.update(overrides)
        return cls(**params)


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"      # "stop" when a stop token ended it (the stop token is not kept)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        ids[i, width - len(p):] = torch.as_tensor(p)
        mask[i, width - len(p):] = True
    return ids, mask


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V); seen (B, V) bool of ids in the prompt or output so far."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row from (B, V) float logits (already penalised and vocab-limited)."""
    if p.temperature == 0:
        return logits.argmax(-1)
    logits = logits / p.temperature
    if p.top_k:
        kth = logits.topk(min(p.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p; the first token always stays
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= p.top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def seen_tokens(prompts: Sequence[Sequence[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """(B, V) bool marking each prompt's ids: where the repetition penalty starts."""
    seen = torch.zeros(len(prompts), vocab_size, dtype=torch.bool, device=device)
    for row, p in enumerate(prompts):
        seen[row, torch.as_tensor(p, device=device)] = True
    return seen


def next_tokens(logits: torch.Tensor, p: SamplingParams, seen: torch.Tensor | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of (B, V) float logits under p: embedding-padding ids masked, the
    repetition penalty applied over `seen` (B, V), which then records the choice, and sampled.
    `seen` is None when p has no repetition penalty. Masks `logits` in place."""
    if p.vocab_limit is not None and p.vocab_limit < logits.shape[-1]:
        logits[:, p.vocab_limit:] = float("-inf")
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, p.repetition_penalty)
    nxt = sample_next(logits, p, generator)
    if seen is not None:
        seen[torch.arange(len(nxt), device=nxt.device), nxt] = True
    return nxt


@dataclass
class PrefillCounter:
    """Prompt tokens asked for against prompt tokens actually run through the model."""
    requested: int = 0
    computed: int = 0


def shared_prefixes(prompts: Sequence[Sequence[int]], min_shared: int = 8) -> list[list[int]]:
    """The longest prefixes that two or more prompts share (at least `min_shared` tokens, each
    leaving its prompts one token of their own), none of them a prefix of another.

    Sorted, prompts sharing a prefix are adjacent, and the longest prefix a prompt shares with any
    other is its common prefix with a sorted neighbour; so the adjacent pairs find every one.
    """
    ordered = sorted(map(list, prompts))
    found = set()
    for a, b in zip(ordered, ordered[1:]):
        n = min(len(a), len(b)) - 1
        n = next((i for i in range(n) if a[i] != b[i]), n)
        if n >= min_shared:
            found.add(tuple(a[:n]))
    return [list(p) for p in found if not any(len(q) > len(p) and q[:len(p)] == p for q in found)]


def prefill(model: Qwen2, prompts: Sequence[Sequence[int]], extra: int, pad_id: int = 0,
            counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None,
            min_shared: int = 8, logits: bool = True) -> tuple[StaticKVCache, torch.Tensor]:
    """Run the prompts through the model into a fresh cache with room for `extra` more tokens.

    Nothing is computed twice: a prefix found in `prefix_cache` (the radix tree kept across calls)
    is copied in, and a prefix that several prompts of the batch share (the system turn and
    demonstrations; one sentence under several mentions; the whole prompt of k samples) is
    computed once, before the rows, and then copied in like a cached one. Returns the cache and
    the logits (B, V) at each prompt's last token, or with logits=False the final hidden states
    (B, C) there, for a caller that applies a restricted head.
    """
    keep = prefix_cache is not None
    tree = prefix_cache if keep else PrefixCache(budget_tokens=sum(map(len, prompts)))
    tree.bind(model)
    computed = prefill_shared(model, prompts, pad_id, tree, min_shared)
    cache, last, n = _prefill_rows(model, prompts, extra, pad_id, tree, remember=keep, logits=logits)
    if counter is not None:
        counter.requested += sum(len(p) for p in prompts)
        counter.computed += computed + n
    return cache, last


def prefill_shared(model: Qwen2, prompts: Sequence[Sequence[int]], pad_id: int, tree: PrefixCache,
                   min_shared: int = 8) -> int:
    """Put the prefixes the prompts share into `tree` (their own shared parts first); returns the
    tokens computed. The branches are strictly shorter than the prompts, so this terminates."""
    branches = [b for b in shared_prefixes(prompts, min_shared) if tree.match(b)[0] < len(b)]
    if not branches:
        return 0
    computed = prefill_shared(model, branches, pad_id, tree, min_shared)
    return computed + _prefill_rows(model, branches, 0, pad_id, tree, remember=True, logits=False)[2]


def _prefill_rows(model: Qwen2, prompts: Sequence[Sequence[int]], extra: int, pad_id: int,
                  tree: PrefixCache, remember: bool, logits: bool = True) -> tuple[StaticKVCache, torch.Tensor, int]:
    # Each prompt keeps at least its last token to compute: its logits start the answer.
    matches = [tree.match(p[:len(p) - 1]) for p in prompts]
    ids, pad_mask = left_pad([p[n:] for p, (n, _) in zip(prompts, matches)], pad_id)
    ids, pad_mask = ids.to(model.device), pad_mask.to(model.device)
    cache = cache_from_prefixes(model, [pieces for _, pieces in matches], ids.shape[1] + extra)
    if logits:
        last = model(ids, cache=cache, pad_mask=pad_mask, logits_at=slice(-1, None))[:, -1]
    else:
        last = model.hidden_states(ids, cache=cache, pad_mask=pad_mask)[:, -1].contiguous()
    if remember:
        for row, p in enumerate(prompts):
            tree.insert(p, row_kv(cache, row))
    return cache, last, int(pad_mask.sum())


def decode_step(model: Qwen2, tokens: torch.Tensor, alive: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
    """Feed one token per row; finished rows feed padding that nobody attends to."""
    return model(tokens[:, None], cache=cache, pad_mask=alive[:, None], logits_at=slice(-1, None))[:, -1]


@torch.inference_mode()
def stream(model: Qwen2, prompts: Sequence[Sequence[int]], params: SamplingParams, pad_id: int = 0,
           counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None
           ) -> Iterator[tuple[int, int]]:
    """Yield (row, token) as tokens are produced; stop tokens are not yielded."""
    device = model.device
    B, V = len(prompts), model.config.vocab_size
    cache, logits = prefill(model, prompts, params.max_new_tokens, pad_id, counter, prefix_cache)
    generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    stop = torch.tensor(list(params.stop_ids), dtype=torch.long, device=device)
    seen = seen_tokens(prompts, V, device) if params.repetition_penalty != 1.0 else None
    alive = torch.ones(B, dtype=torch.bool, device=device)

    for step in range(params.max_new_tokens):
        nxt = next_tokens(logits, params, seen, generator)
        alive &= ~torch.isin(nxt, stop)
        for row in alive.nonzero().flatten().tolist():
            yield row, int(nxt[row])
        if not bool(alive.any()) or step == params.max_new_tokens - 1:
            return
        logits = decode_step(model, nxt, alive, cache)


def generate(model: Qwen2, prompts: Sequence[Sequence[int]], params: SamplingParams, pad_id: int = 0,
             counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None) -> list[Generation]:
    out = [Generation() for _ in prompts]
    for row, token in stream(model, prompts, params, pad_id, counter, prefix_cache):
        out[row].tokens.append(token)
    for g in out:
        if len(g.tokens) < params.max_new_tokens:
            g.finish_reason = "stop"
    return out
