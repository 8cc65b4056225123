"""The copy constraint (cascadener.ner.copy) and copy-speculation through the engine.

The tiny random model marks text wildly (it loves `#`), which is what the constraint tests want:
whatever it prefers, the output must parse back to the exact source. Equalities are checked in
float32, where a wider forward changes logits by ~1e-6 only. That a copy comes out the same in
any batch and with or without the prefix cache is an engine invariant (tests/test_engine.py).
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascadener import SamplingParams, generate, load_model, load_tokenizer
from cascadener.engine.sampling import distribution
from cascadener.engine.scheduler import N_DRAFT
from cascadener.geic import markup
from cascadener.ner.copy import HASH, CopyConstraint
from cascadener.ner.prompts import get_format

SOURCES = ["Kobe was in NBA", "Angela Merkel visited Paris and Berlin in June.", "東京は日本の首都です。",
           "C# and \\## x", "  spaced  out ", ""]


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_model(tiny_ckpt, torch.float32), load_tokenizer(tiny_ckpt)


def prompt(tok, text: str) -> list[int]:
    return tok.encode(tok.apply_chat_template(get_format("paper").extraction(text)))


def copy_mark(model, tok, prompts, sources, n_draft=N_DRAFT, max_new_tokens=None, **sampling):
    """Each source copied under its constraint through the engine; the text decoded."""
    automata = [CopyConstraint.for_tokenizer(tok).for_source(s) for s in sources]
    params = [SamplingParams(max_new_tokens=max_new_tokens or a.max_tokens, **sampling) for a in automata]
    gens = generate(model, prompts, params, automata, n_draft=n_draft, batch_size=64)
    for g in gens:
        g.text = tok.decode(g.tokens)
    return gens


def unmarked(source: str, output: str) -> str:
    """The output with its marks taken out (and escapes undone), as markup.parse reads it."""
    return markup._read(output, markup.escaped(source))[0]


def reachable_states(automaton, limit: int = 60):
    """States reachable from the start through allowed tokens, breadth first."""
    seen, queue = {automaton.start}, [automaton.start]
    while queue and len(seen) < limit:
        state = queue.pop(0)
        for nxt in automaton.allowed(state).next.values():
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def brute_force_allowed(automaton, state, vocab_size: int) -> list[int]:
    return [i for i in range(vocab_size) if automaton.advance(state, i) is not None]


# --- the vocabulary and the automaton ----------------------------------------------------------------

def test_token_bytes_decode_like_the_tokenizer(tiny_tokenizer):
    c = CopyConstraint.for_tokenizer(tiny_tokenizer)
    assert CopyConstraint.for_tokenizer(tiny_tokenizer) is c
    assert c.end_id == tiny_tokenizer.token_to_id("<|im_end|>") and c.end_id not in c.vocab
    assert not set(c.vocab) & {0, 1, 2}                       # special tokens are no copy material
    for i, b in c.vocab.items():
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:                            # a piece of a multi-byte character
            continue
        assert tiny_tokenizer.decode([i]) == text


@pytest.mark.parametrize("source", SOURCES)
def test_target_is_what_markup_renders(tiny_tokenizer, source):
    automaton = CopyConstraint.for_tokenizer(tiny_tokenizer).for_source(source)
    assert automaton.target == markup.render(source, []).encode()


@pytest.mark.parametrize("source", SOURCES)
def test_trie_walk_finds_exactly_the_allowed_tokens(tiny_tokenizer, source):
    automaton = CopyConstraint.for_tokenizer(tiny_tokenizer).for_source(source)
    for state in reachable_states(automaton):
        got = automaton.allowed(state).ids.tolist()
        assert got == brute_force_allowed(automaton, state, tiny_tokenizer.vocab_size), state
        assert got == sorted(got)


@pytest.mark.parametrize("source, output, ok", [
    ("Kobe was in NBA", "##Kobe## was in ##NBA##", True),
    ("Kobe was in NBA", "Kobe was in NBA", True),
    ("Kobe was in NBA", "##Kobe####was## in NBA", False),      # "was" lost its space: text changed
    ("Kobe was in NBA", "##Kobe## ##was## in NBA", True),      # adjacent mentions
    ("Kobe was in NBA", "##K##obe was in NBA", True),          # a mark inside a word is the model's call
    ("Kobe was in NBA", "####Kobe was in NBA", False),         # empty mention
    ("Kobe was in NBA", "Kobe## ##was in NBA", False),         # blank mention
    ("Kobe was in NBA", "##Kobe was in NBA", False),           # never closed
    ("Kobe was in NBA", "Kobe was in NBA##", False),           # opens with nothing left to enclose
    ("Kobe was in NBA", "Kobe was in the NBA", False),         # invented text
    ("Kobe was in NBA", "Kobe in NBA", False),                 # dropped text
    ("Kobe was in NBA", "Kobe was in NBA.", False),
    ("C# rocks", "##C\\### rocks", True),                      # escaped form of a text with '#'
    ("C# rocks", "##C### rocks", False),                       # the unescaped form is ambiguous
    ("C# rocks", "##C\\##\\## rocks", False),                  # a mark inside an escape pair
    ("東京", "##東京##", True),
])
def test_automaton_rules(tiny_tokenizer, source, output, ok):
    automaton = CopyConstraint.for_tokenizer(tiny_tokenizer).for_source(source)
    assert automaton.accepts(tiny_tokenizer.encode(output)) is ok


def test_no_mark_inside_a_utf8_sequence_and_end_only_when_done(tiny_tokenizer):
    automaton = CopyConstraint.for_tokenizer(tiny_tokenizer).for_source("東京")
    first = "東".encode()[0]
    inside = automaton.step(automaton.start, first)
    assert inside is not None and automaton.step(inside, HASH) is None
    assert automaton.advance(automaton.start, automaton.end_id) is None
    done = automaton.start._replace(pos=len(automaton.target))
    assert automaton.advance(done, automaton.end_id) == done


def test_draft_is_the_tokenizers_split_of_the_rest(tiny_tokenizer):
    automaton = CopyConstraint.for_tokenizer(tiny_tokenizer).for_source("Kobe was in NBA")
    state = automaton.start._replace(pos=5)
    assert automaton.draft(state, 50) == tiny_tokenizer.encode("was in NBA") + [automaton.end_id]
    assert automaton.draft(state, 2) == tiny_tokenizer.encode("was in NBA")[:2]
    assert automaton.draft(state._replace(half_mark=True), 50)[:1] == tiny_tokenizer.encode("#was")[:1]


# --- the restricted head and speculation -------------------------------------------------------------

def test_restricted_head_picks_the_full_heads_argmax_over_the_allowed(tiny):
    """Teacher-force the constrained output through a plain full-vocabulary forward: every token
    is the argmax of the full logits over the allowed set, and is the global argmax whenever
    that one was allowed (so an unconstrained copy would be reproduced exactly)."""
    model, tok = tiny
    for source in SOURCES[:3]:
        p = prompt(tok, source)
        out = copy_mark(model, tok, [p], [source], n_draft=0)[0]
        automaton = CopyConstraint.for_tokenizer(tok).for_source(source)
        logits = model(torch.tensor([p + out.tokens]))[0, len(p) - 1:, :tok.vocab_size]
        state = automaton.start
        for step, token in enumerate(out.tokens + [automaton.end_id]):
            allowed = automaton.allowed(state).ids
            assert token == int(allowed[logits[step, allowed].argmax()])
            top = int(logits[step].argmax())
            if top in automaton.allowed(state).next:
                assert token == top
            state = automaton.advance(state, token)


@pytest.mark.parametrize("n_draft", [1, 4, 16])
def test_speculative_greedy_equals_one_token_at_a_time(tiny, n_draft):
    model, tok = tiny
    prompts = [prompt(tok, s) for s in SOURCES]
    plain = copy_mark(model, tok, prompts, SOURCES, n_draft=0)
    fast = copy_mark(model, tok, prompts, SOURCES, n_draft=n_draft)
    assert [r.tokens for r in fast] == [r.tokens for r in plain]
    assert all(r.finish_reason == "stop" for r in fast)
    assert sum(r.accepted_draft_tokens for r in fast) > 0
    assert sum(r.forward_passes for r in fast) < sum(r.forward_passes for r in plain)
    assert all(r.forward_passes == len(r.tokens) + 1 for r in plain)   # one per token and the end


def test_a_budget_cuts_the_copy_short(tiny):
    model, tok = tiny
    source = SOURCES[1]
    full = copy_mark(model, tok, [prompt(tok, source)], [source])[0]
    cut = copy_mark(model, tok, [prompt(tok, source)], [source], max_new_tokens=5)[0]
    assert cut.tokens == full.tokens[:5] and cut.finish_reason == "length" and full.finish_reason == "stop"


texts = st.text(alphabet=st.sampled_from(list("ab K.#\\é東\n")), max_size=14)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=texts, temperature=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 9))
def test_every_output_parses_back_to_the_source(tiny, source, temperature, seed):
    model, tok = tiny
    out = copy_mark(model, tok, [prompt(tok, source or "x")], [source], temperature=temperature, seed=seed)[0]
    parsed = markup.parse(source, out.text)
    assert out.finish_reason == "stop" and parsed.dropped == 0 and parsed.unpaired == 0
    assert unmarked(source, out.text) == source
    assert all(source[s.start:s.end].strip() for s in parsed.spans)


# --- sampling ----------------------------------------------------------------------------------------

def exact_distribution(model, tok, p: list[int], source: str, params: SamplingParams) -> dict[tuple[int, ...], float]:
    """Every complete constrained output and its probability, by walking the tree of outputs."""
    automaton = CopyConstraint.for_tokenizer(tok).for_source(source)
    out: dict[tuple[int, ...], float] = {}
    stack = [((), automaton.start, 1.0)]
    while stack:
        tokens, state, prob = stack.pop()
        allowed = automaton.allowed(state)
        logits = model(torch.tensor([p + list(tokens)]))[0, -1]
        for t, q in zip(allowed.ids.tolist(), distribution(logits[allowed.ids], params).tolist()):
            if q > 0 and t == automaton.end_id:
                out[tokens] = prob * q
            elif q > 0:
                stack.append((tokens + (t,), allowed.next[t], prob * q))
    return out


@pytest.mark.parametrize("speculate", [False, True])
def test_sampling_follows_the_constrained_distribution(tiny, speculate):
    """2000 sampled runs (one batch) against the exact distribution over complete outputs."""
    model, tok = tiny
    source, n = "ab", 2000
    p = prompt(tok, source)
    exact = exact_distribution(model, tok, p, source, SamplingParams(temperature=0.8, top_k=6, top_p=0.95))
    assert abs(sum(exact.values()) - 1) < 1e-4 and len(exact) > 5
    runs = copy_mark(model, tok, [p] * n, [source] * n, n_draft=N_DRAFT if speculate else 0, temperature=0.8,
                     top_k=6, top_p=0.95, seed=0)
    seen = Counter(tuple(r.tokens) for r in runs)
    assert set(seen) <= set(exact)
    total_variation = 0.5 * sum(abs(seen[k] / n - q) for k, q in exact.items())
    assert total_variation < 0.05, total_variation
    if speculate:
        assert sum(r.accepted_draft_tokens for r in runs) > 0


# --- the real checkpoint -----------------------------------------------------------------------------

@pytest.mark.real
def test_real_trie_walk_matches_brute_force(real_ckpt):
    tok = load_tokenizer(real_ckpt)
    automaton = CopyConstraint.for_tokenizer(tok).for_source("Müller flew to 東京, said ##C# fans.")
    states = [automaton.start, automaton.start._replace(pos=2), automaton.start._replace(pos=16, open=True),
              automaton.start._replace(pos=31, half_mark=True)]
    for state in states:
        assert automaton.allowed(state).ids.tolist() == brute_force_allowed(automaton, state, tok.vocab_size)


@pytest.mark.real
def test_real_constrained_and_speculative_equal_plain_greedy_on_a_faithful_copy(real_model_fp32, real_ckpt):
    """The instruct prompt makes the 0.5B model mark the sentence itself; where its plain greedy
    output is a faithful marking, constrained and speculative decoding must reproduce it."""
    tok = load_tokenizer(real_ckpt)
    source = "Kobe Bryant played for the Los Angeles Lakers in the NBA."
    p = tok.encode(tok.apply_chat_template(get_format("instruct").extraction(source)))
    plain = generate(real_model_fp32, [p], SamplingParams(max_new_tokens=64, stop_ids=tok.stop_ids,
                                                          vocab_limit=tok.vocab_size))[0].tokens
    assert CopyConstraint.for_tokenizer(tok).for_source(source).accepts(plain), tok.decode(plain)
    assert markup.parse(source, tok.decode(plain)).spans        # it did mark something
    constrained = copy_mark(real_model_fp32, tok, [p], [source], n_draft=0)[0]
    fast = copy_mark(real_model_fp32, tok, [p], [source])[0]
    assert constrained.tokens == plain and fast.tokens == plain
    assert fast.forward_passes < constrained.forward_passes / 2
    assert markup.parse(source, fast.text).spans == markup.parse(source, tok.decode(plain)).spans
