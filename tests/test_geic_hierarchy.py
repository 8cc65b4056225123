import json
from pathlib import Path

import pytest
from data_helpers import dataset_file
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadener.geic.hierarchy import MAX_DEPTH, UNKNOWN, CategoryError, Hierarchy, normalize

REPO = Path(__file__).resolve().parent.parent
SMALL = REPO / "tests" / "fixtures" / "hierarchy_small.json"


def dynamicner_dir() -> Path:
    """The authors' hierarchy files ($CASCADENER_DATA or ../shared/datasets); skips when absent."""
    return dataset_file("dynamicner/DynamicNER.json").parent


def level(h: Hierarchy, n: int) -> list[str]:
    return [p[-1] for p in h.paths() if len(p) == n]


def leaves(h: Hierarchy) -> list[str]:
    return [p[-1] for p in h.paths() if h.is_leaf(p)]


@pytest.fixture
def small() -> Hierarchy:
    return Hierarchy.load(SMALL, synonyms={"city": ["town", "municipality"], "person": ["human"]})


def test_small_tree_shape(small):
    assert small.roots == ["person", "location", "facility", "miscellaneous"]
    assert small.depth() == 3
    assert level(small, 2) == ["real person", "fictional figure", "city", "address",
                              "transportation facility"]
    assert small.children("real person") == ["politician", "athlete"]
    assert small.children(("location", "address")) == ["address", "road"]
    assert small.children("miscellaneous") == []
    assert leaves(small) == ["politician", "athlete", "other figure", "city", "address", "road",
                              "airport", "other transportation facility", "miscellaneous"]


def test_paths_coarse_to_fine_and_uneven_depth(small):
    assert small.path("Politician") == ("person", "real person", "politician")
    assert small.path("city") == ("location", "city")
    assert small.path("miscellaneous") == ("miscellaneous",)
    assert small.path("Other Transortation Facility") == ("facility", "transportation facility",
                                                          "other transportation facility")


def test_duplicate_names_are_reported_and_resolved_to_the_leaf(small):
    assert small.duplicates() == {"address": [("location", "address"), ("location", "address", "address")]}
    assert small.path("address") == ("location", "address", "address")


def test_ambiguous_leaf_names_raise():
    h = Hierarchy.from_tree({"product": {"weapon": ["biological"]}, "science": {"x": ["biological"]}})
    assert set(h.duplicates()) == {"biological"}
    with pytest.raises(ValueError, match="ambiguous"):
        h.path("biological")


def test_unknown_synonyms_and_missing_names(small):
    assert small.path(UNKNOWN) == (UNKNOWN,) and small.children(UNKNOWN) == []
    assert small.path("Town") == small.path("municipality") == ("location", "city")
    assert small.synonyms == {"city": ["town", "municipality"], "person": ["human"]}
    with pytest.raises(KeyError):
        small.path("spaceship")


def test_bad_synonym_maps_are_rejected():
    with pytest.raises(KeyError):
        Hierarchy.load(SMALL, synonyms={"spaceship": ["ufo"]})
    with pytest.raises(ValueError):
        Hierarchy.load(SMALL, synonyms={"city": ["road"]})          # already a category
    with pytest.raises(ValueError):
        Hierarchy.load(SMALL, synonyms={"city": ["place"], "road": ["place"]})


def test_levels_format_and_flat_labels(tmp_path):
    levels = {"first-level": "Person, location", "second-level": {"person": "real person"},
              "third-level": {"real person": "athlete, actor"}}
    path = tmp_path / "levels.json"
    path.write_text(json.dumps(levels))
    h = Hierarchy.load(path)
    assert h.paths() == [("person",), ("person", "real person"), ("person", "real person", "athlete"),
                         ("person", "real person", "actor"), ("location",)]
    flat = Hierarchy.flat(["PER", "ORG", "LOC", "MISC"])
    assert flat.depth() == 1 and leaves(flat) == ["per", "org", "loc", "misc"]
    assert flat.path("Per") == ("per",)


