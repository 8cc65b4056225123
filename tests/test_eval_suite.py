"""eval.py --suite: suite files, test sets (slices, samples, levels), the table, the JSON report and
the HTML page; on known predictions without a model, and end to end on the tiny checkpoint."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cascadener.cli import evaluate as eval_cli
from cascadener.evaluation import report
from cascadener.evaluation.run import ModelRun
from cascadener.evaluation.suite import SuiteError, SuiteResult, SetResult, cut_tree, load_set, read_suite, rows_of
from cascadener.evaluation.suite import TestSet as Spec       # not a pytest class
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.metrics import score
from cascadener.geic.spans import Document, Span
from cascadener.ner.pipeline import Stats
from cascadener.ner.render import label_color

from data_helpers import datasets_dir
from test_render import CHROMIUM_FLAGS, count_color, read_png

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "bench" / "suites"

TREE = {"person": {"artist": ["actor", "singer"], "athlete": ["player"]},
        "location": {"city": ["capital", "town"]}}

COLUMNS = """\
Kobe B-PER
played O
in O
Paris B-LOC

Angela B-PER
visited O
Berlin B-LOC

The O
Lakers B-ORG
won O
"""


def geic(*sentences: tuple[str, list[str], list[str]]) -> str:
    return json.dumps({f"sentence{i}": {"sentence": s, "entity": e, "category": c}
                       for i, (s, e, c) in enumerate(sentences, 1)})


GEIC = geic(("Kobe played in Paris", ["Kobe", "Paris"], ["player", "capital"]),
            ("Tom Hanks sang in Rome", ["Tom Hanks", "Rome"], ["actor", "capital"]),
            ("Adele lives in Leeds", ["Adele", "Leeds"], ["singer", "town"]),
            ("Kobe visited Rome", ["Kobe", "Rome"], ["player", "capital"]))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "cols.txt").write_text(COLUMNS, encoding="utf-8")
    (tmp_path / "dyn.json").write_text(GEIC, encoding="utf-8")
    (tmp_path / "tree.json").write_text(json.dumps(TREE), encoding="utf-8")
    return tmp_path


def write_suite(folder: Path, text: str, name: str = "suite.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- suite files and test sets ----------------------------------------------------------------------

def test_suite_file_defaults_and_relative_paths(files, monkeypatch):
    monkeypatch.delenv("CASCADENER_DATA", raising=False)
    path = write_suite(files, """
