"""Labelled documents -> chat examples -> token ids with a loss mask.

Extraction: one example per sentence, answered by the sentence with its entities wrapped in ##.
Classification: one example per gold mention and hierarchy level, with candidate lists rewritten by
dynamic categorization (geic/categorize.py). Joint: both, for one adapter serving both stages.
The joint prompt format trains on views instead (geic.categorize.views; a mixture, mixture.py,
draws them across datasets): one offered list per sentence, the extraction answer marking only the
mentions of offered types (view_examples). Every prompt string comes from prompts.py, so what the
adapters learn is exactly what infer.py will ask.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from cascadener.data.labels import dataset_types, load_labelled, on_tree
from cascadener.geic.categorize import Dynamic, View, examples as categorized, views
from cascadener.geic.hierarchy import UNKNOWN, Hierarchy
from cascadener.geic.sampling import few_shot
from cascadener.geic.spans import Document
from cascadener.ner.prompts import Message, PromptFormat, top_list
from cascadener.qwen2.tokenizer import IM_END, Tokenizer

# Share of classification examples (besides all "unknown" ones) whose prompt carries the zero-shot
# hint "If none of them applied, return unknown.": with it on some examples that still have their
# answer listed, the hint allows "unknown" without giving it away, and without the hint the
# answer is always on the list, as at inference without --zero-shot.
HINT_RATE = Dynamic().hint


@dataclass(frozen=True)
class ChatExample:
    messages: list[Message]     # the conversation up to the user's query
    answer: str                 # what the assistant should reply
    learn_turns: bool = False   # the assistant turns in `messages` are targets too: one conversation
                                # down a category tree trains the answer at every level
    head: list[Message] | None = None   # the conversation all prompts about this sentence begin with
                                        # (PromptFormat.head): an activated adapter acts after it


@dataclass(frozen=True)
class TokenizedExample:
    ids: list[int]
    loss_mask: list[bool]       # True on the tokens to learn: the answer and its closing <|im_end|>
                                # (with learn_turns, the earlier assistant turns too)
    adapt_from: int = 0         # an activated adapter acts on tokens adapt_from.. only (0: all)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        """Tokens the loss is taken on (token t is predicted at position t - 1)."""
        return sum(self.loss_mask[1:])


# --- reading ------------------------------------------------------------------------------------

def load_task_data(data: str | Path, categories: str | Path | None, shots: int | None,
                   seed: int) -> tuple[list[Document], Hierarchy]:
    """Training documents (optionally a stratified few-shot sample) and the category tree: the
    given file, else the dataset's own types as one flat level."""
    tree = Hierarchy.load(categories) if categories else None
    docs = load_labelled(data, tree)
    if shots is not None:
        docs = few_shot(docs, shots, seed)
    return docs, tree or Hierarchy.flat(dataset_types(docs))


# --- chat examples ------------------------------------------------------------------------------

def extraction_examples(docs: Sequence[Document], fmt: PromptFormat) -> list[ChatExample]:
    """For a format whose extraction prompt lists no types (the joint format's come from views)."""
    return [ChatExample(fmt.extraction(d.text), fmt.extraction_answer(d)) for d in docs]


def classification_examples(docs: Sequence[Document], tree: Hierarchy, fmt: PromptFormat, seed: int,
                            dynamic: Dynamic = Dynamic()) -> list[tuple[str, ChatExample]]:
    """(sentence, example) per gold mention and level."""
    rng = random.Random(f"hint-{seed}")
    out = []
    for ex in categorized(docs, tree, seed, dynamic):
        hint = ex.answer == UNKNOWN or rng.random() < HINT_RATE
        out.append((ex.text, ChatExample(fmt.classification(ex.text, ex.span, ex.candidates, hint, ex.history),
                                         fmt.classification_answer(ex.answer))))
    return out


def mentions_on_tree(docs: Sequence[Document], tree: Hierarchy) -> list[Document]:
    """The documents with every mention whose label the tree does not know left out (warned)."""
    kept = [replace(d, spans=[s for s in d.spans if on_tree(tree, s.label)]) for d in docs]
    dropped = sum(len(d.spans) for d in docs) - sum(len(d.spans) for d in kept)
    if dropped:
        off = sorted({s.label for d in docs for s in d.spans if not on_tree(tree, s.label)})
        print(f"warning: {dropped} mentions have labels off the category tree and are left out: "
              f"{', '.join(off[:10])}", file=sys.stderr)
    return kept


