"""Constrained, copy-speculative decoding of the `##` extraction format.

Two ideas on top of the automaton (automaton.py):

1. A restricted LM head (cascadener/restricted_head.py). Only the allowed tokens can be chosen,
   so only their rows of the LM head are multiplied: usually a handful of rows instead of
   151,936, and a greedy argmax over them is the full-vocabulary argmax whenever that one is
   allowed.

2. Copy-speculation (research notes B.4, B.7). The model mostly copies, so the draft is the
   tokenizer's own split of the rest of the source. One forward runs the pending token and up to
   `n_draft` draft tokens through the cache; the hidden state at each position gives the model's
   choice there, restricted to the tokens the constraint allows after the draft so far. Draft
   tokens are kept while the model agrees; at the first disagreement the model's own token
   replaces the draft and the rest of the draft is dropped from the cache; if all agree, the last
   position yields one more token for free. Greedy output is the same as decoding one token per
   forward (up to the float rounding of a wider forward).

   Sampling uses the rejection rule of speculative sampling with a deterministic draft (the draft
   distribution is one-hot, gpt-fast's rule with q = 1): keep draft token d with probability p(d)
   under the model's (constrained, tempered, top-k/top-p) distribution p; otherwise draw from p
   with d removed and renormalised. Each emitted token is then distributed exactly as p, so
   speculation changes the speed, never the distribution.

Drafts are short by default (N_DRAFT = 4). A row's draft is cut at each mark the model inserts,
and the rest of it was computed for nothing; in a batch a forward's cost grows with every token
it carries, so long drafts lose. With the trained extractor on 96 CoNLL sentences (32 rows),
4-token drafts fed 5,461 tokens for 2,495 prompt and 2,611 output tokens: 7 % wasted; 2, 3, 4 and
6 draft tokens took 8.2-8.5 s alike.

Rows of a batch accept different numbers of draft tokens: each row forgets its own rejected slots
(`StaticKVCache.crop_rows`), and the holes this leaves are squeezed out (`compact`) when the cache
runs short of room. The batch is continuous: a finished row is released and, once a quarter of
the rows are free, the next requests are prefilled together and placed in them.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from cascadener.qwen2.cache import StaticKVCache
from cascadener.engine.generation import PrefillCounter, prefill
from cascadener.qwen2.model import Qwen2
from cascadener.engine.prefix_cache import PrefixCache, row_kv
from cascadener.engine.restricted_head import restricted_logits
from cascadener.qwen2.tokenizer import Tokenizer
from cascadener.engine.copydecode.automaton import Allowed, CopyAutomaton, CopyConstraint, CopyState


@dataclass
class CopyResult:
    text: str                   # the marked output (`markup.parse(source, text)` reads it)
    tokens: list[int]           # output ids, without the end token
    forward_passes: int         # model calls that produced this row's tokens, the prefill included
    accepted_draft_tokens: int  # tokens that came from the draft (each one a forward saved)
    faithful: bool              # the copy was completed; False only when max_new_tokens cut it short


@dataclass
class Picker:
    """Chooses a token from restricted scores, and rules on a draft token when there is one."""
    temperature: float = 0.0      # 0 = greedy
    top_k: int = 0                # 0 = off
    top_p: float = 1.0            # 1 = off
    generator: torch.Generator | None = None

    def pick(self, scores: torch.Tensor, draft: int | None) -> int:
        """A column of `scores` (1-D, -inf where the constraint forbids). `draft` is the column of
        the draft token at this position, if any: it is returned only when accepted."""
        if self.temperature == 0:
            return int(scores.argmax())
        # Draw over the row's own allowed set, not the batch's union of columns: multinomial uses
        # one random number per entry, so the row's stream would depend on its neighbours.
        own = torch.isfinite(scores).nonzero().squeeze(1)
        probs = self.probs(scores[own])
        if draft is not None:
            d = int(torch.searchsorted(own, draft))
            if float(torch.rand((), generator=self.generator)) < float(probs[d]):
                return draft
            probs[d] = 0.0        # rejected: draw from the rest of the distribution, renormalised
        return int(own[torch.multinomial(probs, 1, generator=self.generator)])

    def probs(self, scores: torch.Tensor) -> torch.Tensor:
        """The sampling distribution: softmax at the temperature, then top-k, then top-p on what
        top-k left (the order Hugging Face's generate applies them in)."""
        probs = torch.softmax(scores / self.temperature, dim=-1)
        if not self.top_k and self.top_p >= 1:
            return probs
        ranked, order = probs.sort(descending=True)
        if self.top_k:
            ranked[self.top_k:] = 0.0
            ranked /= ranked.sum()
        # keep a token while the mass ranked above it is still short of top_p (the first always stays)
        ranked = torch.where(ranked.cumsum(-1) - ranked < self.top_p, ranked, 0.0)
        return torch.zeros_like(probs).scatter(-1, order, ranked / ranked.sum())


@dataclass
class _Row:
    """One output in progress."""
    automaton: CopyAutomaton
    budget: int
    state: CopyState
    picker: Picker
    prompt: list[int]
    feed: int = -1              # the last chosen token, emitted but not yet run through the model
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    faithful: bool = False
    forward_passes: int = 0
    accepted: int = 0

    def emit(self, token: int) -> None:
        if token == self.automaton.end_id:
            self.done = self.faithful = True
            return
        self.state = self.automaton.allowed(self.state).next[token]
        self.tokens.append(token)
        self.done = len(self.tokens) >= self.budget


@dataclass
class _Plan:
    """What one row feeds in one forward, and what it checks at each fed position."""
    block: list[int]            # the pending token, then the draft (a final end token is not fed)
    draft: list[int]            # draft[i] is the guess for the token after block[i]
    allowed: list[Allowed]      # allowed[i]: what the constraint allows after block[i]


N_DRAFT = 4


def _plan(row: _Row, n_draft: int) -> _Plan:
    """The row's next block: its pending token and the longest draft the constraint permits."""
    auto, state = row.automaton, row.state
    allowed, draft = [auto.allowed(state)], []
    for token in auto.draft(state, min(n_draft, row.budget - len(row.tokens))):
        after = allowed[-1].next.get(token)
        if after is None:   # e.g. an end token while a mention is open: never acceptable, stop here
            break
        draft.append(token)
        if token == auto.end_id:
            break           # nothing follows the end, so it needs no position of its own
        state = after
        allowed.append(auto.allowed(state))
    return _Plan([row.feed] + draft[:len(allowed) - 1], draft, allowed)


def _scan(row: _Row, p: _Plan, scores: torch.Tensor, ids: list[int], argmax: list[int] | None) -> int:
    """Walk the row's checked positions in order, emitting the model's token at each, until it
    departs from the draft (or the row ends). `ids` (sorted) names the columns of `scores`;
    `argmax`, when decoding greedily, is each position's best column, computed for the batch at once.
    Returns how many fed tokens stay in the cache."""
    for i in range(len(p.allowed)):
        draft = p.draft[i] if i < len(p.draft) else None
        if argmax is not None:
            token = ids[argmax[i]]
        else:
            token = ids[row.picker.pick(scores[i], None if draft is None else bisect_left(ids, draft))]
        row.emit(token)
        row.accepted += token == draft
        if row.done or token != draft:
            break
    row.feed = token
    return i + 1


def _decide(rows: dict[int, _Row], plans: dict[int, _Plan], hidden: torch.Tensor, head: nn.Module) -> dict[int, int]:
    """Scan every planned row (by cache row), reading the hidden states (B, width, C) of the block
    just run. Returns, per cache row, how many of its fed tokens stay in the cache."""
    entries = torch.tensor([(r, i) for r, p in plans.items() for i in range(len(p.allowed))])
    logits, ids = restricted_logits(hidden[entries[:, 0], entries[:, 1]], head,
                                    [a.ids for p in plans.values() for a in p.allowed])
    greedy = all(rows[r].picker.temperature == 0 for r in plans)
    argmax = logits.argmax(-1).tolist() if greedy else None     # one call, not one per position
    kept, at = {}, 0
    for r, p in plans.items():
        n = len(p.allowed)
        kept[r] = _scan(rows[r], p, logits[at:at + n], ids, argmax[at:at + n] if greedy else None)
        at += n
    return kept


@torch.inference_mode()
def copy_mark(model: Qwen2, tokenizer: Tokenizer, prompt_ids: Sequence[Sequence[int]], sources: Sequence[str], *,
              speculate: bool = True, n_draft: int = N_DRAFT, temperature: float = 0.0, top_k: int = 0,
              top_p: float = 1.0, seed: int | None = None, max_new_tokens: int | None = None,
              pad_id: int | None = None, counter: PrefillCounter | None = None,
              prefix_cache: PrefixCache | None = None, batch_size: int = 32) -> list[CopyResult]:
    """Mark entities in each source by constrained (and, by default, copy-speculative) decoding.

    prompt_ids[i] is the chat prompt (ending in the assistant header) whose answer is sources[i]
    with `##` marks. temperature 0 is greedy; otherwise request i samples with the given
    top-k/top-p from its own generator, seeded seed + i, so its output does not depend on the batch
    it ran in. max_new_tokens=None lets every copy finish (the automaton bounds its length); a
    smaller budget may cut a copy short (then `faithful` is False). There is no repetition
    penalty: a copy repeats the prompt by design. counter and prefix_cache are as in
    `generation.prefill`.

    Continuous batching over `batch_size` cache rows: finished rows are handed to waiting requests,
    a quarter of the rows at a time so that one prefill serves several (through the prefix cache;
    prompts the joiners share, like the k runs of one text, are computed once). Padding costs
    attention only: the model runs its linear layers on the real tokens (cascadener.qwen2.cache.AttentionMeta).
    """
    if len(prompt_ids) != len(sources):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(sources)} sources")
    if n_draft < 0 or batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
        raise ValueError(f"need n_draft >= 0, batch_size >= 1 and max_new_tokens >= 1, "
                         f"got {n_draft}, {batch_size}, {max_new_tokens}")
    if any(not p for p in prompt_ids):
        raise ValueError("empty prompt")
    constraint = CopyConstraint.for_tokenizer(tokenizer)
    requests = []
    for i, (p, s) in enumerate(zip(prompt_ids, sources)):
        auto = constraint.for_source(s)
        generator = None if seed is None else torch.Generator().manual_seed(seed + i)
        requests.append(_Row(auto, max_new_tokens or auto.max_tokens, auto.start,
                             Picker(temperature, top_k, top_p, generator), list(p)))
    n_draft = n_draft if speculate else 0
    pad = constraint.end_id if pad_id is None else pad_id
    waiting = deque(requests)
    B = min(batch_size, len(requests))
    if B == 0:
        return []
    # The cache grows on demand (`StaticKVCache.make_room`): start with room for a prompt and a short copy.
    cache = StaticKVCache.for_model(model, B, max(map(len, prompt_ids)) + 64)
    rows: dict[int, _Row] = {}                           # cache row -> request in it

    while waiting or rows:
        free = [r for r in range(B) if r not in rows][:len(waiting)]
        if free and (len(free) >= min(max(1, B // 4), len(waiting)) or not rows):   # groups: one prefill each
            joining = [waiting.popleft() for _ in free]
            rows.update(_join(model, cache, joining, free, pad, counter, prefix_cache))
        if not rows:
            continue
        plans = {r: _plan(row, n_draft) for r, row in rows.items()}
        ids, fed = _block(plans, B, pad)
        cache.make_room(ids.shape[1])
        start = cache.length
        hidden = model.hidden_states(ids.to(model.device), cache, fed.to(model.device))
        kept = _decide(rows, plans, hidden, model.lm_head)
        cache.crop_rows([start + kept.get(r, 0) for r in range(B)])
        for r, row in list(rows.items()):
            row.forward_passes += 1
            if row.done:
                del rows[r]
                cache.release(r)
        if not waiting and 0 < len(rows) <= B // 2:
            # The tail: no one will join, so stop paying attention over the empty rows.
            cache = cache.select(list(rows))
            rows, B = dict(enumerate(rows.values())), len(rows)

    return [CopyResult(constraint.text(row.tokens), row.tokens, row.forward_passes, row.accepted, row.faithful)
            for row in requests]


def _join(model: Qwen2, cache: StaticKVCache, joining: list[_Row], free: list[int], pad: int,
          counter: PrefillCounter | None, prefix_cache: PrefixCache | None) -> dict[int, _Row]:
    """Prefill the joining requests' prompts together (through the prefix cache), pick each one's
    first token from its prompt's last hidden state, and seat those not finished by it in the free
    cache rows."""
    src, last = prefill(model, [row.prompt for row in joining], 0, pad, counter, prefix_cache, logits=False)
    first = {j: _Plan([], [], [row.automaton.allowed(row.state)]) for j, row in enumerate(joining)}
    _decide(dict(enumerate(joining)), first, last[:, None], model.lm_head)
    seated = {}
    for j, (r, row) in enumerate(zip(free, joining)):
        row.forward_passes += 1
        if not row.done:
            cache.place(r, [row_kv(src, j)])
            seated[r] = row
    return seated


def _block(plans: dict[int, _Plan], batch: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plans' blocks as one right-padded (batch, width) id tensor and its real-token mask;
    empty rows feed only padding, which no real token attends to."""
    width = max(len(p.block) for p in plans.values())
    ids = torch.full((batch, width), pad, dtype=torch.long)
    fed = torch.zeros(batch, width, dtype=torch.bool)
    for r, p in plans.items():
        ids[r, :len(p.block)] = torch.tensor(p.block)
        fed[r, :len(p.block)] = True
    return ids, fed
