"""Choosing among known answers by likelihood instead of generating free text.

For a classification prompt the answer must be one of the candidate labels, so rather than
sampling a string and hoping it matches, each candidate (its tokens plus the end-of-turn token,
so that "art" cannot win by being a prefix of "artist") is scored as log p(candidate | prompt).
One prefill per prompt, copied to one row per candidate, then one forward over all candidates:
every prediction is a valid label and carries a probability.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .generation import PrefillCounter, prefill
from .model import Qwen2
from .prefix_cache import PrefixCache


@torch.inference_mode()
def continuation_logprobs(model: Qwen2, prompts: Sequence[Sequence[int]],
                          candidates: Sequence[Sequence[Sequence[int]]], pad_id: int = 0,
                          counter: PrefillCounter | None = None, prefix_cache: PrefixCache | None = None
                          ) -> list[list[float]]:
    """log p(c | prompt) for every candidate c of every prompt (candidates[i] belong to prompts[i])."""
    if any(not cands or any(not c for c in cands) for cands in candidates):
        raise ValueError("every prompt needs at least one non-empty candidate")
    device = model.device
    width = max(len(c) for cands in candidates for c in cands)
    cache, first_logits = prefill(model, prompts, width, pad_id, counter, prefix_cache)
    rows = [i for i, cands in enumerate(candidates) for _ in cands]
    flat = [c for cands in candidates for c in cands]
    ids = torch.full((len(flat), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(flat), width, dtype=torch.bool, device=device)
    for r, c in enumerate(flat):
        ids[r, :len(c)] = torch.as_tensor(c)
        mask[r, :len(c)] = True
    # Right padding: each candidate's tokens come first, so none of them ever sees a pad slot.
    cache = cache.select(rows)
    hidden = model.hidden_states(ids[:, :-1], cache=cache, pad_mask=mask[:, :-1]) if width > 1 else None
    first = torch.log_softmax(first_logits.float(), -1)                           # (B, V) predicts token 0
    scores = first[torch.tensor(rows, device=device), ids[:, 0]]
    if hidden is not None:
        # The head only where a candidate token is predicted: with labels of unequal length most
        # of the (R, width-1) grid is padding, and the full-vocabulary head is the costly part.
        real = mask[:, 1:]
        later = torch.log_softmax(model.lm_head(hidden[real]).float(), -1)          # (N, V)
        token_lp = torch.zeros(real.shape, dtype=later.dtype, device=device)
        token_lp[real] = later.gather(1, ids[:, 1:][real][:, None]).squeeze(1)
        scores = scores + token_lp.sum(1)
    out, r = [], 0
    for cands in candidates:
        out.append(scores[r:r + len(cands)].tolist())
        r += len(cands)
    return out


def choose(logprobs: Sequence[float]) -> tuple[int, list[float]]:
    """Index of the most likely candidate and the probabilities renormalised over the candidates."""
    probs = torch.softmax(torch.tensor(logprobs, dtype=torch.float64), 0).tolist()
    return max(range(len(probs)), key=probs.__getitem__), probs
