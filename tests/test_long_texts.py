"""A long text tags in bounded prompts: each mention is classified in its extraction segment,
never the whole text, and every span comes back at the text's own offsets."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, strategies as st

from cascadener.geic.segment import segments
from cascadener.geic.spans import Span
from cascadener.ner import pipeline
from cascadener.ner.pipeline import CascadeNER, Options, part_groups
from cascadener.ner.prompts import PromptFormat

WORDS = "kobe bryant played for the los angeles lakers and angela merkel visited paris berlin and tokyo".split()
MAX_CHARS = 100


@dataclass
class Recording:
    """The pipeline's prompt format, noting the text of every extraction prompt and the
    (context, span) of every classification prompt."""
    inner: PromptFormat
    extracted: list[str] = field(default_factory=list)
    classified: list[tuple[str, Span]] = field(default_factory=list)
    prompts: list[list[dict]] = field(default_factory=list)

    def extraction(self, text, *args):
        self.extracted.append(text)
        return self.inner.extraction(text, *args)

    def classification(self, text, span, *args):
        self.classified.append((text, span))
        self.prompts.append(self.inner.classification(text, span, *args))
        return self.prompts[-1]


@given(st.lists(st.text(alphabet="ab. ", max_size=40), max_size=4), st.integers(2, 12), st.integers(1, 4))
def test_texts_go_to_the_engine_in_parts_of_boundedly_many_segments(texts, max_chars, per_call):
    groups = part_groups(texts, max_chars, per_call)
    parts = [p for g in groups for p in g]
    owners = [i for i, _, _ in parts]
    assert owners == sorted(owners) and set(owners) == set(range(len(texts)))
    for i, text in enumerate(texts):            # each segment of a text lies in exactly one of its parts
        mine = [(s, e) for j, s, e in parts if j == i]
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:]))
        assert all(sum(s <= a and b <= e for s, e in mine) == 1 for a, b in segments(text, max_chars))
    for g in groups:                            # and a group holds at most per_call of them
        held = sum(s <= a and b <= e for i, s, e in g for a, b in segments(texts[i], max_chars))
        assert held <= per_call


@pytest.mark.parametrize("prompt_format, per_call", [("paper", 1024), ("joint", 2)])
def test_a_text_without_sentence_ends_is_classified_segment_by_segment(tiny_ckpt, tiny_tokenizer, monkeypatch,
                                                                      prompt_format, per_call):
    """One call for the whole text, or (joint) parts of two segments each, every part a text of its own."""
    monkeypatch.setattr(pipeline, "SEGMENTS_PER_CALL", per_call)
    text = " ".join(WORDS[i * 7 % len(WORDS)] for i in range(100))           # ~600 characters, no full stop
    ner = CascadeNER.load(model=tiny_ckpt, dtype=torch.float32,
                          options=Options(k=1, prompt_format=prompt_format, max_segment_chars=MAX_CHARS))
    ner.format = recording = Recording(ner.format)
    doc = ner.predict(text, labels=["person", "location"])

    pieces = segments(text, MAX_CHARS)
    # every segment asked, a repeated one once per call (this text repeats itself)
    assert len(pieces) > 5 and set(recording.extracted) == {text[s:e] for s, e in pieces}
    assert len(recording.extracted) < len(pieces) if per_call >= len(pieces) else True
    assert doc.spans and len(recording.classified) == len(doc.spans)       # the random model marks plenty
    for span in doc.spans:                      # found in one segment, asked about in exactly that one
        s, e = next(p for p in pieces if p[0] <= span.start and span.end <= p[1])
        assert (text[s:e], Span(span.start - s, span.end - s)) in recording.classified
    whole = len(tiny_tokenizer.encode(text))
    longest = max(len(tiny_tokenizer.encode(tiny_tokenizer.apply_chat_template(p, add_generation_prompt=True)))
                  for p in recording.prompts)
    assert longest < whole                      # a prompt carries a segment, not the text
