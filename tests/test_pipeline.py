"""The cascade's logic with a scripted engine, and its mechanics end to end on a tiny random model."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pytest
import torch

from cascadener.engine.chat import Completion
from cascadener.engine.sampling import SamplingParams
from cascadener.engine.scheduler import PrefillCounter
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.spans import Span
from cascadener.ner.pipeline import CascadeNER, Options

TREE = Hierarchy.from_tree({"person": {"athlete": [], "politician": []}, "organization": {"team": [], "league": []},
                            "location": []})


@dataclass
class ScriptedEngine:
    """Answers extraction prompts from `runs` (text -> one marked output per run) and
    classification prompts from `labels` ((mention, candidate list) -> answer). Under a label
    constraint: the scripted answer when it is on the list (probability 0.9), else the first
    option (0.2); the copy constraint is ignored."""
    runs: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    tokenizer: object = None      # what the pipeline builds constraints with (constrain=True only)
    base: object = None           # not an activated adapter: heads are ignored

    def sampling(self, k_sampled: bool, max_new_tokens: int, seed: int | None = None) -> SamplingParams:
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.7 if k_sampled else 0.0, seed=seed)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, conversations, params, constraints=None, heads=None):
        out = []
        for conv, constraint in zip(conversations, constraints or [None] * len(conversations)):
            query = conv[-1]["content"]
            self.seen.append(query)
            m = re.match(r'The ##(.*?)## in the sentence: ".*" belongs to which entity in the list: (.*)\?', query)
            if m:
                text = self.labels.get((m.group(1), m.group(2)), "no idea")
            else:
                outputs, n = self.runs[query], self.seen.count(query) - 1   # the n-th request of this text
                text = outputs[n % len(outputs)]
            if hasattr(constraint, "chosen"):
                options = [self.tokenizer.decode(c[:-1]) for c in constraint.candidates]
                pick = options.index(text) if text in options else 0
                out.append(Completion(options[pick], constraint.candidates[pick], True,
                                      math.log(0.9 if text in options else 0.2)))
            else:
                out.append(Completion(text, [], True))
        return out


def cascade(engine, **options) -> CascadeNER:
    """Free-text answers matched to the list (the authors' way), unless constrain=True is asked for."""
    return CascadeNER(engine, engine, Options(**({"constrain": False} | options)))


def test_k_runs_are_fused_longest_span_wins():
    text = "Kobe Bryant joined the Lakers"
    engine = ScriptedEngine(runs={text: ["##Kobe## Bryant joined the ##Lakers##",
                                         "##Kobe Bryant## joined the Lakers",
                                         "Kobe Bryant joined the Lakers"]})
    spans = cascade(engine, k=3).extract([text])[0]
    assert [(s.start, s.end) for s in spans] == [(0, 11), (23, 29)]
    assert cascade(engine, k=3, min_votes=2).extract([text])[0] == []


def test_hierarchical_classification_descends_by_path():
    text = "Kobe played in the NBA"
    engine = ScriptedEngine(runs={text: ["##Kobe## played in the ##NBA##"]}, labels={
        ("Kobe", "person, organization, location"): "Person",
        ("Kobe", "athlete, politician"): "athlete",
        ("NBA", "person, organization, location"): "organization",
        ("NBA", "team, league"): "a league, clearly"})
    doc = cascade(engine, k=1).predict(text, categories=TREE)
    assert [(s.surface(text), s.label, s.path) for s in doc.spans] == [
        ("Kobe", "athlete", ("person", "athlete")),
        ("NBA", "organization", ("organization",))]      # an off-list answer stops the descent, keeps the level
    ner = cascade(engine, k=1)
    ner.predict(text, categories=TREE)
    assert ner.stats.off_list_answers == 1 and ner.stats.classification_prompts == 4


def test_constrained_answers_are_always_on_the_list_with_path_probability(tiny_tokenizer):
    text = "Kobe played in the NBA"
    engine = ScriptedEngine(runs={text: ["##Kobe## played in the ##NBA##"]}, labels={
        ("Kobe", "person, organization, location"): "person", ("Kobe", "athlete, politician"): "athlete",
        ("NBA", "person, organization, location"): "organization", ("NBA", "team, league"): "a league"},
        tokenizer=tiny_tokenizer)
    ner = cascade(engine, k=1, constrain=True)
    doc = ner.predict(text, categories=TREE)
    assert [(s.path, round(s.score, 3)) for s in doc.spans] == [
        (("person", "athlete"), 0.81), (("organization", "team"), 0.18)]
    assert ner.stats.off_list_answers == 0


def test_zero_shot_offers_unknown_and_nothing_is_dropped():
    text = "Kobe met Zorg"
    engine = ScriptedEngine(runs={text: ["##Kobe## met ##Zorg##"]}, labels={
        ("Kobe", "person, location"): "person", ("Zorg", "person, location"): "unknown"})
    doc = cascade(engine, k=1, zero_shot=True).predict(text, labels=["person", "location"])
    assert [(s.label, s.path) for s in doc.spans] == [("person", ("person",)), ("unknown", ("unknown",))]
    assert all(q.endswith("If none of them applied, return unknown.") for q in engine.seen if q.startswith("The ##"))


def test_long_texts_are_segmented_and_offsets_mapped_back():
    first, second = "Kobe is here.", "Paris is big."
    text = f"{first} {second}"
    engine = ScriptedEngine(runs={first: ["##Kobe## is here."], second: ["##Paris## is big."]})
    spans = cascade(engine, k=1, max_segment_chars=15).extract([text])[0]
    assert [s.surface(text) for s in spans] == ["Kobe", "Paris"] and spans[1].start == 14


def test_unalignable_marks_are_counted_not_invented():
    text = "Kobe is here"
    engine = ScriptedEngine(runs={text: ["##Michael Jordan## is here"]})
    ner = cascade(engine, k=1)
    assert ner.extract([text])[0] == [] and ner.stats.unaligned_marks == 1


def test_labels_xor_categories():
    with pytest.raises(ValueError, match="exactly one"):
        cascade(ScriptedEngine(), k=1).predict("x")


def test_tiny_model_end_to_end(tiny_ckpt):
    """Mechanics on a random model: whatever it generates, offsets are valid and labels allowed."""
    ner = CascadeNER.load(model=tiny_ckpt, options=Options(k=2, zero_shot=True))
    texts = ["Kobe Bryant played for the Los Angeles Lakers.", "北京是中国的首都。"]
    docs = ner.predict_batch(texts, categories=TREE)
    for text, doc in zip(texts, docs):
        assert doc.text == text
        for s in doc.spans:
            assert 0 <= s.start < s.end <= len(text) and s.path and s.label == s.path[-1]
            assert s.path[0] in TREE.roots + ["unknown"]
    assert ner.stats.extraction_prompts == 4 and ner.stats.unaligned_marks == 0   # constrained copies


def test_the_pipeline_tags_the_cpus_spans_on_the_device(tiny_ckpt, device):
    """float32, k=3 sampled, a category tree: a GPU gives the CPU's spans and paths."""
    if device.type == "cpu":
        pytest.skip("compares another device against the CPU")
    texts = ["Kobe Bryant played for the Los Angeles Lakers.", "北京是中国的首都。", "Angela Merkel visited Paris."]
    tagged = [CascadeNER.load(model=tiny_ckpt, dtype=torch.float32, device=str(d), options=Options(k=3, seed=5))
              .predict_batch(texts, categories=TREE) for d in ("cpu", device)]
    assert tagged[0] == tagged[1] and any(doc.spans for doc in tagged[0])


@pytest.mark.real
def test_real_model_finds_known_entities_with_valid_offsets(real_ckpt):
    from cascadener.geic.spans import Document
    demos = [Document("Angela Merkel visited Paris on Monday .", [Span(0, 13, "person"), Span(22, 27, "location")]),
             Document("Shares of Apple rose 3 % in New York .", [Span(10, 15, "organization"), Span(28, 36, "location")])]
    ner = CascadeNER.load(model=real_ckpt, options=Options(k=1, prompt_format="instruct"), demos=demos)
    text = "Kobe Bryant played for the Los Angeles Lakers in the NBA ."
    doc = ner.predict(text, labels=["person", "location", "organization", "miscellaneous"])
    found = {(s.surface(text), s.label) for s in doc.spans}
    assert ("Kobe Bryant", "person") in found
    assert all(text[s.start:s.end] == s.surface(text) and s.label for s in doc.spans)


def test_joint_format_classification_reuses_the_extraction_prompts(tiny_ckpt):
    """One adapter for both stages: CascadeNER.load shares one engine, so its prefix cache holds
    each sentence from the extraction prompt when the mentions are classified, and the answers
    are the same as from a cold cache."""
    from cascadener.engine.prefix_cache import PrefixCache
    ner = CascadeNER.load(model=tiny_ckpt, dtype=torch.float32, options=Options(k=1, prompt_format="joint"))
    engine = ner.extractor
    assert ner.classifier is engine
    texts = ["Kobe Bryant played for the Los Angeles Lakers in the NBA with Shaquille O'Neal.",
             "Angela Merkel met the President of France in Paris on Monday to talk about trade."]
    spans = [[Span(0, 11), Span(27, 45)], [Span(0, 13), Span(45, 50)]]

    def classify_counting() -> tuple[list, int]:
        engine.counter = PrefillCounter()
        return ner.classify(texts, spans, TREE), engine.counter.computed

    ner.extract(texts, TREE)
    warm, warm_computed = classify_counting()
    engine.prefix_cache = PrefixCache()
    cold, cold_computed = classify_counting()
    assert [[s.path for s in ss] for ss in warm] == [[s.path for s in ss] for ss in cold]
    sentence_tokens = sum(engine.count_tokens(t) for t in texts)
    assert warm_computed <= cold_computed - sentence_tokens + 2 * len(texts)   # at most the seam re-read


def test_after_forget_a_call_computes_what_a_fresh_pipeline_computes(tiny_ckpt):
    """bfloat16: a prefix cached by an earlier, differently shaped batch rounds differently; after
    forget() the next call's scores are exactly a fresh load's (what a resumed job relies on)."""
    opts = Options(k=1, prompt_format="joint")
    first = ["Kobe Bryant played for the Lakers in Los Angeles.", "Angela Merkel visited Paris."]
    second = ["Kobe Bryant played for the Lakers.", "Angela Merkel visited Paris and Berlin."]
    fresh = CascadeNER.load(model=tiny_ckpt, options=opts).predict_batch(second, labels=["person", "location"])
    ner = CascadeNER.load(model=tiny_ckpt, options=opts)
    ner.predict_batch(first, labels=["person", "location"])
    assert ner.extractor.prefix_cache.size > 0
    ner.forget()
    assert ner.extractor.prefix_cache.size == 0
    assert ner.predict_batch(second, labels=["person", "location"]) == fresh
