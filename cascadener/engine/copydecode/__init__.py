"""Constrained, copy-speculative extraction: the model may only copy the source and add `##` marks.

    automaton.py  the byte-level copy constraint (which tokens may come next) and the draft
    vocab.py      the tokenizer's vocabulary as bytes, and the byte trie the constraint walks
    decode.py     copy_mark: restricted-head greedy or sampled decoding with copy-speculation

Usage (the output always parses back to the source with nothing dropped):

    results = copy_mark(model, tokenizer, prompt_ids, sources)
    spans = markup.parse(sources[0], results[0].text).spans
"""
from cascadener.engine.copydecode.automaton import Allowed, CopyAutomaton, CopyConstraint, CopyState
from cascadener.engine.copydecode.decode import CopyResult, Picker, copy_mark

__all__ = ["Allowed", "CopyAutomaton", "CopyConstraint", "CopyResult", "CopyState", "Picker", "copy_mark"]
