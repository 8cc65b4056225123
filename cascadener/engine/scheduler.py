"""The engine's one decoding loop: continuous batching over a KV store, for every kind of request.

A request is a prompt, its SamplingParams, and a policy: free generation (the full LM head,
temperature/top-k/top-p, repetition penalty, stop tokens) or a constraint (cascadener.engine.constraint:
the allowed tokens come from an automaton, only their rows of the LM head are computed, and a
constraint that can guess what comes next has its guess verified in the same forward). The loop,
top to bottom in `generate`:

1. admission   free rows of the store go to waiting requests, a quarter of the rows at a time so
               that one prefill serves several. The prefill goes through the radix prefix cache
               (cascadener.engine.prefix_cache): a prompt's cached prefix is copied in, prefixes the
               joiners share (the system turn, one sentence under several mentions, the k runs of
               one text) are computed once, and only the rest runs through the model. Each
               joiner's first token is chosen from its prompt's last hidden state; a request that
               this already finishes (a label decided by its first token) never takes a row. Under
               an activated adapter (cascadener.qwen2.lora) a prompt's head runs through the base
               model and the rest through the adapter, and the tree keys the two apart.
2. step        every row feeds its pending token and, if its constraint drafts, up to `n_draft`
               guessed tokens, as one right-padded block through the model. Each fed position's
               hidden state gives the model's choice there (`sampling.sample`, or one argmax for
               the whole forward when greedy); a row keeps draft tokens while the model agrees, and
               at the first disagreement the model's token replaces the draft and the rest of the
               block is cropped from the row (`KVStore.crop_rows`). On a GPU a step of one token
               per row is a CUDA graph, recorded once per store buffer and replayed
               (cascadener.engine.graphs), so its hundreds of kernels cost one launch.
3. retirement  a finished request's row is released at once; when nobody is waiting and half the
               rows are empty, the store shrinks to the live rows (no attention over empty rows).

Padding never reaches a linear layer (cascadener.qwen2.cache.AttentionMeta), so rows of different
lengths cost attention only. Each request decodes from its own state and its own generator
(`sampling.generator_for`: seeded by the request's identity), so a row's tokens do not depend on
its neighbours; the numbers do depend on the batch up to float rounding, as in any batched matmul
(tests/test_engine.py checks batched == alone and cache == no-cache exactly in float32).
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from cascadener.engine.constraint import END, Allowed, Constraint
from cascadener.engine.graphs import StepGraph
from cascadener.engine.kv import KVStore
from cascadener.engine.prefix_cache import PrefixCache, store_from_prefixes
from cascadener.engine.restricted_head import restricted_logits
from cascadener.engine.sampling import SamplingParams, apply_repetition_penalty, generator_for, sample
from cascadener.qwen2.model import Qwen2

# Draft tokens per forward. A row's draft is cut at each token the model does not copy, and the
# rest of it was computed for nothing; a batched forward's cost grows with every token it carries,
# so long drafts lose (BENCHMARKS.md has the measurements).
N_DRAFT = 4


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"      # "stop": a stop token, or the constraint, ended it (the end token is not kept)
    logprob: float | None = None       # constrained requests: log-probability of the tokens under the
                                       # model restricted to the allowed tokens (temperature 1)
    forward_passes: int = 0            # model calls that produced this request's tokens, the prefill included
    accepted_draft_tokens: int = 0     # tokens that came from a draft (each one a forward saved)


@dataclass
class PrefillCounter:
    """Prompt tokens asked for against prompt tokens actually run through the model."""
    requested: int = 0
    computed: int = 0


# --- prefill through the prefix cache ------------------------------------------------------------------

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


@dataclass(frozen=True)
class _Readers:
    """Which weights compute which prompt tokens. Plain: `model` computes all. An activated adapter
    (cascadener.qwen2.lora): `model` is the adapter merged into a copy of `base`, and a prompt's
    tokens before its activation index are computed by `base`. Keys into the prefix tree tell the
    two apart (PrefixCache.bind): a token's own id under the base, id + vocab * tag under `model`."""
    model: Qwen2
    base: Qwen2 | None
    tag: int

    def keys(self, prompt: Sequence[int], activation: int) -> list[int]:
        shift = self.model.config.vocab_size * self.tag
        return [t if i < activation else t + shift for i, t in enumerate(prompt)]

    def parts(self, keys: Sequence[int]) -> list[tuple[Qwen2, list[int]]]:
        """The keys as (weights, token ids) runs, in order: the base's tokens, then the adapter's."""
        if self.base is None:
            return [(self.model, list(keys))]
        vocab = self.model.config.vocab_size
        n = next((i for i, k in enumerate(keys) if k >= vocab), len(keys))
        return [(self.base, list(keys[:n])), (self.model, [k - vocab * self.tag for k in keys[n:]])]


