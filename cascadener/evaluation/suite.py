"""Test sets and suites of them: what `eval.py --data FILE` and `eval.py --suite FILE` run.

A `TestSet` is a dataset spec (data/spec.py: path, name, format, scheme, lang, label_map,
categories, sentences, sample; the keys a training mixture's sources take too) and what a test
adds: the labels offered as a flat list instead of the dataset's types, for a category tree the
levels to score, the sampling seed, and in-context demonstrations. A suite file lists several
(TOML or JSON):

    name = "CrossNER dev, zero-shot"
    [defaults]              # keys every set takes unless it says otherwise
    sample = 300
    [[sets]]
    name = "AI"
    path = "crossner/ai/dev.txt"      # relative: under $CASCADENER_DATA (else the suite file's folder)

Set keys beyond the spec's: labels (a flat list), levels (list of ints), seed, demos (a labelled
file for in-context demonstrations), shots.

One model runs every set. A set with levels is tagged once, with the tree cut to its deepest
level, and scored at each level by cutting gold and predicted paths to it (`geic.metrics.at_level`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import fmean
from typing import Any, Mapping, Sequence

from cascadener.data.labels import dataset_types, load_labelled, with_paths
from cascadener.data.spec import DatasetSpec, in_range, parse_spec, read_labelled, read_table, resolve
from cascadener.evaluation.run import ModelRun, Progress, run
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.metrics import PRF, Report, at_level, confusion, score
from cascadener.geic.sampling import few_shot, stratified_subset
from cascadener.geic.spans import Document
from cascadener.ner.pipeline import CascadeNER


class SuiteError(ValueError):
    """A suite file or test set that cannot be used; the message names the file and the set."""


@dataclass(frozen=True)
class TestSet(DatasetSpec):
    labels: tuple[str, ...] = ()                       # a flat list offered instead of the dataset's types
    levels: tuple[int, ...] = ()                       # with categories: the levels to score
    seed: int = 0
    demos: str | None = None                           # labelled file for in-context demonstrations
    shots: int = 5


@dataclass
class Suite:
    name: str
    sets: list[TestSet]
    root: Path                    # where relative paths of the sets resolve


@dataclass
class LoadedSet:
    spec: TestSet
    gold: list[Document]          # readable labels, paths set (cut to the deepest level scored)
    tree: Hierarchy               # what the classifier is offered
    demos: list[Document] = field(default_factory=list)
    dropped: int = 0              # gold entities the reader could not place in their text (not scored)


@dataclass
class Row:
    """One line of the suite table: a set, or one level of a hierarchical set."""
    name: str
    level: int | None
    report: Report                # of the documents cut to the level
    confusion: dict[str, dict[str, int]]
    seconds: float

    @property
    def span(self) -> PRF:
        return self.report.per_level[self.level] if self.level else self.report.micro

    @property
    def sentences_per_second(self) -> float | None:
        return self.report.sentences / self.seconds if self.seconds else None


@dataclass
class SetResult:
    spec: TestSet
    labels: list[str]             # the top-level types offered
    run: ModelRun
    rows: list[Row]
    dropped: int = 0              # gold entities the reader could not place (not scored)


@dataclass
class SuiteResult:
    name: str
    sets: list[SetResult]

    @property
    def rows(self) -> list[Row]:
        return [r for s in self.sets for r in s.rows]

    def average(self) -> dict[str, float] | None:
        """Unweighted means over the sets (each by its deepest level), as the paper averages
        domains and languages; sentences/s over all sentences. None for fewer than two sets."""
        if len(self.sets) < 2:
            return None
        heads = [s.rows[-1] for s in self.sets]
        seconds = sum(s.run.seconds for s in self.sets)
        return {"precision": fmean(r.span.precision for r in heads), "recall": fmean(r.span.recall for r in heads),
                "f1": fmean(r.span.f1 for r in heads), "extraction_f1": fmean(r.report.extraction.f1 for r in heads),
                "lenient_f1": fmean(r.report.lenient.f1 for r in heads),
                "sentences": sum(r.report.sentences for r in heads),
                "sentences_per_second": sum(r.report.sentences for r in heads) / seconds if seconds else None}


# ---- reading suite files ----------------------------------------------------------------------------

def parse_set(record: Mapping[str, Any], where: str) -> TestSet:
    """A TestSet from one suite record (a TOML table or JSON object), checked key by key."""
    spec = parse_spec(record, where, TestSet, SuiteError)
    check(spec, where)
    return spec


def check(spec: TestSet, where: str) -> None:
    """What a test set adds to the spec, checked before any file is read."""
    if not isinstance(spec.labels, tuple) or not all(isinstance(label, str) for label in spec.labels):
        raise SuiteError(f"{where}: labels is a list, got {spec.labels!r}")
    if spec.labels and spec.categories:
        raise SuiteError(f"{where}: give labels or categories, not both")
    if not isinstance(spec.levels, tuple) or any(not isinstance(n, int) or n < 1 for n in spec.levels):
        raise SuiteError(f"{where}: levels is a list of whole numbers from 1, got {spec.levels!r}")
    if spec.levels and not spec.categories:
        raise SuiteError(f"{where}: levels need a category tree (categories)")
    if not isinstance(spec.shots, int) or spec.shots < 1:
        raise SuiteError(f"{where}: shots must be a whole number >= 1, got {spec.shots!r}")


def read_suite(path: str | Path, root: str | Path | None = None) -> Suite:
    """A suite file (.toml or .json). Relative data paths resolve under `root`, else
    $CASCADENER_DATA, else the suite file's folder."""
    path = Path(path)
    data = read_table(path, SuiteError)
    if not isinstance(data.get("sets"), list) or not data["sets"]:
        raise SuiteError(f"{path}: a suite has a non-empty list 'sets' of test sets")
    unknown = sorted(set(data) - {"name", "defaults", "sets"})
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key {unknown[0]!r} (name, defaults, sets)")
    defaults = data.get("defaults", {})
    sets = []
    for i, record in enumerate(data["sets"], 1):
        if not isinstance(record, dict):
            raise SuiteError(f"{path}: set {i} is not a table/object")
        sets.append(parse_set(defaults | record, f"{path}: set {i} ({record.get('name') or record.get('path')})"))
    root = Path(root or os.environ.get("CASCADENER_DATA") or path.parent)
    return Suite(str(data.get("name") or path.stem), sets, root)


