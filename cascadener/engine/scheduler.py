"""Continuous batching for free generation.

A fixed number of rows, each serving one request at a time. When a request stops, its row is
handed to the next waiting request at once, so the batch stays full while answers of different
lengths come and go (a static batch would run until its longest answer, its finished rows idle).

All rows share one StaticKVCache and its write slot. A joining request's prompt is prefilled
(through the prefix cache, so a repeated prompt costs one token) and its keys and values are
placed in its row right-aligned to the shared slot, like a left-padded prompt; the per-row valid
mask makes attention ragged, each row seeing only its own slots. When the slots run out, `compact`
squeezes out those of finished requests before anything is reallocated.

Every request samples from its own generator, seeded from its own SamplingParams, so what it
produces does not depend on which other requests share the batch or on the batch size.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import torch

from cascadener.qwen2.cache import StaticKVCache
from cascadener.engine.generation import Generation, PrefillCounter, SamplingParams, decode_step, next_tokens, prefill, seen_tokens
from cascadener.qwen2.model import Qwen2
from cascadener.engine.prefix_cache import PrefixCache, row_kv


@dataclass
class _Request:
    index: int
    prompt: Sequence[int]
    params: SamplingParams
    generator: torch.Generator | None
    seen: torch.Tensor | None = None           # (1, V) ids in prompt and output, for the repetition penalty
    out: Generation = field(default_factory=Generation)

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from this request's (V,) logits, under its own sampling parameters."""
        return int(next_tokens(logits[None], self.params, self.seen, self.generator)[0])

    def accept(self, token: int) -> bool:
        """Record a sampled token; False once the request is finished (the stop token is not kept)."""
        if token in self.params.stop_ids:
            self.out.finish_reason = "stop"
            return False
        self.out.tokens.append(token)
        return len(self.out.tokens) < self.params.max_new_tokens


def _request(i: int, prompt: Sequence[int], p: SamplingParams, model: Qwen2) -> _Request:
    if not prompt:
        raise ValueError(f"prompt {i} is empty")
    generator = None if p.seed is None else torch.Generator(device=model.device).manual_seed(p.seed)
    seen = seen_tokens([prompt], model.config.vocab_size, model.device) if p.repetition_penalty != 1.0 else None
    return _Request(i, prompt, p, generator, seen)


@torch.inference_mode()
def generate_continuous(model: Qwen2, prompts: Sequence[Sequence[int]],
                        params: SamplingParams | Sequence[SamplingParams], batch_size: int = 8, pad_id: int = 0,
                        counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None
                        ) -> list[Generation]:
    """One Generation per prompt, in input order; `params` is one for all or one per prompt.

    Requests are admitted in input order, so adjacent equal prompts (k samples of one text) join
    together and share their prefill.
    """
    per = list(params) if not isinstance(params, SamplingParams) else [params] * len(prompts)
    if len(per) != len(prompts):
        raise ValueError(f"{len(per)} sampling parameters for {len(prompts)} prompts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    waiting = deque(_request(i, p, q, model) for i, (p, q) in enumerate(zip(prompts, per)))
    results = [r.out for r in waiting]
    B = min(batch_size, len(waiting))
    if B == 0:
        return results
    cache = StaticKVCache.for_model(model, B, max(len(p) for p in prompts) + 64)
    rows: list[_Request | None] = [None] * B
    pending: dict[int, torch.Tensor] = {}         # row -> logits its next token is picked from

    while waiting or any(rows):
        free = [r for r in range(B) if rows[r] is None][:len(waiting)]
        if free:
            joining = [waiting.popleft() for _ in free]
            src, logits = prefill(model, [q.prompt for q in joining], 0, pad_id, counter, prefix_cache)
            for j, (row, q) in enumerate(zip(free, joining)):
                cache.place(row, [row_kv(src, j)])
                rows[row], pending[row] = q, logits[j]
        feed = torch.full((B,), pad_id, dtype=torch.long)
        alive = torch.zeros(B, dtype=torch.bool)
        for row, q in enumerate(rows):
            if q is None:
                continue
            token = q.pick(pending.pop(row))
            if q.accept(token):
                feed[row], alive[row] = token, True
            else:
                rows[row] = None
                cache.release(row)
        if not bool(alive.any()):
            continue
        cache.make_room(1)
        logits = decode_step(model, feed.to(model.device), alive.to(model.device), cache)
        for row in alive.nonzero().flatten().tolist():
            pending[row] = logits[row]
    return results
