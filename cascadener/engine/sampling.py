"""How one token is chosen from a row's scores: the engine's only sampler.

Greedy takes the argmax (the scheduler takes it for a whole forward at once). Sampling softmaxes
at the temperature, then applies top-k, then top-p on what top-k left (the order Hugging Face's
generate applies them in), and draws from the request's own generator. With a draft token to
rule on (copy-speculation), the rejection rule of speculative sampling with a deterministic draft
(gpt-fast's rule with q = 1): keep the draft d with probability p(d), otherwise draw from p with d
removed and renormalised, so every emitted token is distributed exactly as p.

A request's random stream belongs to the request: its generator is seeded from the seed, its
prompt and its run index (`request_seed`), and it draws over the request's own candidates only,
never the batch's, so its answer does not depend on its neighbours or on its place in the batch.
"""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0           # 0 = greedy
    top_k: int = 0                     # 0 = off
    top_p: float = 1.0                 # 1 = off
    repetition_penalty: float = 1.0    # 1 = off; HF semantics: divides positive logits, multiplies negative
    seed: int | None = None            # None = unseeded (a sampled request then draws from torch's global stream)
    stop_ids: tuple[int, ...] = ()
    vocab_limit: int | None = None     # ids >= this are embedding padding and never produced

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid sampling parameters: {self}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop_ids", tuple(self.stop_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

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


def request_seed(seed: int, prompt: Sequence[int], run: int) -> int:
    """A 63-bit seed from the request's identity: the same prompt and run index give the same
    stream in any batch, any order, any process (no Python hash randomisation)."""
    h = hashlib.blake2b(f"{seed}:{run}:".encode() + array("q", prompt).tobytes(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & (2 ** 63 - 1)


def generator_for(params: SamplingParams, prompt: Sequence[int], run: int) -> torch.Generator | None:
    """The request's own CPU generator (draws happen on the CPU on every device, so a seeded
    request samples the same on a GPU), or None for greedy or unseeded requests."""
    if params.greedy or params.seed is None:
        return None
    return torch.Generator().manual_seed(request_seed(params.seed, prompt, run))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (..., V); seen (..., V) bool of ids in the prompt or output so far."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def distribution(scores: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The sampling distribution over a 1-D vector of finite scores."""
    probs = torch.softmax(scores / p.temperature, dim=-1)
    if not p.top_k and p.top_p >= 1:
        return probs
    ranked, order = probs.sort(descending=True)
    if p.top_k:
        ranked[p.top_k:] = 0.0
        ranked /= ranked.sum()
    # keep a token while the mass ranked above it is still short of top_p (the first always stays)
    ranked = torch.where(ranked.cumsum(-1) - ranked < p.top_p, ranked, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, ranked / ranked.sum())


def sample(scores: torch.Tensor, p: SamplingParams, generator: torch.Generator | None,
           draft: int | None = None) -> int:
    """One column of the 1-D `scores` (-inf = not allowed) drawn under `p` (temperature > 0),
    ruling on the draft column `draft` when there is one."""
    own = torch.isfinite(scores).nonzero().squeeze(1)
    probs = distribution(scores[own].float().cpu(), p)
    own = own.cpu()
    if draft is not None:
        d = int(torch.searchsorted(own, draft))
        if float(torch.rand((), generator=generator)) < float(probs[d]):
            return draft
        probs[d] = 0.0        # rejected: draw from the rest of the distribution, renormalised
    return int(own[torch.multinomial(probs, 1, generator=generator)])
