"""The engine's invariants, stated once for every policy (free generation, the copy constraint,
the label choice) and every device:

* batched == alone: a request's tokens do not depend on the requests beside it, the batch size,
  the order it was given in, or how rows changed hands (float32, where a row's numbers move by
  ~1e-6 with its neighbours and no greedy choice flips on the tiny model);
* cache == no cache: prefix reuse through the radix tree changes no output;
* a seeded request's random stream belongs to it (its seed, prompt and run index).
"""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascadener import load_model, load_tokenizer
from cascadener.engine.graphs import StepGraph
from cascadener.engine.kv import KVStore
from cascadener.engine.prefix_cache import PrefixCache
from cascadener.engine.sampling import SamplingParams, request_seed
from cascadener.engine.scheduler import PrefillCounter, generate, prefill
from cascadener.ner.copy import CopyConstraint
from cascadener.ner.labels import LabelChoice
from cascadener.ner.prompts import get_format

TEXTS = ["Kobe Bryant played", "Angela", "The European Union signed a deal with Japan.", "東京は", "C# and \\## x",
         "## marks ## entities", "Berlin in June"]
LABELS = [["person", "location", "organization"], ["person", "personal", "people"], ["athlete"], ["a", "ab", "abc"]]
POLICIES = ["free", "copy", "label"]


@pytest.fixture(scope="module")
def tiny_on(tiny_ckpt):
    return {}


@pytest.fixture
def tiny(tiny_ckpt, tiny_on, device):
    """The tiny model in float32 on each device, and its tokenizer."""
    if device not in tiny_on:
        tiny_on[device] = load_model(tiny_ckpt, torch.float32, device)
    return tiny_on[device], load_tokenizer(tiny_ckpt)


def request(tok, text: int, policy: str, budget: int = 12, temperature: float = 0.0, seed: int | None = None):
    """(prompt, params, constraint) of one request of the given policy on TEXTS[text]."""
    source = TEXTS[text]
    fmt = get_format("paper")
    if policy == "label":
        conv = fmt.extraction(source)
        choice = LabelChoice([tok.encode(a) + tok.stop_ids[:1] for a in LABELS[text % len(LABELS)]])
        return tok.encode(tok.apply_chat_template(conv)), SamplingParams(max_new_tokens=8), choice
    p = SamplingParams(max_new_tokens=budget, temperature=temperature, seed=seed,
                       stop_ids=tok.stop_ids, vocab_limit=tok.vocab_size)
    if policy == "copy":
        automaton = CopyConstraint.for_tokenizer(tok).for_source(source)
        prompt = tok.encode(tok.apply_chat_template(fmt.extraction(source)))
        return prompt, p, automaton
    return tok.encode(source), p, None


def run(model, requests, **kw):
    prompts, params, constraints = zip(*requests) if requests else ((), (), ())
    return generate(model, list(prompts), list(params), list(constraints), **kw)


def same(a, b) -> bool:
    return [(g.tokens, g.finish_reason) for g in a] == [(g.tokens, g.finish_reason) for g in b]


requests_st = st.lists(st.tuples(st.integers(0, len(TEXTS) - 1), st.sampled_from(POLICIES), st.integers(1, 14)),
                       min_size=1, max_size=7)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=requests_st, batch=st.integers(1, 4), n_draft=st.sampled_from([0, 4]), static=st.booleans())
def test_batched_equals_alone_for_every_policy(tiny, spec, batch, n_draft, static):
    """static: one-token steps as engine/graphs.py runs them (a CUDA graph on a GPU, the same
    static-shape arithmetic on a CPU), against the device's default step."""
    model, tok = tiny
    requests = [request(tok, t, policy, budget) for t, policy, budget in spec]
    together = run(model, requests, batch_size=batch, n_draft=n_draft, static_steps=static)
    alone = [run(model, [q], n_draft=n_draft)[0] for q in requests]
    assert same(together, alone)
    for g, a in zip(together, alone):
        assert (g.logprob is None) == (a.logprob is None)
        assert g.logprob is None or abs(g.logprob - a.logprob) < 1e-4


@pytest.mark.parametrize("policy", POLICIES)
def test_a_prefix_cache_changes_nothing_and_is_reused(tiny, policy):
    model, tok = tiny
    requests = [request(tok, t, policy) for t in range(len(TEXTS))]
    fresh = run(model, requests, batch_size=3)
    tree, counter = PrefixCache(), PrefillCounter()
    for _ in range(2):
        assert same(run(model, requests, batch_size=3, prefix_cache=tree, counter=counter), fresh)
    assert counter.computed < counter.requested


@pytest.mark.parametrize("policy", ["free", "copy"])
def test_a_seeded_request_samples_the_same_alone_batched_and_shuffled(tiny, policy):
    """k samples of one text (identical requests: runs 0..k-1) among others, in any order."""
    model, tok = tiny
    k = 3
    mine = [request(tok, 2, policy, temperature=2.0, seed=7)] * k
    others = [request(tok, t, policy, temperature=2.0, seed=7) for t in (0, 1, 3, 4)]
    alone = run(model, mine, batch_size=1)
    assert len({tuple(g.tokens) for g in alone}) > 1                  # the k runs differ
    mixed = others[:2] + mine + others[2:]
    random.Random(0).shuffle(mixed)                                   # identical requests keep their run order
    out = run(model, mixed, batch_size=3)
    assert [g.tokens for q, g in zip(mixed, out) if q is mine[0]] == [g.tokens for g in alone]
    assert request_seed(7, [1, 2], 0) == request_seed(7, [1, 2], 0) != request_seed(7, [1, 2], 1)