name = "two sets"
[defaults]
sample = 2
seed = 3
[[sets]]
path = "cols.txt"
sample = 10
[[sets]]
name = "tree"
path = "dyn.json"
categories = "tree.json"
levels = [1, 3]
sentences = [2, 4]
""")
    suite = read_suite(path)
    assert suite.name == "two sets" and suite.root == files            # no $CASCADENER_DATA: the suite's folder
    cols, tree = suite.sets
    assert (cols.title, cols.sample, cols.seed) == ("cols.txt", 10, 3)
    assert (tree.title, tree.sample, tree.levels, tree.sentences) == ("tree", 2, (1, 3), (2, 4))
    monkeypatch.setenv("CASCADENER_DATA", "/data")
    assert read_suite(path).root == Path("/data")
    # JSON suites read the same
    same = write_suite(files, json.dumps({"name": "two sets", "defaults": {"sample": 2, "seed": 3}, "sets": [
        {"path": "cols.txt", "sample": 10}, {"name": "tree", "path": "dyn.json", "categories": "tree.json",
                                             "levels": [1, 3], "sentences": [2, 4]}]}), "suite.json")
    assert read_suite(same, files).sets == suite.sets


def test_loading_slices_then_samples_and_cuts_levels(files):
    spec = Spec(path="dyn.json", categories="tree.json", levels=(1, 2), sentences=(2, 4))
    loaded = load_set(spec, files)
    assert [d.text for d in loaded.gold] == ["Tom Hanks sang in Rome", "Adele lives in Leeds", "Kobe visited Rome"]
    # gold carries full paths, cut to the deepest level asked; the offered tree is cut the same way
    assert [s.path for s in loaded.gold[0].spans] == [("person", "artist"), ("location", "city")]
    assert loaded.tree.depth() == 2 and loaded.tree.children(("person",)) == ["artist", "athlete"]
    sampled = load_set(Spec(path="cols.txt", sample=2, seed=0), files)
    assert len(sampled.gold) == 2 and sampled.tree.roots == ["person", "location", "organization"]


def test_cut_tree_keeps_the_top_and_its_synonyms():
    tree = Hierarchy.from_tree(TREE, {"person": ["people"], "actor": ["thespian"]})
    cut = cut_tree(tree, 2)
    assert cut.paths() == [p for p in tree.paths() if len(p) <= 2]
    assert cut.synonyms == {"person": ["people"]}


@pytest.mark.parametrize("text, message", [
    ('[[sets]]\npath = "cols.txt"\nsampel = 3\n', "set 1 (cols.txt): unknown key 'sampel'"),
    ('[[sets]]\nname = "x"\n', "set 1 (x): 'path' (the data file) is required"),
    ('name = "no sets"\n', "a suite has a non-empty list 'sets'"),
    ('[[sets]]\npath = "cols.txt"\nlevels = [1, 2]\n', "levels need a category tree"),
    ('[[sets]]\npath = "cols.txt"\nsentences = [5, 2]\n', "sentences must be [first, last]"),
    ('[[sets]]\npath = "cols.txt"\nsample = 0\n', "sample must be a whole number >= 1"),
    ('[[sets]]\npath = "cols.txt"\nformat = "xml"\n', "format 'xml' is not auto"),
    ('[[sets]]\npath = "cols.txt"\nlabels = "person,location"\n', "labels is a list, got 'person,location'"),
    ('[[sets]\n', "suite.toml"),                                       # TOML syntax error, file named
])
def test_bad_suites_are_one_line_errors(files, capsys, text, message):
    path = write_suite(files, text)
    with pytest.raises(SuiteError, match=re.escape(message)):
        read_suite(path, files)
    assert eval_cli.main(["--suite", str(path), "--model", "unused"]) == 1   # refused before any model loads
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("spec, message", [
    (Spec(path="cols.txt", sentences=(2, 9)), "sentences 2-9 asked, but cols.txt has 3"),
    (Spec(path="dyn.json", categories="tree.json", levels=(4,)), "level 4 asked, but tree.json has 3"),
    (Spec(path="missing.txt"), "missing.txt"),
])
def test_bad_sets_name_themselves(files, spec, message):
    with pytest.raises((ValueError, OSError), match=re.escape(message)):
        load_set(spec, files)


# ---- the table, the JSON report and the page, on known predictions ----------------------------------

def known_result() -> SuiteResult:
    """A flat set and a three-level set with hand-made predictions."""
    def doc(text, *spans):
        return Document(text, list(spans))

    flat_gold = [doc("Kobe in Paris", Span(0, 4, "person", ("person",)), Span(8, 13, "location", ("location",)))]
    flat_pred = [doc("Kobe in Paris", Span(0, 4, "person", ("person",)), Span(8, 13, "person", ("person",)))]
    p = ("person", "athlete", "player")
    tree_gold = [doc("Kobe in Rome", Span(0, 4, "player", p), Span(8, 12, "capital", ("location", "city", "capital")))]
    tree_pred = [doc("Kobe in Rome", Span(0, 4, "athlete", p[:2]),                 # stopped at level 2
                     Span(8, 12, "town", ("location", "city", "town")))]
    sets = []
    for spec, gold, pred in ((Spec("flat.txt", name="flat"), flat_gold, flat_pred),
                             (Spec("tree.json", name="tree", categories="t.json", levels=(1, 2, 3)),
                              tree_gold, tree_pred)):
        run = ModelRun(gold, pred, score(gold, pred), 2.0, Stats())
        sets.append(SetResult(spec, ["person", "location"], run, rows_of(spec, run)))
    return SuiteResult("known", sets)


def test_level_rows_agree_with_the_one_report_of_the_run():
    result = known_result()
    tree = result.sets[1]
    assert [r.name for r in tree.rows] == ["tree L1", "tree L2", "tree L3"]
    assert [r.span for r in tree.rows] == [tree.run.report.per_level[n] for n in (1, 2, 3)]
    assert [r.span.tp for r in tree.rows] == [2, 2, 0]          # a stopped walk is wrong below its stop
    assert tree.rows[1].confusion == {"athlete": {"athlete": 1}, "city": {"city": 1}}
    assert tree.rows[2].confusion == {"player": {"athlete": 1}, "capital": {"town": 1}}


def test_table_and_json_report():
    result = known_result()
    lines = report.table(result).splitlines()
    assert lines[0].split() == ["dataset", "sents", "P", "R", "F1", "extr", "F1", "lenient", "sent/s"]
    assert lines[2].split() == ["flat", "1", "0.5000", "0.5000", "0.5000", "1.0000", "0.5000", "0.50"]
    assert lines[5].split()[:2] == ["tree", "L3"] and lines[5].split()[4] == "0.0000"
    assert lines[-1].split()[:5] == ["average", "2", "0.2500", "0.2500", "0.2500"]   # flat and tree L3
    data = json.loads(json.dumps(report.to_dict(result, command=["--suite", "x"])))
    assert set(data) == {"suite", "command", "sets", "average"}
    row = data["sets"][1]["rows"][1]
    assert (row["name"], row["level"], row["span"]["tp"], row["extraction_f1"]) == ("tree L2", 2, 2, 1.0)
    assert {"micro", "per_type", "per_level", "lenient", "confusion", "sentences_per_second"} <= set(row)
    assert data["sets"][1]["levels"] == [1, 2, 3] and data["average"]["f1"] == 0.25


class Tags(HTMLParser):
    """Checks nesting (void elements aside) and collects the tags and the text of table cells."""
    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags, self.cells, self.cell = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "td":
            self.cell = ""

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)
        if tag == "td":
            self.cells.append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_html_page_is_self_contained_and_well_formed():
    page = report.page(known_result(), "eval.py --suite known.toml")
    parser = Tags()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|src=|url\(|https?:", page)        # nothing fetched, nothing run
    classes = [a.get("class") for t, a in parser.tags if t == "table"]
    assert classes == ["summary"] + ["bars", "confusion"] * 4                # flat + three level rows
    def matrix(section: str) -> dict[str, list[str]]:
        """header and rows of the confusion table under <h2>section</h2>, as cell texts"""
        table = page.split(f"<h2>{section}</h2>")[1].split('<table class="confusion">')[1].split("</table>")[0]
        head = re.findall(r'<th class="pred">(.*?)</th>', table)
        rows = {m[0]: re.findall(r"<td[^>]*>(\d*)</td>", m[1])
                for m in re.findall(r'<th class="gold">(\S+) <span class="note">\d+</span></th>(.*?)</tr>', table)}
        return {"": head, **rows}

    # gold types (most frequent first, then by name) head the columns in the rows' order, so the
    # diagonal is the diagonal; other answers follow
    assert matrix("tree L3") == {"": ["capital", "player", "athlete", "town"],
                                 "player": ["", "", "1", ""], "capital": ["", "", "", "1"]}
    assert matrix("flat") == {"": ["location", "person"], "person": ["", "1"], "location": ["", "1"]}
    assert page.count('class="diag"') == 2 + 2 + 2 + 2


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed (apt-get install -y chromium) - HTML screenshot not checked")
def test_html_page_screenshot_shows_bars_and_matrix(tmp_path):
    """In a real browser, the first screen (the table and the flat set): a bar in the label's colour
    for person (F1 0.67), none for location (F1 0), and the matrix cells holding a gold row's whole
    count shaded darkest."""
    page = tmp_path / "report.html"
    page.write_text(report.page(known_result()), encoding="utf-8")
    shot = tmp_path / "report.png"
    run = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot; chromium exited {run.returncode}:\n{run.stderr[-2000:]}"
    pixels = read_png(shot)
    assert count_color(pixels, label_color("person")) > 300
    assert count_color(pixels, label_color("location")) < 20
    assert count_color(pixels, "#4b4bff") > 300                  # rgb(75,75,255): both flat rows, all in one cell


# ---- end to end on the tiny checkpoint --------------------------------------------------------------

def test_suite_runs_one_model_over_every_set(files, tiny_ckpt, tmp_path, capsys):
    suite = write_suite(files, """