def prefill(model: Qwen2, prompts: Sequence[Sequence[int]], pad_id: int = 0, counter: PrefillCounter | None = None,
            prefix_cache: PrefixCache | None = None, min_shared: int = 8, base: Qwen2 | None = None,
            activations: Sequence[int] | None = None) -> tuple[KVStore, torch.Tensor]:
    """Run the prompts through the model into a fresh store; returns it and the final hidden
    states (B, C) at each prompt's last token, for the full or a restricted LM head to read.

    Nothing is computed twice: a prefix found in `prefix_cache` (the radix tree kept across calls)
    is copied in, and a prefix that several prompts share is computed once, before the rows, and
    then copied in like a cached one. With `base`, `model` is an activated adapter on it, and
    prompt i's tokens before activations[i] are the base's to compute (_Readers).
    """
    keep = prefix_cache is not None
    tree = prefix_cache if keep else PrefixCache(budget_tokens=sum(map(len, prompts)))
    readers = _Readers(model, base, tree.bind(model, base))
    if base is None:
        keyed = [list(p) for p in prompts]
    else:
        if activations is None or len(activations) != len(prompts):
            raise ValueError("an activated adapter needs one activation index per prompt")
        if any(not 0 <= a < len(p) for p, a in zip(prompts, activations)):
            raise ValueError("an activation index must leave the adapter at least the prompt's last token")
        keyed = [readers.keys(p, a) for p, a in zip(prompts, activations)]
    computed = _prefill_shared(readers, keyed, pad_id, tree, min_shared)
    store, last, n = _prefill_rows(readers, keyed, pad_id, tree, remember=keep)
    if counter is not None:
        counter.requested += sum(len(p) for p in prompts)
        counter.computed += computed + n
    return store, last


def _prefill_shared(readers: _Readers, keyed: Sequence[Sequence[int]], pad_id: int, tree: PrefixCache,
                    min_shared: int) -> int:
    """Put the prefixes the prompts share into `tree` (their own shared parts first); returns the
    tokens computed. The branches are strictly shorter than the prompts, so this terminates."""
    branches = [b for b in shared_prefixes(keyed, min_shared) if tree.match(b)[0] < len(b)]
    if not branches:
        return 0
    computed = _prefill_shared(readers, branches, pad_id, tree, min_shared)
    return computed + _prefill_rows(readers, branches, pad_id, tree, remember=True)[2]


def _prefill_rows(readers: _Readers, keyed: Sequence[Sequence[int]], pad_id: int, tree: PrefixCache,
                  remember: bool) -> tuple[KVStore, torch.Tensor, int]:
    # Each prompt keeps at least its last token to compute: its hidden state starts the answer.
    matches = [tree.match(k[:len(k) - 1]) for k in keyed]
    rest = [readers.parts(k[n:]) for k, (n, _) in zip(keyed, matches)]
    runs = list(zip(*rest))             # per reader, every row's run of it (base first, then the adapter)
    widths = [max(len(ids) for _, ids in run) for run in runs]
    device = readers.model.device
    store = store_from_prefixes(readers.model, [pieces for _, pieces in matches], sum(widths))
    last = None
    for run, width in zip(runs, widths):
        if width == 0:
            continue
        weights = run[0][0]
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for _, r in run], device=device)
        real = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for _, r in run], device=device)
        hidden = weights.hidden_states(ids, cache=store, pad_mask=real)[:, -1]
        # a row whose run is empty keeps the hidden state of its run before
        last = hidden if last is None else torch.where(real[:, -1:], hidden, last)
    if remember:
        for row, k in enumerate(keyed):
            tree.insert(k, store.row_kv(row))
    return store, last.contiguous(), sum(len(k) - n for k, (n, _) in zip(keyed, matches))


# --- one request in flight ----------------------------------------------------------------------------

@dataclass
class _Plan:
    """What one row feeds in one forward, and what it checks at each fed position."""
    block: list[int]                    # the pending token, then the draft (a final ending token is not fed)
    draft: list[int]                    # draft[i] is the guess for the token chosen at position i
    allowed: list[Allowed] | None       # constrained: allowed[i] after block[i]; None: free, one position

    @property
    def positions(self) -> int:
        return 1 if self.allowed is None else len(self.allowed)


@dataclass
class _Request:
    prompt: Sequence[int]
    params: SamplingParams
    constraint: Constraint | None               # None: free generation
    activation: int = 0                         # an activated adapter's first prompt token (see prefill)


