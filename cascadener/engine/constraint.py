"""The protocol a request's constraint speaks to the engine.

A request is free generation, or carries a constraint: an automaton over token ids that the
engine walks alongside decoding. The engine knows nothing of what the constraint means (a copy of
a source with marks, a choice among labels: see cascadener.ner.copy and cascadener.ner.labels);
it asks three questions, all about immutable states so that a draft can be checked without
committing to it:

    allowed(state) -> Allowed       which tokens may come next, and the state each leads to
                                    (END: the token finishes the answer and is not kept)
    done(state) -> bool             the answer is decided: stop without another step
    draft(state, n) -> list[int]    up to n tokens the model is guessed to produce next, verified
                                    in one forward (copy-speculation); [] for none

Constrained steps read the LM head's rows of the allowed tokens only
(cascadener.engine.restricted_head), so a handful of rows is multiplied instead of the vocabulary.
Every allowed token must keep the answer completable: the engine never backtracks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Protocol

import torch

END = None      # Allowed.next value of a token that ends the answer (it is not kept)


@dataclass(frozen=True)
class Allowed:
    """The tokens allowed in one state, and the state each of them leads to (or END)."""
    ids: torch.Tensor               # 1-D, sorted ascending, so an argmax over them breaks ties towards
                                    # the lowest id, exactly as an argmax over the whole vocabulary
    next: dict[int, Any]


class Constraint(Protocol):
    @property
    def start(self) -> Hashable: ...
    def allowed(self, state: Any) -> Allowed: ...
    def done(self, state: Any) -> bool: ...
    def draft(self, state: Any, n: int) -> list[int]: ...
