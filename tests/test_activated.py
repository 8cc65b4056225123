"""Activated adapters (cascadener/qwen2/lora.py): an adapter that acts after each prompt's head only,
the head being read by the base model, so that adapters on one base share it.

* the engine computes what a plain reference loop computes: the head through the base, the rest of
  the prompt and every generated token through the adapter (float32, greedy, exact tokens);
* adapters on one base share one prefix tree: the second computes none of the heads the first
  computed, and outputs are those of a fresh tree;
* the pipeline loads two activated adapters onto one base and tags the same spans with the prefix
  cache on and off; training writes the flag and refuses what does not apply.
"""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascadener import load_model, load_tokenizer
from cascadener.cli.train import main as train_main
from cascadener.engine.kv import KVStore
from cascadener.engine.prefix_cache import PrefixCache
from cascadener.engine.sampling import SamplingParams
from cascadener.engine.scheduler import PrefillCounter, generate
from cascadener.geic.spans import Span
from cascadener.ner.copy import CopyConstraint
from cascadener.ner.labels import LabelChoice
from cascadener.ner.pipeline import CascadeNER, Options
from cascadener.ner.prompts import get_format
from cascadener.qwen2.lora import LoRAConfig, inject, lora_layers, merge_all, strip_adapters

from test_training import TRAIN, argv

TYPES = ["person", "location", "organization"]
TEXTS = ["Kobe Bryant played for the Lakers.", "Angela Merkel visited Paris", "東京は日本の首都です。",
         "The European Union signed a deal with Japan?!"]


@pytest.fixture(scope="module")
def built() -> dict:
    return {}


@pytest.fixture
def tiny(tiny_ckpt, built, device):
    """The base and two activated adapters merged into copies of it (float32, strong random LoRA),
    on each device."""
    if device not in built:
        built[device] = adapters_on(tiny_ckpt, device)
    return built[device]


def adapters_on(tiny_ckpt, device):
    base = load_model(tiny_ckpt, torch.float32, device)
    adapters = []
    for seed in (0, 1):
        model = load_model(tiny_ckpt, torch.float32, "cpu")
        inject(model, LoRAConfig(r=4, lora_alpha=8, lora_dropout=0.0, activated=True))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in lora_layers(model).values():
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.5)
        merge_all(model)
        strip_adapters(model)
        adapters.append(model.to(device))
    return base, adapters, load_tokenizer(tiny_ckpt)


def prompts_and_heads(tok, text: int, mention: bool):
    """A joint-format extraction prompt (mention False) or classification prompt, and its activation."""
    fmt, source = get_format("joint"), TEXTS[text]
    head = fmt.head(source, TYPES, False)
    conv = fmt.classification(source, Span(0, 4), TYPES, False) if mention else fmt.extraction(source, TYPES)
    ids = tok.encode(tok.apply_chat_template(conv))
    return ids, tok.head_length(ids, head)


@torch.inference_mode()
def reference(base, adapted, prompt: list[int], activation: int, p: SamplingParams) -> list[int]:
    """Greedy decoding written out: the head through the base, everything after through the adapter."""
    store = KVStore.for_model(base, 1, len(prompt) + p.max_new_tokens + 1)
    ids = lambda tokens: torch.tensor([tokens], device=base.device)      # noqa: E731
    if activation:
        base.hidden_states(ids(prompt[:activation]), store)
    hidden = adapted.hidden_states(ids(prompt[activation:]), store)[:, -1]
    out: list[int] = []
    while len(out) < p.max_new_tokens:
        token = int(adapted.lm_head(hidden)[0, :p.vocab_limit].argmax())
        if token in p.stop_ids:
            break
        out.append(token)
        hidden = adapted.hidden_states(ids([token]), store)[:, -1]
    return out


def test_the_head_is_what_the_prompt_and_the_head_agree_on(tiny_tokenizer):
    tok = tiny_tokenizer
    fmt = get_format("joint")
    for source in TEXTS:
        head = fmt.head(source, TYPES, False)
        open_head = tok.encode(tok.apply_chat_template(head, add_generation_prompt=False)[:-len("<|im_end|>\n")])
        ext = tok.encode(tok.apply_chat_template(fmt.extraction(source, TYPES)))
        assert tok.head_length(ext, head) == len(open_head)            # a special token follows the head
        cls = tok.encode(tok.apply_chat_template(fmt.classification(source, Span(0, 4), TYPES, False)))
        n = tok.head_length(cls, head)
        assert cls[:n] == open_head[:n] and n < len(cls) - 1
        assert n >= len(open_head) - 2                                  # at most the last characters merge
    assert tok.head_length([1, 2], [{"role": "user", "content": "x" * 50}]) <= 1   # the last token is the adapter's


requests_st = st.lists(st.tuples(st.integers(0, len(TEXTS) - 1), st.booleans(), st.integers(1, 10)),
                       min_size=1, max_size=5)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=requests_st, batch=st.integers(1, 3), cached=st.booleans())
def test_the_engine_reads_the_head_with_the_base_and_the_rest_with_the_adapter(tiny, spec, batch, cached):
    base, (adapted, _), tok = tiny
    prompts, acts, params = [], [], []
    for text, mention, budget in spec:
        ids, a = prompts_and_heads(tok, text, mention)
        prompts.append(ids)
        acts.append(a)
        params.append(SamplingParams(max_new_tokens=budget, stop_ids=tok.stop_ids, vocab_limit=tok.vocab_size))
    out = generate(adapted, prompts, params, batch_size=batch, base=base, activations=acts,
                   prefix_cache=PrefixCache() if cached else None)
    assert [g.tokens for g in out] == [reference(base, adapted, q, a, p) for q, a, p in zip(prompts, acts, params)]