name = "tiny"
[[sets]]
name = "columns"
path = "cols.txt"
[[sets]]
name = "tree"
path = "dyn.json"
categories = "tree.json"
levels = [1, 2]
sentences = [1, 2]
""")
    out = tmp_path / "out"
    assert eval_cli.main(["--suite", str(suite), "--data-root", str(files), "--model", str(tiny_ckpt),
                          "--dtype", "fp32", "--k", "1", "--threads", "1", "--report", str(tmp_path / "r.json"),
                          "--html", str(tmp_path / "r.html"), "--save-predictions", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table if not line.startswith("-")][1:] == ["columns", "tree", "tree", "average"]
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["suite"] == "tiny" and data["options"]["k"] == 1 and data["command"][:2] == ["--suite", str(suite)]
    columns, tree = data["sets"]
    assert (columns["sentences"], tree["sentences"], tree["slice"]) == (3, 2, [1, 2])
    assert [r["name"] for r in tree["rows"]] == ["tree L1", "tree L2"]
    assert tree["labels"] == ["person", "location"] and columns["labels"] == ["person", "location", "organization"]
    assert all(r["sentences_per_second"] > 0 for s in data["sets"] for r in s["rows"])
    # every predicted path stops at level 2: the offered tree was cut there
    preds = [json.loads(line) for line in (out / "tree.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(preds) == 2 and all(len(e["path"]) <= 2 for p in preds for e in p["entities"])
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert page.count("<h3>Types on found spans") == 3                  # columns, tree L1, tree L2


# ---- the committed suites ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, sets", [("crossner-dev", 5), ("crossner-dev-demos", 5), ("dynamicner-heldout", 1),
                                        ("wikiann-dev", 8), ("conll2003-test", 1)])
def test_committed_suites_name_existing_files(name, sets):
    suite = read_suite(SUITES / f"{name}.toml", datasets_dir() or "/nonexistent")
    assert len(suite.sets) == sets
    if datasets_dir() is None:
        pytest.skip("shared datasets not found: set CASCADENER_DATA (suite parsed, files not checked)")
    for spec in suite.sets:
        assert (suite.root / spec.path).is_file(), spec.path
        assert spec.demos is None or (suite.root / spec.demos).is_file(), spec.demos


def test_the_demos_suite_is_the_zero_shot_suite_with_demonstrations():
    plain, demos = (read_suite(SUITES / f"{n}.toml", "/data") for n in ("crossner-dev", "crossner-dev-demos"))
    assert [replace(s, demos=None, shots=5) for s in demos.sets] == plain.sets
    assert all(s.demos == s.path.replace("dev.txt", "train.txt") and s.shots == 3 for s in demos.sets)


def test_dynamicner_suite_is_the_held_out_300_with_three_levels():
    if datasets_dir() is None:
        pytest.skip("shared datasets not found: set CASCADENER_DATA")
    suite = read_suite(SUITES / "dynamicner-heldout.toml", datasets_dir())
    loaded = load_set(suite.sets[0], suite.root)
    assert len(loaded.gold) == 300 and loaded.gold[0].id.endswith("sentence601")
    assert loaded.tree.depth() == 3 and len(loaded.tree.roots) == 8
    assert {len(s.path) for d in loaded.gold for s in d.spans} == {3}