# ---- loading a test set -----------------------------------------------------------------------------

def cut_tree(tree: Hierarchy, depth: int) -> Hierarchy:
    """The tree without its nodes below `depth` (synonyms of the kept nodes stay)."""
    nested: dict = {}
    for p in tree.paths():
        if len(p) <= depth:
            node = nested
            for name in p:
                node = node.setdefault(name, {})
    kept = {p[-1] for p in tree.paths() if len(p) <= depth}
    return Hierarchy.from_tree(nested, {n: alts for n, alts in tree.synonyms.items() if n in kept})


def load_set(spec: TestSet, root: str | Path = ".", limit: int | None = None) -> LoadedSet:
    """Read, relabel, cut and sample one test set. Raises ValueError/OSError (DataError names the
    file and line) for anything wrong with it."""
    root = Path(root)
    read = read_labelled(spec, root, Hierarchy.flat(spec.labels) if spec.labels else None)
    tree = read.given or Hierarchy.flat(dataset_types(read.documents))     # the whole file's types
    gold = with_paths(in_range(read.documents, spec, SuiteError), tree)
    if spec.levels:
        deepest = max(spec.levels)
        if deepest > tree.depth():
            raise SuiteError(f"{spec.title}: level {deepest} asked, but {spec.categories} has {tree.depth()}")
        gold, tree = at_level(gold, deepest), cut_tree(tree, deepest)
    if spec.sample:
        gold = stratified_subset(gold, spec.sample, seed=spec.seed)
    gold = gold[:limit] if limit else gold
    if not gold:
        raise SuiteError(f"{spec.title}: no sentences to evaluate in {spec.path}")
    # paths, so a demonstration's mention is marked under whichever of its ancestors is offered
    demos = with_paths(few_shot(load_labelled(resolve(spec.demos, root), read.given, read.names, lang=spec.lang),
                                spec.shots, seed=spec.seed), tree) if spec.demos else []
    return LoadedSet(spec, gold, tree, demos, len(read.dropped))


# ---- running ----------------------------------------------------------------------------------------

def rows_of(spec: TestSet, result: ModelRun) -> list[Row]:
    """The set's table rows: one per level asked, or one for the set."""
    if not spec.levels:
        return [Row(spec.title, None, result.report, confusion(result.gold, result.predictions), result.seconds)]
    rows = []
    for level in sorted(set(spec.levels)):
        gold, pred = at_level(result.gold, level), at_level(result.predictions, level)
        rows.append(Row(f"{spec.title} L{level}", level, score(gold, pred), confusion(gold, pred), result.seconds))
    return rows


def evaluate(ner: CascadeNER, loaded: LoadedSet, chunk: int = 1024, progress: Progress | None = None) -> SetResult:
    """Tag one loaded set with `ner` (its own demonstrations, when it has some) and score it."""
    if loaded.demos:
        ner = replace(ner, demos=loaded.demos)
    result = run(ner, loaded.gold, loaded.tree, chunk=chunk, progress=progress)
    return SetResult(loaded.spec, loaded.tree.roots, result, rows_of(loaded.spec, result), loaded.dropped)


def evaluate_all(ner: CascadeNER, name: str, sets: Sequence[LoadedSet], chunk: int = 1024,
                 progress: Progress | None = None) -> SuiteResult:
    return SuiteResult(name, [evaluate(ner, s, chunk, progress) for s in sets])