def test_the_activation_matters(tiny):
    """The same prompts with the adapter acting on every token generate otherwise (the test can fail)."""
    base, (adapted, _), tok = tiny
    prompts = [prompts_and_heads(tok, t, False) for t in range(len(TEXTS))]
    p = SamplingParams(max_new_tokens=8, stop_ids=tok.stop_ids, vocab_limit=tok.vocab_size)
    activated = generate(adapted, [q for q, _ in prompts], p, base=base, activations=[a for _, a in prompts])
    plain = generate(adapted, [q for q, _ in prompts], p)
    assert [g.tokens for g in activated] != [g.tokens for g in plain]
    assert plain == generate(adapted, [q for q, _ in prompts], p, base=base, activations=[0] * len(prompts))
    with pytest.raises(ValueError, match="at least the prompt's last token"):
        generate(adapted, [prompts[0][0]], p, base=base, activations=[len(prompts[0][0])])


def test_two_adapters_share_the_heads_the_base_computed_and_nothing_else(tiny):
    """The extractor's run leaves the heads in the tree; the classifier then computes only what
    follows them, and every policy's outputs are those of a fresh tree."""
    base, (extractor, classifier), tok = tiny
    ext = [prompts_and_heads(tok, t, False) for t in range(len(TEXTS))]
    cls = [prompts_and_heads(tok, t, True) for t in range(len(TEXTS))]
    copy = CopyConstraint.for_tokenizer(tok)
    free = SamplingParams(max_new_tokens=12, stop_ids=tok.stop_ids, vocab_limit=tok.vocab_size)
    labels = [LabelChoice([tok.encode(a) + tok.stop_ids[:1] for a in TYPES]) for _ in cls]
    ext_cons = [copy.for_source(s) for s in TEXTS]
    tree, counter = PrefixCache(), PrefillCounter()

    def both(prefix_cache, counter=None):
        e = generate(extractor, [q for q, _ in ext], free, ext_cons, base=base, activations=[a for _, a in ext],
                     prefix_cache=prefix_cache)
        c = generate(classifier, [q for q, _ in cls], SamplingParams(max_new_tokens=8), labels, base=base,
                     activations=[a for _, a in cls], prefix_cache=prefix_cache, counter=counter)
        # the classifier given the extractor's very prompts: only the heads may come from the tree
        same = generate(classifier, [q for q, _ in ext], free, base=base, activations=[a for _, a in ext],
                        prefix_cache=prefix_cache)
        return [g.tokens for g in e + c + same]

    assert both(tree, counter) == both(None)
    assert counter.computed == sum(len(q) - a for q, a in cls)          # no head computed again
    assert counter.requested == sum(len(q) for q, _ in cls)
    assert both(tree) == both(None)                                     # and each adapter's keys stay its own
    with pytest.raises(ValueError, match="another model"):
        generate(base, [ext[0][0]], free, prefix_cache=tree, base=extractor, activations=[ext[0][1]])


def trained_adapter(tiny_ckpt, out, task: str):
    cmd = argv(tiny_ckpt, out, "--steps", "2", "--prompt-format", "joint", "--activated")
    cmd[cmd.index("extract")] = task
    assert train_main(cmd) == 0
    return out


def test_the_pipeline_runs_two_activated_adapters_on_one_base(tiny_ckpt, tmp_path):
    ext, cls = trained_adapter(tiny_ckpt, tmp_path / "ext", "extract"), trained_adapter(tiny_ckpt, tmp_path / "cls", "classify")
    assert json.loads((ext / "adapter_config.json").read_text())["activated"] is True

    def load(reuse: bool) -> CascadeNER:
        return CascadeNER.load(model=tiny_ckpt, extractor_adapter=ext, classifier_adapter=cls, dtype=torch.float32,
                               options=Options(k=1, prompt_format="joint"), reuse_prefixes=reuse, device="cpu")
    ner = load(True)
    assert ner.extractor.base is ner.classifier.base is not None
    assert ner.extractor.prefix_cache is ner.classifier.prefix_cache
    found = ner.predict_batch(TEXTS, labels=TYPES)
    assert found == load(False).predict_batch(TEXTS, labels=TYPES)
    ner.forget()                                                # as a batch job does before each chunk
    assert ner.extractor.prefix_cache is ner.classifier.prefix_cache and ner.extractor.prefix_cache.size == 0
    with pytest.raises(ValueError, match="--prompt-format joint"):
        CascadeNER.load(model=tiny_ckpt, extractor_adapter=ext, classifier_adapter=cls, dtype=torch.float32,
                        options=Options(k=1, prompt_format="prefix"), device="cpu")


def test_training_refuses_what_an_activated_adapter_cannot_do(tiny_ckpt, tmp_path, capsys):
    for extra, wanted in ((["--prompt-format", "prefix"], "--activated needs prompts that share a head"),
                          (["--prompt-format", "joint", "--merge"], "--merge (full weights) do not apply")):
        assert train_main(argv(tiny_ckpt, tmp_path / "out", "--steps", "1", "--activated", *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and wanted in err and err.count("\n") == 1
    plain = json.loads(json.dumps(LoRAConfig().to_peft()))
    assert "activated" not in plain and LoRAConfig.from_peft(plain, "x").activated is False