def test_a_label_list_file_is_a_flat_tree(tmp_path):
    """What --help calls "a label list file": one label per line; a .txt that starts like JSON is JSON."""
    (tmp_path / "labels.txt").write_text("Person\n\n  location \nwork of art\n", encoding="utf-8")
    assert Hierarchy.load(tmp_path / "labels.txt").paths() == [("person",), ("location",), ("work of art",)]
    (tmp_path / "tree.txt").write_text('{"person": ["actor"]}', encoding="utf-8-sig")    # with a BOM
    assert Hierarchy.load(tmp_path / "tree.txt").paths() == [("person",), ("person", "actor")]


def test_malformed_input_is_rejected():
    with pytest.raises(ValueError, match="not a node"):
        Hierarchy.from_levels({"first-level": "a", "second-level": {"b": "c"}})
    with pytest.raises(ValueError, match="twice"):
        Hierarchy.flat(["a", "A"])
    with pytest.raises(ValueError, match="reserved"):
        Hierarchy.flat(["Unknown"])
    with pytest.raises(ValueError, match="expected"):
        Hierarchy.from_tree({"a": "b, c"})


def test_normalize():
    assert normalize("  Other  Transortation Facility ") == "other transportation facility"


def test_dynamicner_levels_file():
    h = Hierarchy.load(dynamicner_dir() / "DynamicNER.json")
    assert [len(level(h, n)) for n in (1, 2, 3)] == [8, 31, 155]
    assert h.depth() == 3 and len(leaves(h)) == len(set(leaves(h))) == 155
    # Names repeated across levels; path() still resolves every leaf to its one leaf.
    assert set(h.duplicates()) == {"miscellaneous", "address", "other product", "other facility",
                                   "other art", "biological", "other scientific entity"}
    assert all(h.path(leaf)[-1] == leaf and len(h.path(leaf)) == 3 for leaf in leaves(h))
    assert h.path("biological") == ("product", "weapon", "biological")
    assert h.children(("science entity", "biological"))[:2] == ["protein", "species"]


def test_dynamicner_nested_file_matches_the_levels_file_after_the_typo_fix():
    d = dynamicner_dir()
    assert "Transortation" in (d / "category.json").read_text()
    assert Hierarchy.load(d / "category.json").paths() == Hierarchy.load(d / "DynamicNER.json").paths()


NAMES = st.text("abcxyz ", min_size=1, max_size=6).map(normalize).filter(lambda n: n and n != UNKNOWN)
TREES = st.recursive(st.lists(NAMES, unique=True, max_size=4),
                     lambda below: st.dictionaries(NAMES, st.none() | below, max_size=4), max_leaves=12)


def walk(tree, parent=()):
    """Every node of a nested tree, parents first, siblings in order: what paths() must give."""
    if isinstance(tree, dict):
        for name, below in tree.items():
            yield parent + (name,)
            yield from walk(below, parent + (name,))
    elif tree:
        yield from (parent + (name,) for name in tree)


@settings(max_examples=200, deadline=None)
@given(TREES)
def test_any_tree_loads_from_json_with_its_paths_and_children(tmp_path_factory, tree):
    expected = list(walk(tree))
    file = tmp_path_factory.mktemp("tree") / "tree.json"
    file.write_text(json.dumps(tree), encoding="utf-8")
    if not expected:
        with pytest.raises(CategoryError, match="no categories"):
            Hierarchy.load(file)
        return
    h = Hierarchy.load(file)
    assert h.paths() == expected and h.depth() == max(map(len, expected))
    for p in expected:
        assert h.children(p) == [q[-1] for q in expected if q[:-1] == p]
        if sum(q[-1] == p[-1] for q in expected) == 1:
            assert h.path(p[-1]) == p


@settings(max_examples=100, deadline=None)
@given(st.lists(NAMES, unique=True, min_size=1, max_size=8))
def test_a_label_list_file_is_the_flat_list(tmp_path_factory, names):
    file = tmp_path_factory.mktemp("labels") / "labels.txt"
    file.write_text("\n".join(names) + "\n", encoding="utf-8")
    assert Hierarchy.load(file).paths() == Hierarchy.flat(names).paths() == [(n,) for n in names]


def test_depth_limit():
    deep = "x"
    for n in range(MAX_DEPTH):
        deep = {f"level {n}": deep if isinstance(deep, dict) else [deep]}
    with pytest.raises(CategoryError, match=f"deeper than {MAX_DEPTH} levels"):
        Hierarchy.from_tree(deep)
    assert Hierarchy.from_tree(deep["level 7"]).depth() == MAX_DEPTH
