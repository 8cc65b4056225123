"""Category trees of any depth, read from the authors' files or a flat label list.

A node is identified by its path from a root, coarse -> fine, e.g. ("location", "address",
"road"). Names alone can repeat: in DynamicNER "address" is both a second-level node and one of
its own leaves, and "biological" is a science category and a weapon leaf. `path(name)` resolves a
name to its leaf when exactly one leaf carries it (dataset labels are leaves), else to its only
node, and raises when that is still ambiguous; `duplicates()` lists every repeated name.

Names are normalised: lower case, single spaces, and the upstream typo "transortation" (in
DynamicNER's category.json) corrected, so both upstream files give the same tree.

Every malformed tree is refused with a :class:`CategoryError` that names the file (and the line and
column of a JSON syntax error): a name that is not a string, a name twice under one parent, a
tree deeper than MAX_DEPTH levels, a file with no categories at all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Iterable, Mapping, Union

UNKNOWN = "unknown"   # the classifier's answer when no offered type fits (zero-shot)

NodePath = tuple[str, ...]
Tree = Union[Mapping[str, "Tree"], Iterable[str], None]

_TYPOS = {"transortation": "transportation"}
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
MAX_DEPTH = len(_ORDINALS)   # as deep as the levels format can say; each level is one more prompt per mention


class CategoryError(ValueError):
    """A category tree or label list that cannot be used; the message names the file when there is one."""


def normalize(name: str) -> str:
    words = name.lower().split()
    return " ".join(_TYPOS.get(w, w) for w in words)


def label_list(text: str) -> list[str]:
    """A comma-separated list of names ("person, location"); an empty item is a typo, not a name."""
    items = [n.strip() for n in text.split(",")]
    if "" in items:
        raise CategoryError(f"name {items.index('') + 1} of {len(items)} is empty")
    return items


def _split(where: str, names: object) -> list[str]:
    """A levels file's comma list."""
    if not isinstance(names, str):
        raise CategoryError(f"{where}: expected a comma-separated string of names, got {names!r}")
    try:
        return label_list(names)
    except CategoryError as e:
        raise CategoryError(f"{where}: {e} in {names!r}") from None


