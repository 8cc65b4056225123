"""Every shared raw dataset reads without error, and its counts equal those in its PROVENANCE.md.

Expected numbers are copied from shared/datasets/*/PROVENANCE.md (sentences exclude -DOCSTART-;
an entity is a decoded span, I- after O opening a new one). Skipped when the datasets are absent.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import cache

import pytest

from cascadener.data import ReadResult, read_conll, read_geic_json
from data_helpers import dataset_file


@cache
def read(relative: str, lang: str | None = None) -> ReadResult:
    return read_conll(dataset_file(relative), lang=lang)


def per_type(result: ReadResult) -> dict[str, int]:
    return dict(Counter(s.label for d in result.documents for s in d.spans))


def check(result: ReadResult, sentences: int, tokens: int, entities: int, types: dict[str, int]) -> None:
    assert len(result.documents) == sentences
    assert sum(len(d.tokens) for d in result.documents) == tokens
    assert per_type(result) == types
    assert sum(types.values()) == entities


# --- CoNLL-2003 ----------------------------------------------------------------------------------

CONLL = {  # split: (IOB1 file, IOB2 file, sentences, tokens, entities, per type)
    "train": ("eng.train", "iob2/train.txt", 14041, 203621, 23499,
              {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "dev": ("eng.testa", "iob2/valid.txt", 3250, 51362, 5942, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "test": ("eng.testb", "iob2/test.txt", 3453, 46435, 5648, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
}


@pytest.mark.parametrize("split", CONLL)
def test_conll2003(split):
    iob1_name, iob2_name, sentences, tokens, entities, types = CONLL[split]
    iob1, iob2 = read(f"conll2003/{iob1_name}"), read(f"conll2003/{iob2_name}")
    assert (iob1.scheme, iob2.scheme) == ("iob1", "iob2")
    check(iob1, sentences, tokens, entities, types)
    check(iob2, sentences, tokens, entities, types)
    # The two versions carry identical texts and spans (PROVENANCE checked the same).
    assert [(d.text, d.spans) for d in iob1.documents] == [(d.text, d.spans) for d in iob2.documents]
    assert iob2.repaired == []


def test_conll2003_train_irregular_b_misc():
    """The 2 B-MISC after O that the original eng.train has, found at the lines PROVENANCE names."""
    repaired = read("conll2003/eng.train").repaired
    assert [(p.where.rsplit(":", 1)[1], p.mention) for p in repaired] == [
        ("152428", "Atlanta Games"), ("175436", "Urdu-speaking Moslems")]
    assert read("conll2003/eng.testa").repaired == read("conll2003/eng.testb").repaired == []


# --- CrossNER ------------------------------------------------------------------------------------

CROSSNER = {  # (domain, split): (sentences, tokens, entities, per type)
    ("ai", "train"): (100, 3782, 532, dict(
        algorithm=80, conference=24, country=29, field=39, location=7, metrics=27, misc=43, organisation=48,
        person=6, product=58, programlang=25, researcher=54, task=60, university=32)),
    ("ai", "dev"): (350, 10919, 1549, dict(
        algorithm=178, conference=89, country=44, field=178, location=42, metrics=147, misc=180, organisation=94,
        person=41, product=173, programlang=35, researcher=142, task=147, university=59)),
    ("literature", "train"): (100, 3782, 541, dict(
        award=34, book=91, country=25, event=10, literarygenre=36, location=25, magazine=16, misc=58,
        organisation=18, person=48, poem=47, writer=133)),
    ("literature", "dev"): (400, 14503, 2130, dict(
        award=124, book=336, country=127, event=65, literarygenre=152, location=111, magazine=71, misc=212,
        organisation=115, person=194, poem=79, writer=544)),
    ("music", "train"): (100, 3909, 648, dict(
        album=91, award=69, band=125, country=27, event=12, location=30, misc=22, musicalartist=104,
        musicalinstrument=2, musicgenre=88, organisation=36, person=15, song=27)),
    ("music", "dev"): (380, 15591, 2679, dict(
        album=282, award=230, band=402, country=130, event=72, location=187, misc=124, musicalartist=472,
        musicalinstrument=42, musicgenre=360, organisation=136, person=65, song=177)),
    ("politics", "train"): (200, 8384, 1304, dict(
        country=62, election=123, event=22, location=297, misc=80, organisation=152, person=14, politicalparty=195,
        politician=359)),
    ("politics", "dev"): (541, 24624, 3482, dict(
        country=183, election=528, event=186, location=211, misc=193, organisation=431, person=286,
        politicalparty=1053, politician=411)),
    ("science", "train"): (200, 7100, 1075, dict(
        academicjournal=28, astronomicalobject=121, award=56, chemicalcompound=72, chemicalelement=16, country=9,
        discipline=22, enzyme=22, event=20, location=65, misc=169, organisation=118, person=97, protein=69,
        scientist=127, theory=8, university=56)),
    ("science", "dev"): (450, 16139, 2538, dict(
        academicjournal=149, astronomicalobject=373, award=140, chemicalcompound=193, chemicalelement=23,
        country=28, discipline=41, enzyme=48, event=36, location=142, misc=360, organisation=278, person=153,
        protein=101, scientist=328, theory=7, university=138)),
}


@pytest.mark.parametrize("domain, split", CROSSNER)
def test_crossner(domain, split):
    result = read(f"crossner/{domain}/{split}.txt")
    assert result.scheme == "iob2" and result.repaired == []
    check(result, *CROSSNER[domain, split])


# --- WikiANN -------------------------------------------------------------------------------------

WIKIANN = {  # (lang, split): (tokens, lenient entities, B- tags only, per type); 20k / 10k sentences
    ("en", "train"): (160394, 27931, 27931, dict(LOC=9345, ORG=9422, PER=9164)),
    ("en", "dev"): (80536, 14146, 14146, dict(LOC=4834, ORG=4677, PER=4635)),
    ("es", "train"): (129283, 24750, 24750, dict(LOC=9144, ORG=7311, PER=8295)),
    ("es", "dev"): (64329, 12270, 12270, dict(LOC=4567, ORG=3737, PER=3966)),
    ("fr", "train"): (136788, 26447, 26447, dict(LOC=9718, ORG=7764, PER=8965)),
    ("fr", "dev"): (68220, 13156, 13156, dict(LOC=4840, ORG=3910, PER=4406)),
    ("de", "train"): (195387, 27643, 27643, dict(LOC=9778, ORG=8575, PER=9290)),
    ("de", "dev"): (97805, 13818, 13818, dict(LOC=4968, ORG=4281, PER=4569)),
    ("ru", "train"): (141529, 24629, 24629, dict(LOC=9498, ORG=7944, PER=7187)),
    ("ru", "dev"): (70279, 12334, 12334, dict(LOC=4852, ORG=3892, PER=3590)),
    ("zh", "train"): (420054, 25031, 24135, dict(LOC=8784, ORG=8260, PER=7987)),
    ("zh", "dev"): (213682, 12493, 12017, dict(LOC=4314, ORG=4263, PER=3916)),
    ("ja", "train"): (603301, 28287, 27273, dict(LOC=10218, ORG=9611, PER=8458)),
    ("ja", "dev"): (300844, 14105, 13604, dict(LOC=5255, ORG=4664, PER=4186)),
    ("ko", "train"): (162031, 28900, 28900, dict(LOC=11905, ORG=8826, PER=8169)),
    ("ko", "dev"): (80786, 14560, 14560, dict(LOC=6000, ORG=4459, PER=4101)),
}


@pytest.mark.parametrize("lang, split", WIKIANN)
def test_wikiann(lang, split):
    tokens, lenient, b_only, types = WIKIANN[lang, split]
    result = read(f"wikiann/{lang}/{split}-{lang}.tsv", lang)
    assert result.scheme == "iob2"
    check(result, 20000 if split == "train" else 10000, tokens, lenient, types)
    # Every entity not opened by B- is an I- after O, reported as repaired (zh/ja only).
    assert len(result.repaired) == lenient - b_only
    assert all("after O is not well-formed IOB2" in p.reason for p in result.repaired)


def test_wikiann_zh_ja_texts():
    zh = read("wikiann/zh/train-zh.tsv", "zh").documents
    # One character per token, '#' rebuilt as a space, no separators added.
    assert zh[0].text == "2009年：李民基《Eternal Summer》"
    assert zh[0].tokens[:3] == [(0, 1), (1, 2), (2, 3)]
    assert [s.surface(zh[0].text) for s in zh[0].spans] == ["李民基"]
    assert all(len(d.text) == sum(e - s for s, e in d.tokens) for d in zh)
    assert sum(d.text.count(" ") for d in zh) == 17595          # the '#' tokens of zh train


# --- DynamicNER example.json ---------------------------------------------------------------------

TOP_CATEGORIES = {"city": 187, "country": 150, "musician": 103, "state or province": 96, "other person": 83,
                  "author": 72, "politician": 66, "political/military": 66, "athlete": 65, "company": 62}


def test_dynamicner_example():
    path = dataset_file("dynamicner/example.json")
    result = read_geic_json(path)
    assert len(result.documents) == 900
    placed = sum(len(d.spans) for d in result.documents)
    # 17 mentions are not exact substrings of their sentence: reported, not silently dropped.
    assert len(result.dropped) == 17 and placed + len(result.dropped) == 2805
    assert {p.where for p in result.dropped} >= {"sentence103", "sentence199", "sentence381"}
    assert ("sentence103", "East Germany") in [(p.where, p.mention) for p in result.dropped]
    # Categories of placed and dropped mentions together give the PROVENANCE counts.
    raw = json.loads(path.read_text(encoding="utf-8"))
    counts = Counter(s.label for d in result.documents for s in d.spans)
    counts.update(raw[p.where]["category"][raw[p.where]["entity"].index(p.mention)] for p in result.dropped)
    assert len(counts) == 155
    assert {c: n for c, n in counts.most_common(10)} == TOP_CATEGORIES