@pytest.mark.parametrize("static", [False, True])
def test_long_runs_compact_the_dead_slots_and_stay_exact(tiny, monkeypatch, static):
    """Sequences outlive the first buffer (prompt + 64 slots): compaction must kick in, and
    change nothing; nor must a static step's graph when the store it was bound to changes."""
    model, tok = tiny
    compactions = []
    original = KVStore.compact
    monkeypatch.setattr(KVStore, "compact", lambda self: (compactions.append(self.length), original(self)))
    requests = [request(tok, t, "free", budget=30 + 7 * t) for t in range(len(TEXTS))]
    together = run(model, requests, batch_size=2, static_steps=static)
    assert compactions
    assert same(together, [run(model, [q])[0] for q in requests])


def test_a_static_step_computes_what_the_stores_own_step_does(tiny):
    """engine/graphs.py's step (captured on a GPU) against KVStore.begin/update on a twin store:
    the same hidden states for the fed rows, the same store afterwards, also across growth."""
    model, tok = tiny
    prompts = [tok.encode(t) for t in TEXTS[:3]]
    own, static = prefill(model, prompts)[0], prefill(model, prompts)[0]
    graph, graphs, gen = None, 0, torch.Generator().manual_seed(0)
    for step in range(20):                      # the 16-slot store doubles at once and again later
        ids = torch.randint(0, tok.vocab_size, (3, 1), generator=gen).to(model.device)
        fed = torch.tensor([[True], [step % 2 == 0], [step != 3]], device=model.device)
        own.make_room(1)
        static.make_room(1)
        if graph is None or not graph.serves(static):
            graph, graphs = StepGraph(model, static), graphs + 1
        expected, got = model.hidden_states(ids, own, fed), graph(ids, fed)
        assert torch.allclose(got[fed[:, 0]], expected[fed[:, 0]], atol=1e-5)
        assert (own.length, own.max_len) == (static.length, static.max_len)
        assert torch.equal(own.valid, static.valid) and torch.equal(own.next_pos, static.next_pos)
        held = own.valid[None, :, None, :, None]
        assert torch.allclose(own.k * held, static.k * held, atol=1e-6)
    assert graphs >= 2                          # a new buffer, a new graph


def test_rows_are_reused_and_repeated_prompts_share_their_prefill(tiny):
    model, tok = tiny
    requests = [request(tok, 2, "free", budget=3)] * 4 + [request(tok, 0, "free", budget=9)]
    counter = PrefillCounter()
    out = run(model, requests, batch_size=4, counter=counter)
    assert len({tuple(g.tokens) for g in out[:4]}) == 1
    assert counter.computed < counter.requested


def test_bad_and_empty_requests(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1, 2], []], SamplingParams())
    with pytest.raises(ValueError, match="2 sampling parameters"):
        generate(model, [[1, 2]], [SamplingParams()] * 2)
    assert generate(model, [], SamplingParams()) == []
    one = generate(model, [[1, 2]], SamplingParams(), [LabelChoice([[5, 2]])])[0]
    assert one.tokens == [] and one.finish_reason == "stop" and one.logprob == 0.0 and one.forward_passes == 0


def test_a_text_gets_the_same_sampled_spans_alone_and_in_a_shuffled_chunk(tiny_ckpt):
    """End to end with k=3 sampled runs: the spans of a text do not depend on the texts beside it."""
    from cascadener.ner.pipeline import CascadeNER, Options
    ner = CascadeNER.load(model=tiny_ckpt, dtype=torch.float32, options=Options(k=3, seed=3, min_votes=2),
                          device="cpu")
    ner.extractor.generation_config = {"do_sample": True, "temperature": 1.5}    # the runs differ
    texts = ["Kobe Bryant played for the Lakers.", "Angela Merkel visited Paris.", "東京は日本の首都です。",
             "The European Union signed a deal with Japan."]
    alone = ner.predict(texts[1], labels=["person", "location"]).spans
    chunk = texts + [texts[1]]                                   # and its twin in the same chunk
    random.Random(1).shuffle(chunk)
    docs = ner.predict_batch(chunk, labels=["person", "location"])
    assert [d.spans for d, t in zip(docs, chunk) if t == texts[1]] == [alone, alone]
    ner.options = Options(k=3, seed=4, min_votes=2)
    assert ner.predict(texts[1], labels=["person", "location"]).spans != alone     # the test can fail
    assert ner.predict_batch([], labels=["person"]) == []
    assert ner.predict_batch([""], labels=["person"])[0].spans == []


def test_every_policy_gives_the_cpus_tokens_on_the_device(tiny, tiny_ckpt, device):
    """float32 on a GPU: the same greedy tokens for every policy as on the CPU."""
    if device.type == "cpu":
        pytest.skip("compares another device against the CPU")
    model, tok = tiny
    cpu = load_model(tiny_ckpt, torch.float32)
    requests = [request(tok, t, policy) for t in range(len(TEXTS)) for policy in POLICIES]
    assert same(run(model, requests, batch_size=4), run(cpu, requests, batch_size=4))
