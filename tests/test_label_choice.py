"""The label constraint (cascadener.ner.labels) through the engine: the choice and its probability
against a brute-force walk of full forwards, and against free greedy decoding when that already
yields a candidate."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from cascadener import SamplingParams, generate, load_model, load_tokenizer
from cascadener.ner.labels import LabelChoice

END = 2
PROMPTS = ["Kobe Bryant is a", "Paris is a", "The European Union signed a deal with"]


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_model(tiny_ckpt, torch.float32), load_tokenizer(tiny_ckpt)


def choose_greedy(model, prompts: list[list[int]], candidates: list[list[list[int]]]) -> list[tuple[int, float]]:
    """(chosen candidate, its probability under the constrained model) per prompt."""
    choices = [LabelChoice(cs) for cs in candidates]
    budget = max(len(c) for cs in candidates for c in cs)
    gens = generate(model, prompts, SamplingParams(max_new_tokens=budget), choices)
    return [(choice.chosen(g.tokens), math.exp(g.logprob)) for choice, g in zip(choices, gens)]


def walk(model, prompt: list[int], candidates: list[list[int]]) -> tuple[int, float]:
    """The definition, one full forward per step: restrict to the tokens that continue a
    candidate, take the argmax (lowest id on ties), multiply in its renormalised probability."""
    prefix, p = [], 1.0
    while len({tuple(c) for c in candidates if c[:len(prefix)] == prefix}) > 1:
        live = [c for c in candidates if c[:len(prefix)] == prefix]
        allowed = sorted({c[len(prefix)] for c in live})
        logits = model(torch.tensor([prompt + prefix]))[0, -1]
        probs = torch.softmax(logits[allowed], -1)
        best = int(probs.argmax())
        p *= float(probs[best])
        prefix.append(allowed[best])
    return next(i for i, c in enumerate(candidates) if c[:len(prefix)] == prefix), p


tokens = st.integers(3, 200)
candidate_lists = st.lists(st.lists(tokens, min_size=0, max_size=3), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(candidate_lists, min_size=1, max_size=3), st.integers(0, 2))
def test_choice_and_probability_are_the_step_by_step_definition(tiny, lists, shared):
    model, tok = tiny
    # candidates that share leading tokens, so that some choices take several steps
    stem = [7, 11][:shared]
    cands = [[stem + c + [END] for c in cs] for cs in lists]
    cands = [[c for i, c in enumerate(cs) if c not in cs[:i]] for cs in cands]     # distinct answers
    prompts = [tok.encode(PROMPTS[i % len(PROMPTS)]) for i in range(len(cands))]
    got = choose_greedy(model, prompts, cands)
    for prompt, cs, (index, p) in zip(prompts, cands, got):
        want_index, want_p = walk(model, prompt, cs)
        assert index == want_index
        assert p == pytest.approx(want_p, rel=1e-4)


def test_free_greedy_answer_among_the_candidates_is_chosen(tiny):
    model, tok = tiny
    prompts = [tok.encode(p) for p in PROMPTS]
    params = SamplingParams(max_new_tokens=3, vocab_limit=tok.vocab_size)
    free = [g.tokens for g in generate(model, prompts, params)]
    # distractors that share the free answer's first tokens, so the choice is made late
    cands = [[f[:1] + [5, END], f + [END], f[:2] + [9, END], [4, END]] for f in free]
    got = choose_greedy(model, prompts, cands)
    checked = 0
    for f, (index, _) in zip(free, got):
        if len(f) == 3 and f[0] != 4 and f[1] != 5 and f[2] != 9:   # no distractor coincides with it
            assert index == 1
            checked += 1
    assert checked


def test_labels_that_differ_in_their_first_token_need_no_decoding_step(tiny):
    model, tok = tiny
    prompts = [tok.encode(p) for p in PROMPTS]
    cands = [[[10, 12, END], [11, END], [13, 14, 15, END]]] * len(prompts)
    calls = []
    original = model.hidden_states

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    model.hidden_states = counting
    try:
        choose_greedy(model, prompts, cands)
    finally:
        del model.hidden_states
    assert len(calls) == 1          # the prefill only


def test_bad_candidates_are_refused():
    with pytest.raises(ValueError, match="none of them empty"):
        LabelChoice([[]])
    with pytest.raises(ValueError, match="at least one candidate"):
        LabelChoice([])