@dataclass
class Hierarchy:
    """A category forest. Build it with `load`, `from_levels`, `from_tree` or `flat`."""
    _children: dict[NodePath, list[str]] = field(default_factory=dict)  # () holds the roots
    _by_name: dict[str, list[NodePath]] = field(default_factory=dict)
    synonyms: dict[str, list[str]] = field(default_factory=dict)        # node name -> synonyms

    # ---- construction ----------------------------------------------------------------------
    def _add(self, parent: NodePath, name: object) -> NodePath:
        where = " > ".join(parent) or "the root"
        if not isinstance(name, str) or not name.strip():
            raise CategoryError(f"under {where}: expected a category name, got {name!r}")
        if len(parent) >= MAX_DEPTH:
            raise CategoryError(f"under {where}: the tree is deeper than {MAX_DEPTH} levels")
        name = normalize(name)
        siblings = self._children.setdefault(parent, [])
        if name in siblings:
            raise CategoryError(f"{name!r} appears twice under {where}")
        if name == UNKNOWN:
            raise CategoryError(f"{UNKNOWN!r} is reserved for the zero-shot answer, not a category")
        siblings.append(name)
        self._by_name.setdefault(name, []).append(parent + (name,))
        return parent + (name,)

    @classmethod
    def from_tree(cls, tree: Tree, synonyms: Mapping[str, Iterable[str]] | None = None) -> Hierarchy:
        """Nested JSON: {L1: {L2: [L3, ...]}}, to any depth; a list holds leaf names."""
        h = cls()

        def walk(parent: NodePath, sub: Tree) -> None:
            if sub is None:
                return
            if isinstance(sub, Mapping):
                for name, below in sub.items():
                    walk(h._add(parent, name), below)
            elif isinstance(sub, (list, tuple)):
                for name in sub:
                    h._add(parent, name)
            else:
                raise CategoryError(f"under {' > '.join(parent) or 'the root'}: expected a mapping or a list "
                                    f"of names, got {sub!r}")
        walk((), tree)
        return h._with_synonyms(synonyms)

    @classmethod
    def from_levels(cls, data: Mapping, synonyms: Mapping[str, Iterable[str]] | None = None) -> Hierarchy:
        """The authors' DynamicNER.json: "first-level" is a comma list, each deeper level maps a
        name of the level above to a comma list of its children. A name with no entry is a leaf."""
        h = cls()
        keys = list(takewhile(lambda k: k in data, (f"{o}-level" for o in _ORDINALS)))
        if not keys:
            raise CategoryError("not a levels file: no 'first-level' key")
        frontier = [h._add((), n) for n in _split("first-level", data["first-level"])]
        for key in keys[1:]:
            by_name: dict[str, NodePath] = {}
            for p in frontier:
                if p[-1] in by_name:
                    raise CategoryError(f"{key}: parent name {p[-1]!r} is not unique on its level")
                by_name[p[-1]] = p
            if not isinstance(data[key], Mapping):
                raise CategoryError(f"{key}: expected a mapping of parent name -> comma list, got {data[key]!r}")
            frontier = []
            for parent, names in data[key].items():
                if normalize(parent) not in by_name:
                    raise CategoryError(f"{key}: {parent!r} is not a node of the level above")
                frontier += [h._add(by_name[normalize(parent)], n) for n in _split(f"{key} {parent!r}", names)]
        return h._with_synonyms(synonyms)

    @classmethod
    def flat(cls, labels: Iterable[str], synonyms: Mapping[str, Iterable[str]] | None = None) -> Hierarchy:
        """A flat label set (e.g. CoNLL's PER/ORG/LOC/MISC): one level of roots."""
        if isinstance(labels, str):     # list("person") would be six one-letter labels
            raise TypeError(f"labels must be a list of names such as [{labels!r}], not the string {labels!r}")
        return cls.from_tree(list(labels), synonyms)

    @classmethod
    def load(cls, path: str | Path, synonyms: Mapping[str, Iterable[str]] | None = None) -> Hierarchy:
        """A levels file, a nested JSON tree (or list), or a text file of one label per line.

        A file is JSON when its name ends in .json or its first character is ``{`` or ``[``; a JSON
        file that does not parse is an error, never read as labels."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")     # -sig: a byte-order mark is not a label
        except FileNotFoundError:
            raise CategoryError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CategoryError(f"{path}: cannot read ({e})") from None
        if path.suffix.lower() != ".json" and not text.lstrip().startswith(("{", "[")):
            return cls._from_lines(text, str(path), synonyms)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CategoryError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise CategoryError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None
        levels = isinstance(data, Mapping) and "first-level" in data
        try:
            tree = cls.from_levels(data, synonyms) if levels else cls.from_tree(data, synonyms)
        except CategoryError as e:
            raise CategoryError(f"{path}: {e}") from None
        if not tree.roots:
            raise CategoryError(f"{path}: no categories: the tree is empty")
        return tree

    @classmethod
    def _from_lines(cls, text: str, source: str, synonyms: Mapping[str, Iterable[str]] | None) -> Hierarchy:
        """One label per line (a flat list); blank lines are skipped. Errors name the line."""
        h = cls()
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    h._add((), line.strip())
                except CategoryError as e:
                    raise CategoryError(f"{source}:{n}: {e}") from None
        if not h.roots:
            raise CategoryError(f"{source}: no categories: the file has no labels")
        return h._with_synonyms(synonyms)

    def _with_synonyms(self, synonyms: Mapping[str, Iterable[str]] | None) -> Hierarchy:
        owner: dict[str, str] = {}
        for name, alts in (synonyms or {}).items():
            name = normalize(name)
            if name not in self._by_name:
                raise KeyError(f"synonyms given for {name!r}, which is not in the hierarchy")
            self.synonyms[name] = [normalize(a) for a in alts]
            for alt in self.synonyms[name]:
                # A synonym must name one thing, or path() would have to guess.
                if alt in self._by_name or alt == UNKNOWN:
                    raise ValueError(f"synonym {alt!r} of {name!r} is itself a category name")
                if owner.setdefault(alt, name) != name:
                    raise ValueError(f"synonym {alt!r} is given for both {owner[alt]!r} and {name!r}")
        return self

    # ---- queries ---------------------------------------------------------------------------
    @property
    def roots(self) -> list[str]:
        return list(self._children.get((), []))

    def children(self, node: str | NodePath) -> list[str]:
        """Children of a node given by path, or by a name that `path` resolves."""
        p = node if isinstance(node, tuple) else self.path(node)
        return list(self._children.get(p, []))

    def paths(self) -> list[NodePath]:
        """Every node, parents before children, siblings in file order."""
        out: list[NodePath] = []

        def walk(p: NodePath) -> None:
            for name in self._children.get(p, []):
                out.append(p + (name,))
                walk(p + (name,))
        walk(())
        return out

    def depth(self) -> int:
        return max((len(p) for p in self.paths()), default=0)

    def is_leaf(self, p: NodePath) -> bool:
        return not self._children.get(p)

    def duplicates(self) -> dict[str, list[NodePath]]:
        """Names carried by more than one node, with their paths."""
        return {n: list(ps) for n, ps in self._by_name.items() if len(ps) > 1}

    def path(self, name: str) -> NodePath:
        """Path coarse -> fine of the node called `name` (or one of its synonyms).

        Prefers the single leaf of that name; UNKNOWN maps to (UNKNOWN,). Raises KeyError for a
        name not in the tree and ValueError when the name stays ambiguous.
        """
        resolved = self._resolve(name)
        if resolved is None:
            raise KeyError(f"{name!r} is not a category (or synonym) of this hierarchy")
        if resolved == UNKNOWN:
            return (UNKNOWN,)
        nodes = self._by_name[resolved]
        leaves = [p for p in nodes if self.is_leaf(p)]
        if len(nodes) > 1 and len(leaves) != 1:
            raise ValueError(f"{name!r} is ambiguous: {nodes}; pass a path instead")
        return leaves[0] if len(nodes) > 1 else nodes[0]

    def _resolve(self, name: str) -> str | None:
        name = normalize(name)
        if name == UNKNOWN or name in self._by_name:
            return name
        return next((n for n, alts in self.synonyms.items() if name in alts), None)
