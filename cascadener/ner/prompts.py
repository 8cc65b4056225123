"""Every prompt CascadeNER sends or trains on, as small templates. A prompt string lives here only,
so training (train.py) and inference (infer.py, eval.py) can never drift apart.

Four formats:

* ``paper``   — byte-identical to the strings the authors' released checkpoints were trained on
  (their stage1/stage2 transformation scripts): the extraction query is the bare sentence; the
  classification query is
  ``The ##{entity}## in the sentence: "{sentence with this mention in ##}" belongs to which entity in the list: {a, b, c}?``
  Their system prompt is a parameter ("You are a helpful assistant." in their code).
* ``instruct`` — for a plain instruct model with no NER training: a short task instruction and
  few-shot demonstrations (chosen by the stratified sampler) as earlier chat turns.
* ``prefix``  — the project's own format for its adapters: everything shared comes first
  (instruction, type list, plain sentence) and the per-mention part last, so a prefix cache can
  reuse the rest across the mentions of a sentence and the sentences of a corpus. Down a category
  tree the classification is one conversation: each finer level is a follow-up turn offering the
  children of the previous answer, so a level's prompt extends the one before it and reuses all
  of it.
* ``joint``   — ``prefix`` for ONE adapter trained on both tasks (train.py --task joint). The
  extraction prompt is the classification prompt's shared head, type list and sentence, with
  nothing after it; a classification prompt adds the mention. With one model serving both stages
  the sentence's keys and values, computed for extraction, are reused by every classification of
  its mentions, and one model is resident instead of two.

A classification prompt may receive the `history` of one mention's walk down the tree so far,
((candidates, answer) per coarser level); the paper and instruct formats ask every level afresh,
as the authors do, and ignore it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from cascadener.geic import markup
from cascadener.geic.hierarchy import UNKNOWN
from cascadener.geic.spans import Document, Span

Message = dict[str, str]
History = Sequence[tuple[Sequence[str], str]]   # (candidates offered, answer given) per coarser level
PAPER_SYSTEM = "You are a helpful assistant."
ZERO_SHOT_HINT = "If none of them applied, return unknown."


def chat(system: str | None, turns: Sequence[tuple[str, str]], query: str) -> list[Message]:
    """System turn (None = the checkpoint's default), earlier (user, assistant) turns, then the query."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": query}]


def occurrence(text: str, span: Span) -> tuple[int, int]:
    """(k, n): the span is the k-th of n occurrences of its surface string in the text (1-based)."""
    surface, k, n, i = span.surface(text), 0, 0, text.find(span.surface(text))
    while i != -1:
        n += 1
        k = n if i == span.start else k
        i = text.find(surface, i + 1)
    return k, n


@dataclass(frozen=True)
class PromptFormat:
    """Base: the extraction and classification conversations, and their training answers."""
    system: str | None = None
    demos: tuple[Document, ...] = field(default=(), compare=False)
    name = "base"
    lists_types = False     # the extraction prompt lists the types: only mentions of those are marked

    def extraction(self, text: str, types: Sequence[str] = (), zero_shot: bool = False) -> list[Message]:
        """`types` and `zero_shot` (the top level of the category tree and whether "unknown" is
        offered) are read only by the joint format, whose extraction prompt lists them."""
        raise NotImplementedError

    def classification(self, text: str, span: Span, candidates: Sequence[str], zero_shot: bool,
                       history: History = ()) -> list[Message]:
        raise NotImplementedError

    def extraction_answer(self, doc: Document) -> str:
        return markup.render(doc.text, doc.spans)

    def classification_answer(self, label: str) -> str:
        return label

    def head(self, text: str, types: Sequence[str], zero_shot: bool) -> list[Message] | None:
        """The conversation that every prompt about `text` under the top-level list `types` begins
        with, the prompts continuing or closing its last message (an activated adapter leaves it
        to the base model: cascadener.qwen2.lora); None when the format's prompts share none."""
        return None


def top_list(candidates: Sequence[str], history: History) -> Sequence[str]:
    """The top-level list a classification conversation began with (the first level's candidates)."""
    return history[0][0] if history else candidates


@dataclass(frozen=True)
class PaperFormat(PromptFormat):
    system: str | None = PAPER_SYSTEM
    name = "paper"

    def extraction(self, text: str, types: Sequence[str] = (), zero_shot: bool = False) -> list[Message]:
        return chat(self.system, (), text)

    def classification(self, text: str, span: Span, candidates: Sequence[str], zero_shot: bool,
                       history: History = ()) -> list[Message]:
        marked = markup.render(text, [Span(span.start, span.end)])
        query = (f'The ##{span.surface(text)}## in the sentence: "{marked}" belongs to which entity in the list: '
                 f'{", ".join(candidates)}?')
        return chat(self.system, (), f"{query} {ZERO_SHOT_HINT}" if zero_shot else query)


EXTRACT_INSTRUCTION = (
    "Copy the sentence exactly, character for character, and wrap every named entity in ## markers, "
    "like this: ##Kobe Bryant## played for the ##Los Angeles Lakers##. Named entities are names of "
    "people, places, organizations, products, works, events and similar specific things. Do not add, "
    "drop or change any other text. Reply with the marked sentence only.")


@dataclass(frozen=True)
class InstructFormat(PromptFormat):
    """For an instruct model with no NER training: instruction in the system turn, demos as turns."""
    name = "instruct"

    def extraction(self, text: str, types: Sequence[str] = (), zero_shot: bool = False) -> list[Message]:
        turns = [(d.text, markup.render(d.text, d.spans)) for d in self.demos]
        return chat(EXTRACT_INSTRUCTION if self.system is None else self.system, turns, text)

    def classification(self, text: str, span: Span, candidates: Sequence[str], zero_shot: bool,
                       history: History = ()) -> list[Message]:
        options = list(candidates) + ([UNKNOWN] if zero_shot else [])
        instruction = ("Classify the entity marked with ## in the sentence. Answer with exactly one type "
                       f"from this list and nothing else: {', '.join(options)}.")
        marked = markup.render(text, [Span(span.start, span.end)])
        turns = [self._demo_turn(d, s, options) for d in self.demos for s in d.spans if s.label in candidates][:8]
        return chat(instruction if self.system is None else self.system, turns,
                    f"Sentence: {marked}\nEntity: {span.surface(text)}\nType:")

    @staticmethod
    def _demo_turn(doc: Document, span: Span, options: Sequence[str]) -> tuple[str, str]:
        marked = markup.render(doc.text, [Span(span.start, span.end)])
        return f"Sentence: {marked}\nEntity: {span.surface(doc.text)}\nType:", span.label


@dataclass(frozen=True)
class PrefixFormat(PromptFormat):
    """Shared content first (type list, plain sentence), the mention last: prefix-cache friendly."""
    system: str | None = PAPER_SYSTEM
    name = "prefix"

    def extraction(self, text: str, types: Sequence[str] = (), zero_shot: bool = False) -> list[Message]:
        return chat(self.system, (), f"Mark the named entities with ##.\nSentence: {text}")

    def classification(self, text: str, span: Span, candidates: Sequence[str], zero_shot: bool,
                       history: History = ()) -> list[Message]:
        lists = [c for c, _ in history] + [candidates]
        asks = [self._types(c, zero_shot) for c in lists]
        asks[0] = self._head(lists[0], zero_shot, text) + self._entity(text, span)
        return chat(self.system, self._demo_turns(lists[0], zero_shot) + list(zip(asks, [a for _, a in history])),
                    asks[-1])

    def _demo_turns(self, types: Sequence[str], zero_shot: bool) -> list[tuple[str, str]]:
        return []

    @staticmethod
    def _entity(text: str, span: Span) -> str:
        k, n = occurrence(text, span)
        return f"\nEntity: {span.surface(text)}" + (f" (occurrence {k} of {n})" if n > 1 else "")

    @staticmethod
    def _types(types: Sequence[str], zero_shot: bool) -> str:
        return f"Types: {', '.join(types)}.{f' {ZERO_SHOT_HINT}' if zero_shot else ''}"

    @classmethod
    def _head(cls, types: Sequence[str], zero_shot: bool, text: str) -> str:
        """What every classification of the text's mentions at the top level begins with."""
        return f"{cls._types(types, zero_shot)}\nSentence: {text}"


@dataclass(frozen=True)
class JointFormat(PrefixFormat):
    """One adapter for both stages: extraction asks with the head of the classification prompt.

    Demonstrations are earlier turns of both kinds, the same for every prompt under one type list
    (so extraction and classification still share their prefix): each demo sentence marked with
    the mentions of offered types, then questions on those mentions, at most MAX_DEMO_MENTIONS."""
    name = "joint"
    lists_types = True

    def extraction(self, text: str, types: Sequence[str] = (), zero_shot: bool = False) -> list[Message]:
        if not types:
            raise ValueError("the joint prompt format lists the types in the extraction prompt: "
                             "pass the top level of the category tree")
        return chat(self.system, self._demo_turns(types, zero_shot), self._head(types, zero_shot, text))

    def head(self, text: str, types: Sequence[str], zero_shot: bool) -> list[Message]:
        """The extraction prompt's conversation: a classification prompt adds the mention to it."""
        return self.extraction(text, types, zero_shot)

    def _demo_turns(self, types: Sequence[str], zero_shot: bool) -> list[tuple[str, str]]:
        turns, asked = [], 0
        for d in self.demos:
            offered = [(s, offered_name(s, types)) for s in sorted(d.spans)]
            offered = [(s, name) for s, name in offered if name is not None]
            head = self._head(types, zero_shot, d.text)
            turns.append((head, markup.render(d.text, [s for s, _ in offered])))
            for s, name in offered[:MAX_DEMO_MENTIONS - asked]:
                turns.append((head + self._entity(d.text, s), name))
            asked = min(MAX_DEMO_MENTIONS, asked + len(offered))
        return turns


MAX_DEMO_MENTIONS = 8


def offered_name(span: Span, types: Sequence[str]) -> str | None:
    """The offered type a demonstration's mention answers: its label, or the first node of its
    path, that is on the list; None when its type is not offered (then it is not marked)."""
    return next((t for t in (span.label, *span.path) if t in types), None)


PROMPT_FORMATS: dict[str, type[PromptFormat]] = {f.name: f for f in (PaperFormat, InstructFormat, PrefixFormat, JointFormat)}


def get_format(name: str, system: str | None = None, demos: Sequence[Document] = ()) -> PromptFormat:
    if name not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; choose from {sorted(PROMPT_FORMATS)}")
    cls = PROMPT_FORMATS[name]
    kwargs = {"demos": tuple(demos)}
    if system is not None:
        kwargs["system"] = system
    return cls(**kwargs)


def match_label(answer: str, candidates: Sequence[str]) -> str | None:
    """Map a generated answer to one candidate (case-, space- and punctuation-insensitive), or None."""
    def norm(s: str) -> str:
        return " ".join(s.strip().strip(".\"'`*:").lower().split())
    wanted = norm(answer)
    by_norm = {norm(c): c for c in candidates}
    if wanted in by_norm:
        return by_norm[wanted]
    first_line = norm(answer.splitlines()[0]) if answer.strip() else ""
    return by_norm.get(first_line)