def chat_examples(task: str, docs: Sequence[Document], tree: Hierarchy, fmt: PromptFormat,
                  seed: int) -> list[list[ChatExample]]:
    """"extract", "classify", or "joint": both sets, for one adapter that serves both stages.
    One group of examples per sentence: training packs a sentence's examples into one sequence.

    A format whose extraction prompt lists the types (joint) asks it and every mention's first
    question under one type list at inference, so there a sentence trains as one view: one list,
    drawn from its own tree by dynamic categorization, for its extraction and its questions. Its
    examples then share their head (the list and the sentence) and pack into one short trie;
    with a list drawn per question they would share only the system turn."""
    if fmt.lists_types:
        return [view_examples(v, task, fmt) for v in views(mentions_on_tree(docs, tree), tree, seed)]
    groups: dict[str, list[ChatExample]] = {}
    if task in ("extract", "joint"):
        for doc, example in zip(docs, extraction_examples(docs, fmt)):
            groups.setdefault(doc.text, []).append(example)
    if task in ("classify", "joint"):
        for text, example in classification_examples(mentions_on_tree(docs, tree), tree, fmt, seed):
            groups.setdefault(text, []).append(example)
    return list(groups.values())


def view_examples(view: View, task: str, fmt: PromptFormat) -> list[ChatExample]:
    """A view's conversations: the sentence marked with the mentions of offered types (with every
    mention when the format's extraction prompt lists no types), and the questions on its mentions.
    A question that the next level's conversation already asks, with the same list and answer, as
    an earlier turn is not asked again: that conversation learns its turns (learn_turns)."""
    out = []
    if task in ("extract", "joint"):
        marked = view.marked if fmt.lists_types else view.mentions
        out.append(ChatExample(fmt.extraction(view.text, view.types, view.zero_shot),
                               fmt.extraction_answer(Document(view.text, list(marked))),
                               head=fmt.head(view.text, view.types, view.zero_shot)))
    if task in ("classify", "joint"):
        questions = view.examples
        for e, after in zip(questions, [*questions[1:], None]):
            asked_again = (after is not None and after.span == e.span and after.history
                           and after.history[-1] == (e.candidates, e.answer))
            if not asked_again:
                out.append(ChatExample(fmt.classification(view.text, e.span, e.candidates, view.zero_shot, e.history),
                                       fmt.classification_answer(e.answer), learn_turns=True,
                                       head=fmt.head(view.text, top_list(e.candidates, e.history), view.zero_shot)))
    return out


# --- tokens -------------------------------------------------------------------------------------

def tokenize(example: ChatExample, tokenizer: Tokenizer, activated: bool = False) -> TokenizedExample:
    # The prompt is encoded alone, exactly as the engine encodes it at inference; the answer follows
    # as its own tokens, closed by <|im_end|>, the stop token the model must learn to emit. An
    # activated adapter starts where the engine starts it: after the head (Tokenizer.head_length).
    end = tokenizer.token_to_id(IM_END)
    if end is None:
        raise ValueError(f"the tokenizer has no {IM_END} token: not a ChatML (Qwen2) tokenizer")
    prompt = tokenizer.encode(tokenizer.apply_chat_template(example.messages, add_generation_prompt=True))
    answer = tokenizer.encode(example.answer) + [end]
    mask = [False] * len(prompt)
    if example.learn_turns:
        for j, m in enumerate(example.messages):
            if m["role"] != "assistant":
                continue
            # the turn's tokens, where the whole prompt has them (special tokens split the text,
            # so a turn encodes alone as it does in place; checked, never assumed)
            start = len(tokenizer.encode(tokenizer.apply_chat_template(example.messages[:j])))
            turn = tokenizer.encode(m["content"]) + [end]
            if prompt[start:start + len(turn)] == turn:
                mask[start:start + len(turn)] = [True] * len(turn)
    adapt_from = 0
    if activated:
        if example.head is None:
            raise ValueError("an activated adapter trains on prompts with a head (the joint prompt format)")
        adapt_from = tokenizer.head_length(prompt, example.head)
    return TokenizedExample(prompt + answer, mask + [True] * len(answer), adapt_from)


def tokenize_all(groups: Sequence[Sequence[ChatExample]], tokenizer: Tokenizer, max_len: int,
                 activated: bool = False) -> tuple[list[list[TokenizedExample]], int]:
    """Each sentence's tokenized examples no longer than max_len tokens (sentences left with none
    dropped), and how many examples were longer (left out)."""
    out, too_long = [], 0
    for group in groups:
        tokenized = [tokenize(e, tokenizer, activated) for e in group]
        kept = [t for t in tokenized if len(t) <= max_len]
        too_long += len(tokenized) - len(kept)
        if kept:
            out.append(kept)
    return out, too_long
