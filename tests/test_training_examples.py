"""Training data: chat examples, the loss mask, and the step plan. No model is run here."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from cascadener.cli.common import demos_from_args
from cascadener.geic.categorize import Dynamic
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.spans import Document, Span
from cascadener.ner.prompts import ZERO_SHOT_HINT, get_format
from cascadener.qwen2.tokenizer import IM_END, IM_START
from cascadener.training.batches import Packed, Plan, collate, pack, pack_sentence
from cascadener.data.labels import readable_labels
from cascadener.training.examples import (TokenizedExample, chat_examples, classification_examples,
                                          extraction_examples, load_task_data, tokenize)

FIXTURES = Path(__file__).parent / "fixtures" / "training"
TRAIN = FIXTURES / "train.tsv"
FIRST = "Kobe Bryant played for the Los Angeles Lakers in the NBA ."


def chatml(system: str, user: str) -> str:
    return f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"


def answer_text(tok, ex: TokenizedExample) -> str:
    return tok.decode([i for i, m in zip(ex.ids, ex.loss_mask) if m])


@pytest.mark.parametrize("task", ["extract", "classify", "joint"])
@pytest.mark.parametrize("fmt", ["prefix", "paper", "joint"])
def test_loss_mask_covers_exactly_the_answer_and_im_end(tiny_tokenizer, task, fmt):
    docs, tree = load_task_data(TRAIN, None, None, seed=0)
    for chat in (c for group in chat_examples(task, docs, tree, get_format(fmt), seed=0) for c in group):
        ex = tokenize(chat, tiny_tokenizer)
        n_prompt = ex.loss_mask.index(True)
        assert all(ex.loss_mask[n_prompt:]) and not any(ex.loss_mask[:n_prompt])
        # the prompt is token for token what the engine sends at inference
        assert ex.ids[:n_prompt] == tiny_tokenizer.encode(tiny_tokenizer.apply_chat_template(chat.messages))
        assert answer_text(tiny_tokenizer, ex) == chat.answer + IM_END
        assert ex.n_targets == len(ex) - n_prompt


def test_paper_format_training_strings_are_byte_exact(tiny_tokenizer):
    docs, tree = load_task_data(TRAIN, None, None, seed=0)
    assert docs[0].text == FIRST and tree.roots == ["person", "organization", "location"]
    paper = get_format("paper")

    ext = tokenize(extraction_examples(docs[:1], paper)[0], tiny_tokenizer)
    marked = "##Kobe Bryant## played for the ##Los Angeles Lakers## in the ##NBA## ."
    assert tiny_tokenizer.decode(ext.ids) == chatml("You are a helpful assistant.", FIRST) + marked + IM_END

    chats = [c for _, c in classification_examples(docs[:1], tree, paper, seed=0, dynamic=Dynamic.static())]
    query = ('The ##Kobe Bryant## in the sentence: "##Kobe Bryant## played for the Los Angeles Lakers in the '
             'NBA ." belongs to which entity in the list: person, organization, location?')
    text = tiny_tokenizer.decode(tokenize(chats[0], tiny_tokenizer).ids)
    assert text in (chatml("You are a helpful assistant.", query) + "person" + IM_END,
                    chatml("You are a helpful assistant.", f"{query} {ZERO_SHOT_HINT}") + "person" + IM_END)
    assert [c.answer for c in chats] == ["person", "organization", "organization"]


def test_classification_examples_walk_the_tree_and_hint_never_gives_the_answer_away():
    tree = Hierarchy.from_tree({"person": ["athlete", "politician"], "location": ["city", "country"]})
    docs = [Document("Kobe visited Paris .", [Span(0, 4, "athlete"), Span(13, 18, "city")])] * 30
    chats = [c for _, c in classification_examples(docs, tree, get_format("prefix"), seed=1)]
    assert len(chats) == 30 * 2 * 2                         # every mention at both levels
    hinted = [c for c in chats if ZERO_SHOT_HINT in c.messages[-1]["content"]]
    assert all(c.answer != "unknown" for c in chats if c not in hinted)
    assert any(c.answer == "unknown" for c in hinted) and any(c.answer != "unknown" for c in hinted)


def test_labels_become_readable_unless_the_tree_knows_them():
    docs = [Document("Kobe and NBA", [Span(0, 4, "PER"), Span(9, 12, "non-fiction")])]
    assert [s.label for s in readable_labels(docs, None)[0].spans] == ["person", "non fiction"]
    tree = Hierarchy.from_tree(["person", "non-fiction"])
    assert [s.label for s in readable_labels(docs, tree)[0].spans] == ["person", "non-fiction"]


def test_shots_draw_a_stratified_sample():
    docs, _ = load_task_data(TRAIN, None, shots=3, seed=0)
    assert len(docs) == 3
    assert {s.label for d in docs for s in d.spans} == {"person", "organization", "location"}


def fake(length: int) -> Packed:
    return pack([TokenizedExample(list(range(length)), [False] * (length - 2) + [True, True])])


def test_plan_depends_only_on_the_global_batch_and_ranks_split_it():
    examples = [fake(5 + i % 7) for i in range(23)]
    one = Plan(examples, batch_size=2, global_batch=8, seed=3)
    two = Plan(examples, batch_size=2, global_batch=8, seed=3)
    for step in range(7):                                    # past two epoch boundaries
        single = [id(e) for mb in one.micro_batches(step, 0, 1) for e in mb]
        rank0 = [id(e) for mb in two.micro_batches(step, 0, 2) for e in mb]
        rank1 = [id(e) for mb in two.micro_batches(step, 1, 2) for e in mb]
        assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == sorted(single)
    epoch0 = [i for s in range(one.steps_per_epoch) for i in one.global_batch_at(s)]
    assert sorted(epoch0) == list(range(23))                 # an epoch is a permutation
    assert epoch0 != [i for s in range(3, 6) for i in one.global_batch_at(s)]


@st.composite
def example(draw) -> TokenizedExample:
    ids = draw(st.lists(st.integers(1, 4), min_size=1, max_size=8))     # few token values: much sharing
    return TokenizedExample(ids, draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids))))


@given(st.lists(example(), min_size=1, max_size=6))
def test_pack_is_the_examples_trie(examples):
    packed = pack(examples)
    assert all(p < i for i, p in enumerate(packed.parent))                      # parents come first
    path = {}                                                                    # node -> its tokens from the root
    for i, p in enumerate(packed.parent):
        path[i] = (path[p] if p >= 0 else ()) + (packed.ids[i],)
    assert len(set(path.values())) == len(packed)                                # each prefix once ...
    prefixes = {tuple(e.ids[:n]) for e in examples for n in range(1, len(e) + 1)}
    assert set(path.values()) == prefixes                                        # ... and only the examples'
    learned = {tuple(e.ids[:n + 1]) for e in examples for n in range(1, len(e)) if e.loss_mask[n]}
    assert {path[i] for i in range(len(packed)) if packed.learn[i] and packed.parent[i] >= 0} == learned
    assert packed.n_targets == len(learned)
    assert packed.depth == [len(path[i]) - 1 for i in range(len(packed))]


def test_collate_right_pads_and_predicts_each_learned_token_at_its_parent():
    shared = TokenizedExample([5, 6, 7, 8], [False, False, True, True])
    branch = TokenizedExample([5, 6, 9], [False, False, True])
    batch = collate([pack([shared, branch]), pack([TokenizedExample([3, 4], [False, True])])], pad_id=0)
    assert batch.inputs.tolist() == [[5, 6, 7, 8, 9], [3, 4, 0, 0, 0]]
    assert batch.positions.tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]
    assert batch.pad_mask.tolist() == [[True] * 5, [True, True, False, False, False]]
    assert batch.mask[0, 0, 4].tolist() == [True, True, False, False, True]      # 9 sees 5 6 and itself
    assert batch.mask[1, 0, 3].tolist() == [False, False, False, True, False]    # padding sees itself
    # 7 from 6 (slot 1), 8 from 7 (slot 2), 9 from 6 (slot 1), 4 from 3 (row 1, slot 0)
    assert list(zip(batch.predict_at.tolist(), batch.targets.tolist())) == [(1, 7), (2, 8), (1, 9), (5, 4)]


def test_joint_format_trains_each_sentence_under_one_list_as_inference_asks_it():
    docs, tree = load_task_data(TRAIN, None, None, seed=0)
    fmt = get_format("joint")
    joint = chat_examples("joint", docs, tree, fmt, seed=0)                 # one group per sentence
    ext = [c for g in chat_examples("extract", docs, tree, fmt, seed=0) for c in g]
    cls = [c for g in chat_examples("classify", docs, tree, fmt, seed=0) for c in g]
    assert [g[0] for g in joint] == ext and [c for g in joint for c in g[1:]] == cls
    assert len(ext) == len(docs) and cls
    lists = set()
    for doc, (extraction, *questions) in zip(docs, joint):
        head = extraction.messages[-1]["content"]
        types = head.split("\n")[0].removeprefix("Types: ").split(".")[0].split(", ")
        # what pipeline.extract asks under that list; every question on the sentence's mentions
        # begins with it, so they share one key-value prefix at inference and one trie in training
        assert extraction.messages == fmt.extraction(doc.text, types, ZERO_SHOT_HINT in head)
        assert all(q.messages[1]["content"].startswith(head + "\nEntity: ") for q in questions)
        assert {q.answer for q in questions} <= set(types) | {"unknown"}
        lists.add(tuple(types))
    assert len(lists) > 1                                 # drawn per sentence (dynamic categorization)


def test_joint_demonstrations_mark_and_answer_the_offered_types_and_keep_the_shared_prefix():
    demo = Document("Kobe visited Paris .", [Span(0, 4, "person"), Span(13, 18, "location")])
    fmt = get_format("joint", demos=[demo])
    text = "Merkel met Obama ."
    ext = fmt.extraction(text, ["person", "organization"], zero_shot=True)
    roles = [m["role"] for m in ext]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert ext[2]["content"] == "##Kobe## visited Paris ."          # location is not offered: not marked
    assert ext[3]["content"].endswith("Entity: Kobe") and ext[4]["content"] == "person"
    assert ext[-1] == get_format("joint").extraction(text, ["person", "organization"], True)[-1]
    cls = fmt.classification(text, Span(11, 16), ["person", "organization"], True)
    assert cls[:-1] == ext[:-1] and cls[-1]["content"].startswith(ext[-1]["content"])


def test_demonstrations_under_a_category_tree_mark_fine_mentions_under_the_offered_ancestor(tmp_path):
    tree = Hierarchy.from_tree({"location": {"city": {}}, "person": {}})
    file = tmp_path / "demos.jsonl"
    file.write_text('{"text": "Kobe visited Paris .", "entities": [{"start": 0, "end": 4, "label": "person"}, '
                    '{"start": 13, "end": 18, "label": "city"}]}\n', encoding="utf-8")
    demos = demos_from_args(argparse.Namespace(demos=str(file), shots=1, seed=0), tree)
    turns = get_format("joint", demos=demos).extraction("Merkel met Obama .", tree.roots)
    assert turns[2]["content"] == "##Kobe## visited ##Paris## ."        # city answers as location
    assert [t["content"] for t in turns[4:7:2]] == ["person", "location"]


def paths(packed: Packed) -> set[tuple[int, ...]]:
    """The token sequences from the root to each node."""
    out: dict[int, tuple[int, ...]] = {}
    for i, p in enumerate(packed.parent):
        out[i] = (out[p] if p >= 0 else ()) + (packed.ids[i],)
    return set(out.values())


@given(st.lists(example(), min_size=1, max_size=8), st.integers(1, 20))
def test_a_long_sentence_packs_into_bounded_tries_that_hold_every_example(examples, max_tokens):
    packs = pack_sentence(examples, max_tokens)
    for p in packs:       # within the bound, or one example longer than it alone
        assert len(p) <= max_tokens or any(p == pack([e]) and len(e) > max_tokens for e in examples)
    assert all(any(tuple(e.ids) in paths(p) for p in packs) for e in examples)
    assert sum(p.n_targets for p in packs) >= pack(examples).n_targets     # shared pairs may repeat
    assert len(packs) == 1 or sum(map(len, packs)) > max_tokens
