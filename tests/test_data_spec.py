"""Dataset specs (data/spec.py): the keys a training mixture's sources and an evaluation suite's
test sets share, checked once here; each file kind's own keys are tested with it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cascadener.data.spec import DatasetSpec, in_range, parse_spec, read_labelled, read_table

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "training" / "train.tsv"


class Refused(ValueError):
    pass


@dataclass(frozen=True)
class WithWeight(DatasetSpec):
    weight: float = 1.0


def test_a_record_becomes_the_spec_with_lists_as_tuples():
    spec = parse_spec({"path": "a.txt", "sentences": [2, 5], "sample": 3, "label_map": {"PER": "person"},
                       "weight": 2.0}, "f", WithWeight, Refused)
    assert spec == WithWeight(path="a.txt", sentences=(2, 5), sample=3, label_map={"PER": "person"}, weight=2.0)
    assert spec.title == "a.txt" and parse_spec({"path": "a", "name": "A"}, "f", DatasetSpec, Refused).title == "A"


@pytest.mark.parametrize("record, message", [
    ([1, 2], "f: not a table/object"),
    ({"name": "x"}, "f: 'path' (the data file) is required"),
    ({"path": "a", "weight": 2}, "f: unknown key 'weight'"),
    ({"path": "a", "format": "xml"}, "format 'xml' is not auto or one of conll, geic, jsonl"),
    ({"path": "a", "scheme": "bio"}, "scheme 'bio' is not auto or one of"),
    ({"path": "a", "label_map": {"PER": 1}}, "label_map is a table of code = \"name\""),
    ({"path": "a", "sentences": [5, 2]}, "sentences must be [first, last] with 1 <= first <= last, got [5, 2]"),
    ({"path": "a", "sentences": 600}, "sentences must be [first, last]"),
    ({"path": "a", "sample": 0}, "sample must be a whole number >= 1, got 0"),
])
def test_bad_common_keys_are_refused_with_the_place_named(record, message):
    with pytest.raises(Refused) as err:
        parse_spec(record, "f", DatasetSpec, Refused)
    assert str(err.value).startswith("f: ") and message in str(err.value) and "\n" not in str(err.value)


def test_tables_come_from_toml_or_json_and_errors_name_the_file(tmp_path):
    (tmp_path / "a.toml").write_text('x = 1\n[t]\ny = "z"\n')
    (tmp_path / "a.json").write_text('{"x": 1, "t": {"y": "z"}}')
    assert read_table(tmp_path / "a.toml", Refused) == read_table(tmp_path / "a.json", Refused)
    (tmp_path / "b.json").write_text('{\n"x": 1,\n}')
    for name, message in (("b.json", "b.json:3: invalid JSON"), ("missing.toml", "cannot read the file"),
                          ("c.json", "holds list, not a table")):
        if name == "c.json":
            (tmp_path / name).write_text("[1]")
        with pytest.raises(Refused, match=message.replace(".", r"\.")):
            read_table(tmp_path / name, Refused)


def test_reading_names_the_labels_and_the_range_cuts_in_file_order():
    every = read_labelled(DatasetSpec(path=str(TRAIN)), Path("."))
    assert {s.label for d in every.documents for s in d.spans} == {"person", "organization", "location"}
    renamed = read_labelled(DatasetSpec(path=TRAIN.name, label_map={"PER": "people"}), TRAIN.parent)
    assert "people" in {s.label for d in renamed.documents for s in d.spans}
    spec = DatasetSpec(path=str(TRAIN), sentences=(2, 3))
    assert in_range(every.documents, spec, Refused) == every.documents[1:3]
    with pytest.raises(Refused, match=r"sentences 2-99 asked, but .*train.tsv has 8"):
        in_range(every.documents, DatasetSpec(path=str(TRAIN), sentences=(2, 99)), Refused)
