"""The LM head over a few allowed tokens only.

Constrained decoding knows which tokens may come next (cascadener.engine.constraint), usually a
handful of the 151,936. Multiplying only their rows of the
head, `h @ W[allowed].T`, skips what the LM head costs at full width (about a quarter of the 0.5B
model's decode time). The rows are gathered in id order, so a greedy argmax over them is the
full-vocabulary argmax whenever that one is allowed, and each logit is the same dot product the
full head computes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from cascadener.engine.fastlinear import linear_rows


def restricted_logits(hidden: torch.Tensor, head: nn.Module, allowed: Sequence[torch.Tensor]
                      ) -> tuple[torch.Tensor, list[int]]:
    """Logits (N, U) of the N hidden states (N, C) over the union U of their allowed id sets
    (allowed[i]: sorted ids, 1-D), -inf outside each one's own set; also U's ids, ascending. One
    union keeps it to one small matmul, and it is the model's own `lm_head(x).float()`, for U's
    rows of the head only."""
    union = torch.unique(torch.cat(list(allowed)))                        # sorted ascending
    rows = torch.repeat_interleave(torch.arange(len(allowed)), torch.tensor([len(a) for a in allowed]))
    cols = torch.cat([torch.searchsorted(union, a) for a in allowed])
    ok = torch.zeros(len(allowed), len(union), dtype=torch.bool)
    ok[rows, cols] = True
    logits = linear_rows(head, hidden, union.to(hidden.device)).float()
    return logits.masked_fill(~ok.to(logits.device), float("-inf")), union.tolist()
