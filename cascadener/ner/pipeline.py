"""CascadeNER end to end: extract (k runs, fused) -> classify (one prompt per mention, down the tree).

Where the NER side drives the engine (with the constraints of copy.py and labels.py, the prompts of
prompts.py); the engine itself knows nothing of entities. Data flows one way:
text -> segments -> extraction prompts -> engine -> marked outputs -> spans (parse, fuse)
     -> classification prompts per mention (in its segment) and level -> engine -> labels -> Document.
A prompt never holds more than a segment, and a long text goes to the engine in parts of at most
SEGMENTS_PER_CALL segments, so memory and time grow with a text's length no faster than linearly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from cascadener.engine.chat import ChatEngine
from cascadener.geic import fusion, markup
from cascadener.geic.hierarchy import UNKNOWN, Hierarchy
from cascadener.geic.segment import enclosing, segments
from cascadener.geic.spans import Document, Span
from cascadener.ner.copy import CopyConstraint
from cascadener.ner.labels import LabelChoice
from cascadener.ner.prompts import PROMPT_FORMATS, PromptFormat, get_format, match_label, top_list
from cascadener.ner.trained import Trained, agreed, prompts_named

MIN_SEGMENT_CHARS = 10   # a shorter piece holds a word or two: most entities would be cut apart
# At most this many segments go to the engine at once: what it keeps per request (prompt, copy
# automaton, answer) is then bounded whatever the length of a text, and a long text is tagged in
# parts, each a text of its own. Small enough that a part's extraction prompts and answers stay in
# the engine's prefix cache (engine/prefix_cache.py, 32k tokens) until its classification reuses
# them: at 1,024 segments of a few hundred tokens each they were evicted first and recomputed.
SEGMENTS_PER_CALL = 128


@dataclass(frozen=True)
class Options:
    """How the pipeline runs; every field is checked here, so a bad value fails at construction
    (ValueError naming the field) instead of silently tagging nothing."""
    k: int = 3                        # extraction runs; 1 = greedy (deterministic), >1 = sampled, fused
    min_votes: int = 1                # keep a span seen in at least this many of the k runs (1 = union, the paper)
    prompt_format: str = "paper"      # a name in prompts.PROMPT_FORMATS
    system: str | None = None         # None = the format's own default
    zero_shot: bool = False           # offer "unknown" (the paper's zero-shot setting)
    constrain: bool = True            # extraction copies the source under a constraint, and labels are
                                      # decoded among the candidates (always valid, with a probability), instead of
                                      # free text that is parsed and matched
    seed: int = 0
    max_segment_chars: int = 600      # longer texts are split (geic/segment.py); a mention's prompt holds its segment
    label_tokens: int = 16            # generation budget for one label answer

    def __post_init__(self) -> None:
        for name in ("k", "min_votes", "label_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.min_votes > self.k:
            raise ValueError(f"min_votes {self.min_votes} is more than k {self.k}: a span is found by at most "
                             "k runs, so nothing would be kept")
        if not isinstance(self.max_segment_chars, int) or self.max_segment_chars < MIN_SEGMENT_CHARS:
            raise ValueError(f"max_segment_chars must be at least {MIN_SEGMENT_CHARS}, got {self.max_segment_chars!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt_format {self.prompt_format!r}; choose from {sorted(PROMPT_FORMATS)}")


def fitted(options: Options | None, trained: Trained | None) -> Options:
    """`options` for weights trained as `trained` records: None takes its prompt format and system
    prompt, a format or system prompt given that differs is refused (ValueError)."""
    if trained is None:
        return options or Options()
    if options is None:
        return Options(prompt_format=trained.prompt_format, system=trained.system)
    if options.system is None:
        options = replace(options, system=trained.system)
    if (options.prompt_format, options.system) != trained.prompts:
        fix = (f"use --prompt-format {trained.prompt_format} (or leave it out)"
               if options.prompt_format != trained.prompt_format else "leave --system out")
        raise ValueError(f"{trained.record.parent} was trained on {trained.describe()} ({trained.record}) and "
                         f"answers no others, not {prompts_named(options.prompt_format, options.system)}: {fix}")
    return options


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
    format: PromptFormat = field(init=False, repr=False)     # options.prompt_format, resolved once

    def __post_init__(self) -> None:
        self.format = get_format(self.options.prompt_format, self.options.system, self.demos)
        # only the joint format's prompts share a head (PromptFormat.head)
        if (self.extractor.base or self.classifier.base) is not None and not self.format.lists_types:
            raise ValueError(f"activated adapters read each sentence's head with the base model; the "
                             f"{self.format.name!r} prompt format has none: use --prompt-format joint")

    @classmethod
    def load(cls, model: str | Path | None = None, extractor: str | Path | None = None,
             classifier: str | Path | None = None, extractor_adapter: str | Path | None = None,
             classifier_adapter: str | Path | None = None, dtype: torch.dtype = torch.bfloat16,
             batch_size: int = 32, options: Options | None = None, demos: Sequence[Document] = (),
             reuse_prefixes: bool = True, int8: bool = False, device: str = "auto") -> CascadeNER:
        """Two checkpoints, or one base with two adapters, or one plain instruct model for both.
        device: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N". `options` None: the
        defaults, with the prompt format the weights were trained on (ner/trained.py)."""
        ext_path, cls_path = extractor or model, classifier or model
        if ext_path is None or cls_path is None:
            raise ValueError("give --model DIR, or both --extractor DIR and --classifier DIR")
        options = fitted(options, agreed([ext_path, cls_path, extractor_adapter, classifier_adapter]))
        ext = ChatEngine.load(ext_path, extractor_adapter, dtype, batch_size, reuse_prefixes, int8, device)
        same = Path(ext_path) == Path(cls_path) and extractor_adapter == classifier_adapter
        clf = ext if same else ChatEngine.load(cls_path, classifier_adapter, dtype, batch_size, reuse_prefixes,
                                               int8, device, beside=ext if Path(ext_path) == Path(cls_path) else None)
        return cls(ext, clf, options, demos)

    # --- public API ------------------------------------------------------------------------------

    def predict(self, text: str, labels: Sequence[str] | None = None,
                categories: Hierarchy | None = None, lang: str = "en") -> Document:
        return self.predict_batch([text], labels, categories, lang)[0]

    def predict_batch(self, texts: Sequence[str], labels: Sequence[str] | None = None,
                      categories: Hierarchy | None = None, lang: str = "en") -> list[Document]:
        tree = resolve_categories(labels, categories)
        start = time.perf_counter()
        typed: list[list[Span]] = [[] for _ in texts]
        for group in part_groups(texts, self.options.max_segment_chars, SEGMENTS_PER_CALL):
            parts = [texts[i][s:e] for i, s, e in group]
            for (i, s, _), found in zip(group, self.classify(parts, self.extract(parts, tree), tree)):
                typed[i] += [replace(sp, start=sp.start + s, end=sp.end + s) for sp in found]
        self.stats.texts += len(texts)
        self.stats.seconds += time.perf_counter() - start
        return [Document(t, s, lang=lang) for t, s in zip(texts, typed)]

    def forget(self) -> None:
        """Drop the engines' cached prefixes. Numbers then depend only on the texts of the next call
        (in bfloat16 a prefix computed in an earlier, differently shaped batch rounds differently):
        a resumed job that forgets before every chunk writes what an uninterrupted one writes."""
        shared = self.classifier.prefix_cache is self.extractor.prefix_cache     # activated adapters on one base
        self.extractor.forget()
        if shared:
            self.classifier.prefix_cache = self.extractor.prefix_cache
        else:
            self.classifier.forget()

    # --- stage 1: extraction ---------------------------------------------------------------------

    def extract(self, texts: Sequence[str], categories: Hierarchy | None = None) -> list[list[Span]]:
        """Unlabelled entity spans per text: k runs per segment, parsed, fused. `categories` is
        needed only by the joint prompt format, whose extraction prompt lists the top-level types."""
        o, fmt = self.options, self.format
        types = categories.roots if categories is not None else ()
        pieces = [(i, s, e) for i, t in enumerate(texts) for s, e in segments(t, o.max_segment_chars)]
        # Each distinct segment is asked once: duplicates (common in real corpora) cost nothing, and a
        # segment's k runs are runs 0..k-1 of its prompt whatever else the call holds, so its samples
        # do not depend on whether a twin came in the same chunk.
        unique = list(dict.fromkeys(texts[i][s:e] for i, s, e in pieces))
        # The k runs get identical requests: the engine batches them together, they share one
        # prefill, and each draws from its own stream (seeded by the text and the run's index).
        # Under `constrain` the answer can only be the source plus marks: nothing invented or lost.
        copy = CopyConstraint.for_tokenizer(self.extractor.tokenizer) if o.constrain else None
        convs, params, constraints = [], [], []
        for seg in unique:
            automaton = copy.for_source(seg) if copy is not None else None
            budget = automaton.max_tokens if automaton is not None else 2 * self.extractor.count_tokens(seg) + 32
            convs += [fmt.extraction(seg, types, o.zero_shot)] * o.k
            params += [self.extractor.sampling(o.k > 1, budget, seed=o.seed if o.k > 1 else None)] * o.k
            constraints += [automaton] * o.k
        heads = [fmt.head(seg, types, o.zero_shot) for seg in unique for _ in range(o.k)] \
            if self.extractor.base is not None else None        # only an activated adapter reads them
        outputs = self.extractor.complete(convs, params, constraints, heads)
        self.stats.segments += len(pieces)
        self.stats.extraction_prompts += len(convs)
        found: dict[str, list[list[Span]]] = {}       # segment -> its spans in each run, segment offsets
        for u, seg in enumerate(unique):
            found[seg] = []
            for out in outputs[u * o.k:(u + 1) * o.k]:
                parsed = markup.parse(seg, out.text)
                self.stats.unaligned_marks += parsed.dropped
                self.stats.truncated_outputs += not out.finished
                self.stats.unfaithful_outputs += not parsed.faithful
                found[seg].append(parsed.spans)
        runs_per_text: list[list[list[Span]]] = [[[] for _ in range(o.k)] for _ in texts]
        for i, s, e in pieces:
            for run, spans in enumerate(found[texts[i][s:e]]):
                runs_per_text[i][run] += [Span(sp.start + s, sp.end + s) for sp in spans]
        return [fusion.fuse(runs, min_votes=o.min_votes) for runs in runs_per_text]

    # --- stage 2: classification -----------------------------------------------------------------

    def classify(self, texts: Sequence[str], spans: Sequence[Sequence[Span]], tree: Hierarchy) -> list[list[Span]]:
        """Label every span, level by level down the tree; all mentions of a level in one batch."""
        fmt, o = self.format, self.options
        paths: dict[tuple[int, int], tuple[str, ...]] = {}
        probs: dict[tuple[int, int], float] = {}
        history: dict[tuple[int, int], list[tuple[list[str], str]]] = {}   # what each mention was asked
        frontier = [(i, j, tree.roots) for i, ss in enumerate(spans) for j in range(len(ss))]
        context = [in_segments(t, ss, o.max_segment_chars) for t, ss in zip(texts, spans)]
        while frontier:
            convs = [fmt.classification(*context[i][j], cands, o.zero_shot, history.get((i, j), ()))
                     for i, j, cands in frontier]
            heads = [fmt.head(context[i][j][0], top_list(cands, history.get((i, j), ())), o.zero_shot)
                     for i, j, cands in frontier] if self.classifier.base is not None else None
            options = [list(cands) + ([UNKNOWN] if o.zero_shot else []) for _, _, cands in frontier]
            answers = self.answer(convs, options, heads)
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

    def answer(self, convs: list[list[dict]], options: list[list[str]],
               heads: list[list[dict] | None] | None = None) -> list[tuple[str | None, float | None]]:
        """(label or None when off the list, probability when scored) for each conversation;
        `heads` as in ChatEngine.complete."""
        if self.options.constrain:
            tok = self.classifier.tokenizer
            end = tok.stop_ids[:1]          # the end-of-turn token closes every answer
            choices = [LabelChoice([tok.encode(a) + end for a in opts]) for opts in options]
            params = [self.classifier.sampling(False, max(map(len, c.candidates))) for c in choices]
            outs = self.classifier.complete(convs, params, choices, heads)
            return [(opts[c.chosen(out.tokens)], math.exp(out.logprob)) for c, out, opts in zip(choices, outs, options)]
        params = self.classifier.sampling(False, self.options.label_tokens)
        return [(match_label(c.text, opts), None)
                for c, opts in zip(self.classifier.complete(convs, params, heads=heads), options)]


def part_groups(texts: Sequence[str], max_chars: int, per_call: int) -> list[list[tuple[int, int, int]]]:
    """The texts as parts (text index, start, end), in order, grouped so that a group holds at most
    `per_call` segments. A text of more segments is cut into parts between two of its segments;
    spans never cross a segment, so a part's spans, shifted by its start, are the text's."""
    groups: list[list[tuple[int, int, int]]] = [[]]
    size = 0
    for i, text in enumerate(texts):
        pieces = segments(text, max_chars)
        for j in range(0, max(len(pieces), 1), per_call):
            run = pieces[j:j + per_call]
            part = (i, run[0][0], run[-1][1]) if len(pieces) > per_call else (i, 0, len(text))
            if groups[-1] and size + len(run) > per_call:
                groups.append([])
                size = 0
            groups[-1].append(part)
            size += len(run)
    return groups if groups[-1] else []


def in_segments(text: str, spans: Sequence[Span], max_chars: int) -> list[tuple[str, Span]]:
    """Each span with the context it is classified in: the segment it was extracted from (the few
    consecutive segments around it, for a span from elsewhere that crosses a cut), and its offsets
    within that. Never the whole text, so a prompt's length does not grow with the text's; and in
    the joint format a segment's extraction prompt is the head of its mentions' classification
    prompts, which the prefix cache reuses. Labels go back on the caller's spans, in the text's offsets."""
    pieces = segments(text, max_chars)
    out = []
    for sp in spans:
        s, e = enclosing(pieces, sp.start, sp.end)
        out.append((text[s:e], Span(sp.start - s, sp.end - s)))
    return out


def resolve_categories(labels: Sequence[str] | None, categories: Hierarchy | None) -> Hierarchy:
    """labels=["person", ...] (a flat list; a bare string is refused with TypeError) or categories=Hierarchy."""
    if (labels is None) == (categories is None):
        raise ValueError("give exactly one of labels=[...] (a flat list) or categories=Hierarchy")
    tree = categories if categories is not None else Hierarchy.flat(labels)
    if not tree.roots:
        raise ValueError("no entity types to classify into: the label list or category tree is empty")
    return tree