@dataclass
class _Live:
    request: _Request
    generator: torch.Generator | None
    seen: torch.Tensor | None           # (V,) ids of prompt and output, for the repetition penalty
    state: Any = None                   # the constraint's state
    feed: int = -1                      # the last chosen token: emitted, not yet run through the model
    done: bool = False
    out: Generation = field(default_factory=Generation)

    def plan(self, n_draft: int, feed: bool = True) -> _Plan:
        """The next block: the pending token and the longest draft the constraint permits."""
        block = [self.feed] if feed else []
        c = self.request.constraint
        if c is None:
            return _Plan(block, [], None)
        allowed, draft, state = [c.allowed(self.state)], [], self.state
        budget = self.request.params.max_new_tokens - len(self.out.tokens)
        for token in (c.draft(state, min(n_draft, budget)) if n_draft and feed else ()):
            if token not in allowed[-1].next:   # e.g. an end while a mention is open: stop the draft here
                break
            draft.append(token)
            state = allowed[-1].next[token]
            if state is END or c.done(state):
                break                           # nothing follows, so it needs no position of its own
            allowed.append(c.allowed(state))
        return _Plan(block + draft[:len(allowed) - 1], draft, allowed)

    def emit(self, token: int, allowed: Allowed | None) -> None:
        """Record the chosen token (an ending token is not kept)."""
        p, c, out = self.request.params, self.request.constraint, self.out
        if c is not None:
            state = allowed.next[token]
            if state is END:
                self.finish("stop")
                return
            self.state = state
        elif token in p.stop_ids:
            self.finish("stop")
            return
        out.tokens.append(token)
        if c is not None and c.done(self.state):
            self.finish("stop")
        elif len(out.tokens) >= p.max_new_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        self.done, self.out.finish_reason = True, reason


def _live(request: _Request, run: int, vocab_size: int, device: torch.device) -> _Live:
    p, c = request.params, request.constraint
    seen = None
    if c is None and p.repetition_penalty != 1.0:
        seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        seen[torch.as_tensor(list(request.prompt), device=device)] = True
    x = _Live(request, generator_for(p, request.prompt, run), seen)
    if c is not None:
        x.state, x.out.logprob = c.start, 0.0
        if c.done(x.state):             # one possible answer: nothing to decode
            x.finish("stop")
    return x


# --- choosing tokens from one forward -----------------------------------------------------------------

def _choose(model: Qwen2, rows: dict[int, _Live], plans: dict[int, _Plan], hidden: torch.Tensor) -> dict[int, int]:
    """Emit each planned row's tokens from the hidden states (B, width, C) of the block just run;
    returns, per row, how many of its fed tokens stay in the store."""
    kept: dict[int, int] = {}
    free = [r for r, p in plans.items() if p.allowed is None]
    if free:
        scores = model.lm_head(hidden[free, 0]).float()                     # (F, V)
        for n, r in enumerate(free):
            x, p = rows[r], rows[r].request.params
            if p.vocab_limit is not None and p.vocab_limit < scores.shape[1]:
                scores[n, p.vocab_limit:] = float("-inf")
            if x.seen is not None:
                scores[n] = apply_repetition_penalty(scores[n], x.seen, p.repetition_penalty)
        best = scores.argmax(-1).tolist()                                   # one call for the greedy rows
        for n, r in enumerate(free):
            x, p = rows[r], rows[r].request.params
            token = best[n] if p.greedy else sample(scores[n], p, x.generator)
            if x.seen is not None:
                x.seen[token] = True
            x.emit(token, None)
            x.feed, kept[r] = token, 1
    constrained = [r for r, p in plans.items() if p.allowed is not None]
    if constrained:
        at = torch.tensor([(r, i) for r in constrained for i in range(plans[r].positions)], device=hidden.device)
        logits, ids = restricted_logits(hidden[at[:, 0], at[:, 1]], model.lm_head,
                                        [a.ids for r in constrained for a in plans[r].allowed])
        logp = torch.log_softmax(logits, -1)
        top = logits.argmax(-1)                                             # one call for the greedy rows
        best, best_logp = top.tolist(), logp.gather(1, top[:, None]).squeeze(1).tolist()
        n = 0
        for r in constrained:
            x, plan, p = rows[r], plans[r], rows[r].request.params
            for i in range(plan.positions):
                draft = plan.draft[i] if i < len(plan.draft) else None
                if p.greedy:
                    col, lp = best[n + i], best_logp[n + i]
                else:
                    col = sample(logits[n + i], p, x.generator, None if draft is None else bisect_left(ids, draft))
                    lp = float(logp[n + i, col])
                token = ids[col]
                x.out.logprob += lp
                x.emit(token, plan.allowed[i])
                x.out.accepted_draft_tokens += token == draft
                if x.done or token != draft:
                    break
            x.feed, kept[r] = token, i + 1
            n += plan.positions
    return kept


