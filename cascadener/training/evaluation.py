"""Dev-set span F1 of the model being trained, through the inference pipeline itself.

Loss says little about whether the extractor copies faithfully or the classifier picks the right
type, so the run is judged the way infer.py will use it: greedy decoding with the same prompt
format. The extractor is scored on unlabelled spans; the classifier labels the gold mentions
(so its F1 is its accuracy on them, free of extraction errors). Each process decodes its share.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from cascadener.engine.chat import ChatEngine
from cascadener.geic.hierarchy import Hierarchy
from cascadener.geic.metrics import PRF, score
from cascadener.geic.spans import Document, Span
from cascadener.qwen2.lora import merged
from cascadener.ner.pipeline import CascadeNER, Options
from cascadener.training.distributed import World


def predict(ner: CascadeNER, task: str, docs: Sequence[Document], tree: Hierarchy) -> list[Document]:
    texts = [d.text for d in docs]
    if task == "extract":
        spans = ner.extract(texts, tree)
    elif task == "joint":                 # one adapter for both stages: the whole cascade
        spans = ner.classify(texts, ner.extract(texts, tree), tree)
    else:
        spans = ner.classify(texts, [[Span(s.start, s.end) for s in d.spans] for d in docs], tree)
    return [replace(d, spans=s) for d, s in zip(docs, spans)]


def dev_scores(engine: ChatEngine, options: Options, task: str, docs: Sequence[Document], tree: Hierarchy,
               world: World) -> PRF:
    """Decoded with the adapters merged into copies of the base weights: the model runs as
    infer.py runs it (no autocast, no adapter matmuls), several times faster than unmerged."""
    model = engine.model
    model.eval()
    try:
        with merged(model):
            mine = predict(CascadeNER(engine, engine, options), task, docs[world.rank::world.size], tree)
    finally:
        model.train()
    gold = [d for rank in range(world.size) for d in docs[rank::world.size]]   # the order gather() returns
    report = score(gold, world.gather(mine))
    return report.extraction if task == "extract" else report.micro

