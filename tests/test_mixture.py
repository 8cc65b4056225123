"""Training mixtures: the file, the sources (slices, samples, languages), the views, and the
examples the joint format trains on. No model is run here."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from cascadener.geic import markup
from cascadener.geic.categorize import Dynamic, views
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.spans import Document, Span
from cascadener.ner.prompts import get_format
from cascadener.qwen2.tokenizer import IM_END
from cascadener.training.examples import tokenize, view_examples
from cascadener.training.mixture import (MixtureError, load_mixture, load_source, parse_mixture, read_mixture,
                                         Source, repeats)
from data_helpers import datasets_dir

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
TRAIN = FIXTURES / "training" / "train.tsv"
ZH = FIXTURES / "data" / "wikiann_zh.tsv"
TREE = FIXTURES / "hierarchy_small.json"


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mix.toml"
    path.write_text(text, encoding="utf-8")
    return path


MIX = f"""
[[source]]
name = "conll"
path = "{TRAIN}"
sample = 4

[[source]]
name = "zh"
path = "{ZH}"
lang = "zh"
label_map = {{ PER = "people" }}
weight = 1.5
"""


# --- the file -------------------------------------------------------------------------------------

def test_toml_and_json_describe_the_same_mixture(tmp_path):
    toml = read_mixture(write_toml(tmp_path, MIX))
    as_json = {"source": [{"name": "conll", "path": str(TRAIN), "sample": 4},
                          {"name": "zh", "path": str(ZH), "lang": "zh", "label_map": {"PER": "people"}, "weight": 1.5}]}
    (tmp_path / "mix.json").write_text(json.dumps(as_json))
    assert read_mixture(tmp_path / "mix.json") == toml
    assert [s.name for s in toml.sources] == ["conll", "zh"] and toml.sources[1].weight == 1.5


def test_relative_paths_are_under_the_data_root(tmp_path, monkeypatch):
    path = write_toml(tmp_path, '[[source]]\npath = "wikiann/zh/train-zh.tsv"\ncategories = "tree.json"\n')
    monkeypatch.setenv("CASCADENER_DATA", "/data")
    assert read_mixture(path).root == Path("/data")
    monkeypatch.delenv("CASCADENER_DATA")
    assert read_mixture(path).root == tmp_path
    with pytest.raises(MixtureError, match=f"no file {tmp_path}/wikiann/zh/train-zh.tsv"):
        load_mixture(read_mixture(path), 0)


@pytest.mark.parametrize("text, message", [
    ('[[source]]\nname = "x"\n', "source 1 (x): 'path' (the data file) is required"),
    ('[[source]]\npath = "a"\nsentence = 3\n', "source 1 (a): unknown key 'sentence'"),
    ('[[source]]\npath = "a"\nweight = 0\n', "weight must be a number"),
    ('[[source]]\npath = "a"\nsample = -1\n', "sample must be a whole number >= 1"),
    ('[[source]]\npath = "a"\nplain = 2\n', "plain is a probability in [0, 1], got 2"),
    ('[[source]]\npath = "a"\n[[source]]\npath = "a"\n', "two sources are named 'a'"),
    ('[dynamic]\nmixx = 0.1\n[[source]]\npath = "a"\n', "[dynamic] takes"),
    ('[dynamic]\nnest = "a"\n[[source]]\npath = "a"\n', "[dynamic] nest is a probability in [0, 1], got 'a'"),
    ('[dynamic]\nnest = 1.5\n[[source]]\npath = "a"\n', "[dynamic] nest is a probability in [0, 1], got 1.5"),
    ('[dynamic]\nshuffle = 1\n[[source]]\npath = "a"\n', "[dynamic] shuffle must be true or false, got 1"),
    ('title = "x"\n', "unknown key 'title'"),
    ('[[source]]\npath = "a\n', "invalid TOML"),
])
def test_bad_files_are_refused_with_the_file_and_source_named(tmp_path, text, message):
    path = write_toml(tmp_path, text)
    with pytest.raises(MixtureError, match=str(path).replace(".", r"\.")) as err:
        read_mixture(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_json_syntax_errors_carry_the_line(tmp_path):
    (tmp_path / "m.json").write_text('{"source": [\n  {"path": "a",}\n]}')
    with pytest.raises(MixtureError, match=r"m\.json:2: invalid JSON"):
        read_mixture(tmp_path / "m.json")


# --- the sentences --------------------------------------------------------------------------------

def test_sources_are_read_in_their_language_sliced_sampled_and_named(tmp_path):
    mix = read_mixture(write_toml(tmp_path, MIX))
    conll, zh = (load_source(s, mix.root, seed=0) for s in mix.sources)
    assert len(conll.docs) == 4 and conll.read == 8
    assert {s.label for d in conll.docs for s in d.spans} == {"person", "organization", "location"}
    # zh is one character per token: joined without spaces, "#" read as a space
    assert zh.docs[0].text.startswith("李民基《Et Su》") and zh.docs[0].lang == "zh"
    assert zh.docs[0].spans[0].surface(zh.docs[0].text) == "李民基" and zh.docs[0].spans[0].label == "people"
    assert set(zh.tree.roots) == {"people", "organization", "location"}
    first = parse_mixture({"source": [{"path": str(TRAIN), "sentences": [2, 4]}]}, "m", tmp_path).sources[0]
    assert [d.text for d in load_source(first, tmp_path, 0).docs] == [d.text for d in conll_all()[1:4]]


def conll_all():
    mix = parse_mixture({"source": [{"path": str(TRAIN)}]}, "m", Path("."))
    return load_source(mix.sources[0], mix.root, 0).docs


def test_a_mention_off_the_tree_is_an_error_naming_the_source(tmp_path):
    mix = parse_mixture({"source": [{"name": "bad", "path": str(TRAIN), "categories": str(TREE)}]}, "m", tmp_path)
    with pytest.raises(MixtureError, match="source bad: sentence"):
        load_source(mix.sources[0], mix.root, 0)


@given(st.integers(0, 60), st.floats(0.01, 5), st.integers(0, 99))
def test_repeats_give_every_sentence_floor_or_ceil_of_the_weight(n, weight, seed):
    r = repeats(n, weight, seed)
    assert len(r) == n and set(r) <= {int(weight), int(weight) + 1}
    assert sum(r) == int(weight) * n + round((weight - int(weight)) * n)
    assert r == repeats(n, weight, seed)


def test_a_sources_views_do_not_move_when_another_source_is_resized(tmp_path):
    mix = read_mixture(write_toml(tmp_path, MIX))
    _, views = load_mixture(mix, seed=3)
    smaller = read_mixture(write_toml(tmp_path, MIX.replace("sample = 4", "sample = 2")))
    _, other = load_mixture(smaller, seed=3)
    assert [v for n, v in views if n == "zh"] == [v for n, v in other if n == "zh"]
    assert len([v for n, v in views if n == "conll"]) == 4 and len([v for n, v in other if n == "conll"]) == 2
    # weight 1.5 over 2 sentences: one of them twice
    assert len([v for n, v in views if n == "zh"]) == 3
    assert load_mixture(mix, seed=3)[1] == views and load_mixture(mix, seed=4)[1] != views


def test_a_sources_plain_share_is_its_own(tmp_path):
    """`plain` on a source overrides [dynamic] plain for that source's views and no other's."""
    _, before = load_mixture(read_mixture(write_toml(tmp_path, MIX)), seed=3)
    _, after = load_mixture(read_mixture(write_toml(tmp_path, MIX + "plain = 1.0\n")), seed=3)
    assert [v for n, v in after if n == "conll"] == [v for n, v in before if n == "conll"]
    zh = [v for n, v in after if n == "zh"]
    assert zh != [v for n, v in before if n == "zh"]
    assert all(set(v.types) == {"people", "location", "organization"} and not v.zero_shot for v in zh)


# --- examples -------------------------------------------------------------------------------------

def test_joint_extraction_marks_the_offered_types_only_and_questions_share_its_head(tmp_path):
    mix = read_mixture(write_toml(tmp_path, MIX))
    _, views = load_mixture(mix, seed=0)
    fmt, prefix = get_format("joint"), get_format("prefix")
    for _, view in views:
        ext, *questions = view_examples(view, "joint", fmt)
        assert ext.messages == fmt.extraction(view.text, view.types, view.zero_shot)
        assert markup.parse(view.text, ext.answer).spans == [Span(s.start, s.end) for s in view.marked]
        for q in questions:                     # the cache of the extraction prompt serves every question
            assert q.messages[1]["content"].startswith(ext.messages[-1]["content"])
        every = view_examples(view, "extract", prefix)[0].answer      # no list in the prompt: mark all
        assert markup.parse(view.text, every).spans == [Span(s.start, s.end) for s in view.mentions]
    # a type withdrawn from every list: its mentions are left unmarked
    _, withdrawn = load_mixture(read_mixture(write_toml(tmp_path, "[dynamic]\nunknown = 1.0\n" + MIX)), seed=0)
    assert sum(len(v.marked) < len(v.mentions) for _, v in withdrawn) >= len(withdrawn) - 1


SENTENCES = {
    "zh": ("李民基出生于澳門，后来搬到北京。", [(0, 3), (6, 8), (13, 15)]),
    "ja": ("東京都は日本の首都です。", [(0, 3), (4, 6)]),
    "ko": ("서울은 대한민국의 수도이다.", [(0, 2), (4, 8)]),
    "ru": ("Москва — столица России.", [(0, 6), (17, 23)]),
}


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_markup_and_tokens_round_trip_in_every_script(lang, tiny_tokenizer):
    text, offsets = SENTENCES[lang]
    spans = [Span(s, e) for s, e in offsets]
    marked = markup.render(text, spans)
    assert markup.parse(text, marked).spans == spans and markup.parse(text, marked).faithful
    # the answer the model learns decodes back to itself (byte-level BPE, no unknown characters)
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(marked)) == marked


def test_one_conversation_down_the_tree_learns_every_level_it_asks(tiny_tokenizer):
    tree = Hierarchy.load(TREE)
    docs = [Document("Obama flew to Paris airport", [Span(0, 5, "politician"), Span(14, 19, "city"),
                                                      Span(20, 27, "airport")])] * 12
    fmt = get_format("joint")
    for view in views(docs, tree, 0, Dynamic(mix=0.3, reduce=0.5, merge=0.3, synonym=0.5, unknown=0.3)):
        chats = view_examples(view, "classify", fmt)
        taught = set()
        for chat in chats:
            ex = tokenize(chat, tiny_tokenizer)
            turns = [m["content"] for m in chat.messages if m["role"] == "assistant"] + [chat.answer]
            learned = tiny_tokenizer.decode([i for i, m in zip(ex.ids, ex.loss_mask) if m])
            assert learned == "".join(t + IM_END for t in turns)
            lists = [m["content"] for m in chat.messages if m["role"] == "user"]
            taught |= set(zip(lists, turns[:-1])) | {(chat.messages[-1]["content"], chat.answer)}
        # every question of the view is taught once, as a conversation's answer or one of its turns
        asked = {(fmt.classification(view.text, e.span, e.candidates, view.zero_shot, e.history)[-1]["content"],
                  e.answer) for e in view.examples}
        assert asked <= taught and len(chats) <= len(view.examples)
    assert any(len(view_examples(v, "classify", fmt)) < len(v.examples) for v in views(docs, tree, 0))


def test_committed_recipes_read_and_differ_by_crossner_and_sizes_only(monkeypatch):
    """The zero-shot variant reads the same data as the full recipe, less CrossNER; it may size the
    sources, give them plain shares and nest lists differently (the headers say why), nothing else."""
    monkeypatch.setenv("CASCADENER_DATA", "/data")
    full, without = (read_mixture(REPO / "recipes" / f) for f in ("universal.toml", "universal-no-crossner.toml"))
    crossner = [s for s in full.sources if "crossner" in s.path]
    assert len(crossner) == 5 and not any("crossner" in s.path for s in without.sources)

    def data(s: Source) -> Source:
        return replace(s, sample=None, weight=1.0, plain=None)
    assert [data(s) for s in full.sources if s not in crossner] == [data(s) for s in without.sources]
    assert replace(without.dynamic, nest=full.dynamic.nest) == full.dynamic
    assert {s.lang for s in full.sources} == {"en", "de", "es", "fr", "ru", "zh", "ja", "ko"}
    (dyn,) = [s for s in full.sources if s.categories]
    assert dyn.sentences == (1, 600) and dyn.categories == "dynamicner/DynamicNER.json"


def test_committed_recipes_name_files_that_exist(monkeypatch):
    root = datasets_dir()
    if root is None:
        pytest.skip("shared datasets not found: set CASCADENER_DATA to the datasets directory")
    monkeypatch.setenv("CASCADENER_DATA", str(root))
    for f in ("universal.toml", "universal-no-crossner.toml"):
        for s in read_mixture(REPO / "recipes" / f).sources:
            assert (root / s.path).is_file() and (s.categories is None or (root / s.categories).is_file()), s