def _grid(plans: dict[int, _Plan], batch: int, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocks as one right-padded (batch, width) id tensor and its real-token mask; empty rows
    feed only padding, which no real token attends to."""
    width = max(len(p.block) for p in plans.values())
    ids = [[pad_id] * width for _ in range(batch)]
    fed = [[False] * width for _ in range(batch)]
    for r, p in plans.items():
        ids[r][:len(p.block)] = p.block
        fed[r][:len(p.block)] = [True] * len(p.block)
    return torch.tensor(ids, device=device), torch.tensor(fed, device=device)


# --- the loop -----------------------------------------------------------------------------------------

@torch.inference_mode()
def generate(model: Qwen2, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
             constraints: Sequence[Constraint | None] | None = None, *, batch_size: int = 32, pad_id: int = 0,
             counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None,
             n_draft: int = N_DRAFT, static_steps: bool | None = None, base: Qwen2 | None = None,
             activations: Sequence[int] | None = None) -> list[Generation]:
    """One Generation per prompt, in input order. `params`: one for all, or one per prompt;
    `constraints`: None (all free), or one per prompt (None = free). `base` and `activations`:
    `model` is an activated adapter on `base`, acting from prompt i's token activations[i] on
    (everything it generates is its own); see `prefill`.

    Requests are admitted shortest prompt first (ties in input order), so identical requests given
    side by side (the k runs of one text) join together and share their prefill. The n-th of
    several requests with the same prompt is its run n: its own random stream. `n_draft=0` turns
    copy-speculation off; `counter` and `prefix_cache` are as in `prefill`. `static_steps`: run
    one-token steps as cascadener.engine.graphs.StepGraph, a CUDA graph on a GPU (the default
    there) and the same static-shape arithmetic eagerly elsewhere.
    """
    n = len(prompts)
    per = [params] * n if isinstance(params, SamplingParams) else list(params)
    cons = [None] * n if constraints is None else list(constraints)
    if len(per) != n or len(cons) != n:
        raise ValueError(f"{n} prompts, {len(per)} sampling parameters, {len(cons)} constraints")
    if batch_size < 1 or n_draft < 0:
        raise ValueError(f"need batch_size >= 1 and n_draft >= 0, got {batch_size} and {n_draft}")
    acts = [0] * n if activations is None else list(activations)
    if len(acts) != n:
        raise ValueError(f"{n} prompts, {len(acts)} activation indices")
    requests = [_Request(list(q), p, c, a) for q, p, c, a in zip(prompts, per, cons, acts)]
    for i, q in enumerate(requests):
        if not q.prompt:
            raise ValueError(f"prompt {i} is empty")
    device, runs = model.device, Counter()
    live = []
    for q in requests:
        key = tuple(q.prompt)
        live.append(_live(q, runs[key], model.config.vocab_size, device))
        runs[key] += 1
    waiting = deque(sorted((i for i, x in enumerate(live) if not x.done), key=lambda i: (len(requests[i].prompt), i)))
    B = min(batch_size, len(waiting))
    if B == 0:
        return [x.out for x in live]
    store = KVStore.for_model(model, B, max(len(requests[i].prompt) for i in waiting) + 64)
    rows: dict[int, _Live] = {}
    static = device.type == "cuda" if static_steps is None else static_steps
    graph: StepGraph | None = None

    while waiting or rows:
        # 1. admission: prefill the joiners together, choose their first tokens, seat the unfinished
        free = [r for r in range(B) if r not in rows][:len(waiting)]
        if free and (len(free) >= min(max(1, B // 4), len(waiting)) or not rows):
            joining = [live[waiting.popleft()] for _ in free]
            src, last = prefill(model, [x.request.prompt for x in joining], pad_id, counter, prefix_cache,
                                base=base, activations=[x.request.activation for x in joining])
            _choose(model, dict(enumerate(joining)), {j: x.plan(0, feed=False) for j, x in enumerate(joining)},
                    last[:, None])
            for j, (r, x) in enumerate(zip(free, joining)):
                x.out.forward_passes += 1
                if not x.done:
                    store.place(r, [src.row_kv(j)])
                    rows[r] = x
        if not rows:
            continue

        # 2. one forward: every row's pending token and draft
        plans = {r: x.plan(n_draft) for r, x in rows.items()}
        ids, fed = _grid(plans, B, pad_id, device)
        store.make_room(ids.shape[1])
        start = store.length
        if static and ids.shape[1] == 1:
            if graph is None or not graph.serves(store):
                graph = StepGraph(model, store)
            hidden = graph(ids, fed)
        else:
            hidden = model.hidden_states(ids, store, fed)
        kept = _choose(model, rows, plans, hidden)
        if any(kept[r] < len(p.block) for r, p in plans.items()):
            store.crop_rows([start + kept.get(r, 0) for r in range(B)])

        # 3. retirement
        for r, x in list(rows.items()):
            x.out.forward_passes += 1
            if x.done:
                del rows[r]
                store.release(r)
        if not waiting and 0 < len(rows) <= B // 2:
            store = store.select(list(rows))
            rows, B = dict(enumerate(rows.values())), len(rows)
    return [x.out for x in live]
