"""Prompt formats: `paper` must be byte-identical to the authors' training strings."""
from __future__ import annotations

import pytest

from cascadener.geic.spans import Document, Span
from cascadener.ner.prompts import (PAPER_SYSTEM, ZERO_SHOT_HINT, get_format, match_label, occurrence, top_list)
from cascadener.qwen2.tokenizer import IM_END, IM_START

TEXT = "Kobe was in NBA with Kobe"
KOBE2 = Span(21, 25)


def chatml(system: str, user: str, answer: str | None = None) -> str:
    s = f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
    return s + (f"{answer}{IM_END}\n" if answer is not None else "")


def render(tok, messages) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=True)


def test_paper_extraction_is_the_bare_sentence(tiny_tokenizer):
    fmt = get_format("paper")
    assert render(tiny_tokenizer, fmt.extraction(TEXT)) == chatml("You are a helpful assistant.", TEXT)
    doc = Document(TEXT, [Span(0, 4, "person"), Span(12, 15, "organization"), KOBE2])
    assert fmt.extraction_answer(doc) == "##Kobe## was in ##NBA## with ##Kobe##"


def test_paper_classification_is_byte_identical(tiny_tokenizer):
    fmt = get_format("paper")
    user = ('The ##Kobe## in the sentence: "Kobe was in NBA with ##Kobe##" belongs to which entity in the list: '
            "person, location, organization?")
    msgs = fmt.classification(TEXT, KOBE2, ["person", "location", "organization"], zero_shot=False)
    assert render(tiny_tokenizer, msgs) == chatml(PAPER_SYSTEM, user)
    zero = fmt.classification(TEXT, KOBE2, ["person", "location", "organization"], zero_shot=True)
    assert zero[-1]["content"] == f"{user} If none of them applied, return unknown."
    assert ZERO_SHOT_HINT == "If none of them applied, return unknown."


def test_system_prompt_is_a_parameter(tiny_tokenizer):
    fmt = get_format("paper", system="Custom.")
    assert render(tiny_tokenizer, fmt.extraction("x")).startswith(f"{IM_START}system\nCustom.{IM_END}")


def test_prefix_format_shares_everything_but_the_mention(tiny_tokenizer):
    fmt = get_format("prefix")
    a = render(tiny_tokenizer, fmt.classification(TEXT, Span(0, 4), ["person", "location"], False))
    b = render(tiny_tokenizer, fmt.classification(TEXT, Span(12, 15), ["person", "location"], False))
    common = len(a) - len(a.split("Entity: ")[-1])
    assert a[:common] == b[:common] and a != b
    assert "occurrence 1 of 2" in a


@pytest.mark.parametrize("zero_shot", [False, True])
def test_joint_extraction_prompt_is_the_head_of_every_classification_prompt(tiny_tokenizer, zero_shot):
    """One adapter for both stages: extraction's user turn is what each top-level classification
    of the text begins with, so its cached tokens serve them (up to the BPE merge at the seam)."""
    fmt, types = get_format("joint"), ["person", "location"]
    ext = fmt.extraction(TEXT, types, zero_shot)
    head = ext[-1]["content"]
    assert head == f"Types: person, location.{' ' + ZERO_SHOT_HINT if zero_shot else ''}\nSentence: {TEXT}"
    for span in (Span(0, 4), Span(12, 15), KOBE2):
        cls = fmt.classification(TEXT, span, types, zero_shot)
        assert cls[:-1] == ext[:-1] and cls[-1]["content"].startswith(head + "\nEntity: ")
    ext_text = render(tiny_tokenizer, ext)
    a = tiny_tokenizer.encode(ext_text)
    b = tiny_tokenizer.encode(render(tiny_tokenizer, fmt.classification(TEXT, KOBE2, types, zero_shot)))
    shared = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert shared >= len(tiny_tokenizer.encode(ext_text[:ext_text.index(head) + len(head)])) - 1
    # the head an activated adapter leaves to the base: the extraction conversation, for every level
    history = [(types, "location")]
    assert fmt.head(TEXT, top_list(["city", "country"], history), zero_shot) == ext
    deeper = render(tiny_tokenizer, fmt.classification(TEXT, Span(12, 15), ["city", "country"], zero_shot, history))
    assert deeper.startswith(ext_text[:ext_text.index(head) + len(head)])
    assert get_format("prefix").head(TEXT, types, zero_shot) is None
    # the other formats take the types and ignore them; the joint one needs them
    assert get_format("prefix").extraction(TEXT, types) == get_format("prefix").extraction(TEXT)
    with pytest.raises(ValueError, match="top level of the category tree"):
        fmt.extraction(TEXT)


@pytest.mark.parametrize("zero_shot", [False, True])
def test_prefix_format_walks_down_the_tree_as_one_conversation(tiny_tokenizer, zero_shot):
    """Each finer level's prompt is the coarser prompt, its answer, and a follow-up turn: the
    whole coarser prompt is a prefix a cache can reuse, and the answer is what the model said."""
    fmt = get_format("prefix")
    walk = [(["person", "location"], "location"), (["city", "country"], "city"), (["capital", "town"], None)]
    prompts, history = [], []
    for cands, answer in walk:
        prompts.append(render(tiny_tokenizer, fmt.classification(TEXT, Span(12, 15), cands, zero_shot, history)))
        history.append((cands, answer))
    for coarse, fine, (_, answer) in zip(prompts, prompts[1:], walk):
        assert fine.startswith(coarse + answer + IM_END)
    hint = f" {ZERO_SHOT_HINT}" if zero_shot else ""
    assert prompts[1].endswith(f"{IM_START}user\nTypes: city, country.{hint}{IM_END}\n{IM_START}assistant\n")
    assert prompts[0].count("Sentence: ") == prompts[2].count("Sentence: ") == 1


def test_paper_format_asks_every_level_afresh():
    fmt = get_format("paper")
    plain = fmt.classification(TEXT, KOBE2, ["city", "country"], False)
    assert fmt.classification(TEXT, KOBE2, ["city", "country"], False, [(["person", "location"], "location")]) == plain


def test_instruct_format_uses_demos_as_turns(tiny_tokenizer):
    demo = Document("Paris is big", [Span(0, 5, "location")])
    fmt = get_format("instruct", demos=[demo])
    msgs = fmt.extraction(TEXT)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "##Paris## is big" and msgs[-1]["content"] == TEXT
    cls = fmt.classification(TEXT, Span(0, 4), ["person", "location"], zero_shot=True)
    assert "person, location, unknown" in cls[0]["content"]
    assert cls[2]["content"] == "location"


def test_occurrence_and_label_matching():
    assert occurrence(TEXT, KOBE2) == (2, 2) and occurrence(TEXT, Span(12, 15)) == (1, 1)
    assert match_label(" Person.", ["person", "location"]) == "person"
    assert match_label("geo-political  entity\nbecause", ["geo-political entity"]) == "geo-political entity"
    assert match_label("a city", ["city"]) is None


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prompt format 'fancy'"):
        get_format("fancy")
