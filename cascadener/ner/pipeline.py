"""CascadeNER end to end: extract (k runs, fused) -> classify (one prompt per mention, down the tree).

The only module that knows both entities and models. Data flows one way:
text -> segments -> extraction prompts -> engine -> marked outputs -> spans (parse, fuse)
     -> classification prompts per mention and level -> engine -> labels -> Document.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from cascadener.engine.chat import ChatEngine
from cascadener.geic import fusion, markup
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.segment import segments
from cascadener.geic.spans import Document, Span
from cascadener.ner.prompts import UNKNOWN, PromptFormat, get_format, match_label


@dataclass
class Options:
    k: int = 3                        # extraction runs; 1 = greedy (deterministic), >1 = sampled, fused
    min_votes: int = 1                # keep a span seen in at least this many of the k runs (1 = union, the paper)
    prompt_format: str = "paper"
    system: str | None = None         # None = the format's own default
    zero_shot: bool = False           # offer "unknown" (the paper's zero-shot setting)
    constrain: bool = True            # extraction copies the source under a constraint, and labels are
                                      # decoded among the candidates (always valid, with a probability), instead of
                                      # free text that is parsed and matched
    seed: int = 0
    max_segment_chars: int = 600      # longer texts are split at sentence ends, offsets mapped back
    label_tokens: int = 16            # generation budget for one label answer


@dataclass
class Stats:
    texts: int = 0
    segments: int = 0
    extraction_prompts: int = 0
    classification_prompts: int = 0
    unaligned_marks: int = 0          # marked mentions the parser could not place in the source
    truncated_outputs: int = 0        # extraction outputs cut off by the token budget
    unfaithful_outputs: int = 0       # extraction outputs that are not the source plus paired marks
    off_list_answers: int = 0         # classifier answers that were not one of the candidates
    seconds: float = 0.0

    def add(self, other: Stats) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class CascadeNER:
    extractor: ChatEngine
    classifier: ChatEngine
    options: Options = field(default_factory=Options)
    demos: Sequence[Document] = ()
    stats: Stats = field(default_factory=Stats)

    @classmethod
    def load(cls, model: str | Path | None = None, extractor: str | Path | None = None,
             classifier: str | Path | None = None, extractor_adapter: str | Path | None = None,
             classifier_adapter: str | Path | None = None, dtype: torch.dtype = torch.bfloat16,
             batch_size: int = 32, options: Options | None = None, demos: Sequence[Document] = (),
             reuse_prefixes: bool = True, int8: bool = False) -> CascadeNER:
        """Two checkpoints, or one base with two adapters, or one plain instruct model for both."""
        ext_path, cls_path = extractor or model, classifier or model
        if ext_path is None or cls_path is None:
            raise ValueError("give --model DIR, or both --extractor DIR and --classifier DIR")
        ext = ChatEngine.load(ext_path, extractor_adapter, dtype, batch_size, reuse_prefixes, int8)
        same = Path(ext_path) == Path(cls_path) and extractor_adapter == classifier_adapter
        clf = ext if same else ChatEngine.load(cls_path, classifier_adapter, dtype, batch_size, reuse_prefixes, int8)
        return cls(ext, clf, options or Options(), demos)

    def prompt_format(self) -> PromptFormat:
        return get_format(self.options.prompt_format, self.options.system, self.demos)

    # --- public API ------------------------------------------------------------------------------

    def predict(self, text: str, labels: Sequence[str] | None = None,
                categories: Hierarchy | None = None, lang: str = "en") -> Document:
        return self.predict_batch([text], labels, categories, lang)[0]

    def predict_batch(self, texts: Sequence[str], labels: Sequence[str] | None = None,
                      categories: Hierarchy | None = None, lang: str = "en") -> list[Document]:
        tree = resolve_categories(labels, categories)
        start = time.perf_counter()
        spans = self.extract(texts, tree)
        typed = self.classify(texts, spans, tree)
        self.stats.texts += len(texts)
        self.stats.seconds += time.perf_counter() - start
        return [Document(t, s, lang=lang) for t, s in zip(texts, typed)]

    # --- stage 1: extraction ---------------------------------------------------------------------

    def extract(self, texts: Sequence[str], categories: Hierarchy | None = None) -> list[list[Span]]:
        """Unlabelled entity spans per text: k runs per segment, parsed, fused. `categories` is
        needed only by the joint prompt format, whose extraction prompt lists the top-level types."""
        o, fmt = self.options, self.prompt_format()
        types = categories.roots if categories is not None else ()
        pieces = [(i, s, e) for i, t in enumerate(texts) for s, e in segments(t, o.max_segment_chars)]
        convs, params = [], []
        for i, s, e in pieces:
            seg = texts[i][s:e]
            budget = 2 * self.extractor.count_tokens(seg) + 32   # a copy plus room for the marks
            # The k runs get identical requests: the engine batches them together, they share one
            # prefill, and each row still draws its own sample.
            convs += [fmt.extraction(seg, types, o.zero_shot)] * o.k
            params += [self.extractor.sampling(o.k > 1, budget, seed=o.seed if o.k > 1 else None)] * o.k
        if o.constrain:     # the output can only be the source plus marks: nothing invented or lost
            sources = [texts[i][s:e] for i, s, e in pieces for _ in range(o.k)]
            outputs = self.extractor.copy_mark(convs, sources, params[0] if params else None)
        else:
            outputs = self.extractor.complete(convs, params)
        self.stats.segments += len(pieces)
        self.stats.extraction_prompts += len(convs)
        runs_per_text: list[list[list[Span]]] = [[[] for _ in range(o.k)] for _ in texts]
        for n, (i, s, e) in enumerate(pieces):
            for run in range(o.k):
                out = outputs[n * o.k + run]
                parsed = markup.parse(texts[i][s:e], out.text)
                self.stats.unaligned_marks += parsed.dropped
                self.stats.truncated_outputs += not out.finished
                self.stats.unfaithful_outputs += not parsed.faithful
                runs_per_text[i][run] += [Span(sp.start + s, sp.end + s) for sp in parsed.spans]
        return [fusion.fuse(runs, min_votes=o.min_votes) for runs in runs_per_text]

    # --- stage 2: classification -----------------------------------------------------------------

    def classify(self, texts: Sequence[str], spans: Sequence[Sequence[Span]], tree: Hierarchy) -> list[list[Span]]:
        """Label every span, level by level down the tree; all mentions of a level in one batch."""
        fmt, o = self.prompt_format(), self.options
        paths: dict[tuple[int, int], tuple[str, ...]] = {}
        probs: dict[tuple[int, int], float] = {}
        history: dict[tuple[int, int], list[tuple[list[str], str]]] = {}   # what each mention was asked
        frontier = [(i, j, tree.roots) for i, ss in enumerate(spans) for j in range(len(ss))]
        while frontier:
            convs = [fmt.classification(texts[i], spans[i][j], cands, o.zero_shot, history.get((i, j), ()))
                     for i, j, cands in frontier]
            options = [list(cands) + ([UNKNOWN] if o.zero_shot else []) for _, _, cands in frontier]
            answers = self.answer(convs, options)
            self.stats.classification_prompts += len(convs)
            nxt = []
            for (i, j, cands), (label, p) in zip(frontier, answers):
                path = paths.get((i, j), ())
                if label is None:
                    self.stats.off_list_answers += 1
                if label is None or label == UNKNOWN:
                    paths[(i, j)] = path or (UNKNOWN,)       # stop here; keep what the coarser levels said
                    continue
                paths[(i, j)] = path + (label,)
                history.setdefault((i, j), []).append((list(cands), label))
                if p is not None:                            # the probability of the whole path
                    probs[(i, j)] = probs.get((i, j), 1.0) * p
                children = tree.children(paths[(i, j)])   # by path: names repeat across levels
                if children:
                    nxt.append((i, j, children))
            frontier = nxt
        return [[Span(sp.start, sp.end, paths[(i, j)][-1], paths[(i, j)], probs.get((i, j)))
                 for j, sp in enumerate(ss)] for i, ss in enumerate(spans)]

    def answer(self, convs: list[list[dict]], options: list[list[str]]) -> list[tuple[str | None, float | None]]:
        """(label or None when off the list, probability when scored) for each conversation."""
        if self.options.constrain:
            return [(c.answer, c.probability) for c in self.classifier.choose(convs, options)]
        params = self.classifier.sampling(False, self.options.label_tokens)
        return [(match_label(c.text, opts), None) for c, opts in zip(self.classifier.complete(convs, params), options)]


def resolve_categories(labels: Sequence[str] | None, categories: Hierarchy | None) -> Hierarchy:
    if (labels is None) == (categories is None):
        raise ValueError("give exactly one of labels=[...] (a flat list) or categories=Hierarchy")
    return categories if categories is not None else Hierarchy.flat(list(labels))


def default_threads() -> None:
    """Use every core; tokenizers' own thread pool would only fight torch for them."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(os.cpu_count() or 1)
