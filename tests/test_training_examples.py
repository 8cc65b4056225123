"""Training data: chat examples, the loss mask, and the step plan. No model is run here."""
from __future__ import annotations

from pathlib import Path

import pytest

from cascadener.geic.categorize import Dynamic
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.spans import Document, Span
from cascadener.ner.prompts import ZERO_SHOT_HINT, get_format
from cascadener.qwen2.tokenizer import IM_END, IM_START
from cascadener.training.batches import Plan, collate
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
    for chat in chat_examples(task, docs, tree, get_format(fmt), seed=0):
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

    chats = classification_examples(docs[:1], tree, paper, seed=0, dynamic=Dynamic.static())
    query = ('The ##Kobe Bryant## in the sentence: "##Kobe Bryant## played for the Los Angeles Lakers in the '
             'NBA ." belongs to which entity in the list: person, organization, location?')
    text = tiny_tokenizer.decode(tokenize(chats[0], tiny_tokenizer).ids)
    assert text in (chatml("You are a helpful assistant.", query) + "person" + IM_END,
                    chatml("You are a helpful assistant.", f"{query} {ZERO_SHOT_HINT}") + "person" + IM_END)
    assert [c.answer for c in chats] == ["person", "organization", "organization"]


def test_classification_examples_walk_the_tree_and_hint_never_gives_the_answer_away():
    tree = Hierarchy.from_tree({"person": ["athlete", "politician"], "location": ["city", "country"]})
    docs = [Document("Kobe visited Paris .", [Span(0, 4, "athlete"), Span(13, 18, "city")])] * 30
    chats = classification_examples(docs, tree, get_format("prefix"), seed=1)
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


def fake(length: int) -> TokenizedExample:
    return TokenizedExample(list(range(length)), [False] * (length - 2) + [True, True])


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


def test_collate_right_pads_and_shifts_targets():
    a, b = TokenizedExample([5, 6, 7, 8], [False, False, True, True]), TokenizedExample([9, 10], [False, True])
    batch = collate([a, b], pad_id=0)
    assert batch.inputs.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch.targets.tolist() == [[6, 7, 8], [10, 0, 0]]
    assert batch.pad_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.loss_mask.tolist() == [[False, True, True], [True, False, False]]


def test_joint_task_trains_both_stages_with_the_inference_prompts():
    docs, tree = load_task_data(TRAIN, None, None, seed=0)
    fmt = get_format("joint")
    joint = chat_examples("joint", docs, tree, fmt, seed=0)
    ext, cls = chat_examples("extract", docs, tree, fmt, seed=0), chat_examples("classify", docs, tree, fmt, seed=0)
    assert joint == ext + cls and len(ext) == len(docs) and cls
    hinted = 0
    for doc, ex in zip(docs, ext):       # what pipeline.extract asks: the tree's top level, either hint
        hint = ZERO_SHOT_HINT in ex.messages[-1]["content"]
        hinted += hint
        assert ex.messages == fmt.extraction(doc.text, tree.roots, hint)
    assert 0 < hinted < len(ext) or len(ext) < 4


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
