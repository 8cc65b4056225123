"""The copy constraint: an automaton over output bytes that admits exactly the markings of a source.

Handed to the engine as a request's constraint (cascadener.engine.constraint): `allowed` gives the
tokens that may come next, `draft` guesses the rest of the copy for copy-speculation.

Extraction asks the model to write the source again with each entity wrapped in `##`
(`markup.render`). Marking is the model's only freedom, so the constraint is:

* with the marks taken out, the output is the source, byte for byte: nothing invented, nothing
  dropped, nothing re-spelt;
* marks alternate open/close, sit between characters (never inside a UTF-8 sequence or an escape
  pair), and every mention holds a non-blank character (`markup.parse` would drop a blank one);
* `<|im_end|>` only once the whole source is copied and no mention is open.

Why bytes and not tokens: the marks change how the text tokenizes (` New`
becomes `Ġ##` + `New`; `###` and `####` are single tokens), and byte-level BPE splits multi-byte
characters, so neither the source's token ids nor its characters line up with the output tokens.

Texts containing `#` are handled, not refused: `markup` renders them in escaped form (`\\#` for `#`,
`\\\\` for `\\`), so the automaton copies the *escaped* source, where a `#` is always the second byte
of an escape pair. Marks are forbidden inside a pair, so a `#` at a mark position always starts a
mark and a `#` inside a pair is always text: the automaton stays deterministic.

The target is the source's own bytes. The tokenizer NFC-normalises what it encodes (the prompt,
the draft), so a source not in NFC is still copied exactly as given, not as normalised: character
offsets into it stay right, at the price of drafts that miss on the unnormalised characters.

State, after any prefix of the output: (bytes of the target copied, mention open?, open mention
non-blank yet?, one `#` of a mark written?). Each byte leads to at most one next state, and from a
state at most two bytes are possible (the next target byte, or `#`), so the tokens allowed next are
found by walking the vocabulary trie along those two branches only.

Every allowed step keeps completion possible (a mention opens only with a non-blank character
still ahead), so constrained decoding cannot get stuck, and an output is at most
`CopyAutomaton.max_tokens` tokens long whatever the model does.
"""
from __future__ import annotations

import weakref
from typing import Callable, NamedTuple

import torch

from cascadener.engine.constraint import END, Allowed
from cascadener.geic import markup
from cascadener.ner.vocab import TokenTrie, token_bytes
from cascadener.qwen2.tokenizer import IM_END, Tokenizer

HASH = ord("#")


class CopyState(NamedTuple):
    pos: int            # bytes of the target copied so far
    open: bool          # inside a ## ... ## mention
    content: bool       # the open mention already holds a non-blank character
    half_mark: bool     # one `#` of a mark is written and its partner must come next


class CopyConstraint:
    """The tokenizer-dependent half of the constraint (vocabulary bytes and trie), built once."""

    _built: dict[int, tuple[weakref.ref, CopyConstraint]] = {}

    def __init__(self, vocab: dict[int, bytes], end_id: int, encode: Callable[[str], list[int]]):
        self.vocab = vocab
        self.trie = TokenTrie(vocab)
        self.end_id = end_id
        self.encode = encode

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> CopyConstraint:
        """The constraint for this tokenizer, cached for as long as the tokenizer lives."""
        hit = cls._built.get(id(tokenizer))
        if hit is not None and hit[0]() is tokenizer:
            return hit[1]
        end_id = tokenizer.token_to_id(IM_END)
        if end_id is None:
            raise ValueError(f"the tokenizer has no {IM_END} token to end a copy with")
        built = cls(token_bytes(tokenizer), end_id, tokenizer.encode)
        cls._built[id(tokenizer)] = (weakref.ref(tokenizer), built)
        return built

    def for_source(self, source: str) -> CopyAutomaton:
        return CopyAutomaton(self, source)


class CopyAutomaton:
    """The constraint for one source text: which tokens may follow an output prefix. States are
    CopyState tuples; the end token is allowed once the copy is complete, and ends the answer."""

    def __init__(self, constraint: CopyConstraint, source: str):
        self.constraint = constraint
        self.source = source
        self.end_id = constraint.end_id
        escape = markup.escaped(source)
        # The target is the source as `markup.render` writes it; build it character by character
        # to know where characters (and escape pairs) begin and which bytes are white space.
        pieces = [("\\" + ch if escape and ch in "\\#" else ch).encode() for ch in source]
        self.target = b"".join(pieces)
        self.boundary = [False] * (len(self.target) + 1)    # may a mark go before byte i?
        self.blank: list[bool] = []                         # is byte i part of a white-space character?
        for ch, piece in zip(source, pieces):
            self.boundary[len(self.blank)] = True
            self.blank += [ch.isspace()] * len(piece)
        self.boundary[-1] = True
        self.nonblank_ahead = [False] * (len(self.target) + 1)
        for i in range(len(self.target) - 1, -1, -1):
            self.nonblank_ahead[i] = self.nonblank_ahead[i + 1] or not self.blank[i]
        self.start = CopyState(0, False, False, False)
        self._allowed: dict[CopyState, Allowed] = {}

    @property
    def max_tokens(self) -> int:
        """An upper bound on the output length, end token included: each target byte once, and
        per mention (which needs a non-blank character of its own) four `#` bytes; every token
        is at least one byte."""
        return len(self.target) + 4 * sum(not ch.isspace() for ch in self.source) + 1

    # --- one byte at a time ------------------------------------------------------------------------

    def step(self, state: CopyState, byte: int) -> CopyState | None:
        """The state after writing `byte`, or None when the constraint forbids it."""
        if state.half_mark:
            return CopyState(state.pos, not state.open, False, False) if byte == HASH else None
        if byte == HASH and self._mark_allowed(state):
            return state._replace(half_mark=True)
        if state.pos < len(self.target) and byte == self.target[state.pos]:
            content = state.content or (state.open and not self.blank[state.pos])
            return CopyState(state.pos + 1, state.open, content, False)
        return None

    def _mark_allowed(self, state: CopyState) -> bool:
        """Closing needs a non-blank mention; opening needs a non-blank character left to enclose."""
        if not self.boundary[state.pos]:
            return False
        return state.content if state.open else self.nonblank_ahead[state.pos]

    def can_end(self, state: CopyState) -> bool:
        return state.pos == len(self.target) and not state.open and not state.half_mark

    # --- whole tokens -------------------------------------------------------------------------------

    def advance(self, state: CopyState, token: int) -> CopyState | None:
        """The state after `token` (None if forbidden); the end token keeps an accepting state."""
        if token == self.end_id:
            return state if self.can_end(state) else None
        data = self.constraint.vocab.get(token)    # None: a special token or an embedding pad row
        if data is None:
            return None
        for byte in data:
            if (state := self.step(state, byte)) is None:
                return None
        return state

    def accepts(self, tokens: list[int]) -> bool:
        """Is `tokens` (without the end token) a complete, faithful marking of the source?"""
        state: CopyState | None = self.start
        for t in tokens:
            if (state := self.advance(state, t)) is None:
                return False
        return self.can_end(state)

    def allowed(self, state: CopyState) -> Allowed:
        """Every token allowed in `state` (memoised: speculation revisits states)."""
        hit = self._allowed.get(state)
        if hit is None:
            hit = self._allowed[state] = self._walk(state)
        return hit

    def _walk(self, state: CopyState) -> Allowed:
        """Depth-first through the trie, running the automaton alongside: a branch dies as soon as
        either the automaton forbids its byte or no token continues with it."""
        trie, nexts = self.constraint.trie, {}
        stack = [(trie.root(), state)]
        while stack:
            node, here = stack.pop()
            candidates = {HASH} | ({self.target[here.pos]} if here.pos < len(self.target) else set())
            for byte in candidates:
                after = self.step(here, byte)
                child = trie.child(node, byte) if after is not None else None
                if child is not None:
                    nexts.update(dict.fromkeys(trie.tokens_at(child), after))
                    stack.append((child, after))
        if self.can_end(state):
            nexts[self.end_id] = END
        if not nexts:   # only a vocabulary without some single-byte token could do this
            raise RuntimeError(f"no token can continue the copy of {self.source!r} from {state}")
        return Allowed(torch.tensor(sorted(nexts), dtype=torch.long), nexts)

    def done(self, state: CopyState) -> bool:
        return False            # a copy ends with its end token

    def draft(self, state: CopyState, n: int) -> list[int]:
        """Up to n tokens guessing the model goes on copying without marks: the tokenizer's own
        split of the rest of the target (re-tokenized from here, since marks change the split),
        then the end token. Nothing is guessed in the middle of a UTF-8 sequence."""
        rest = (b"#" if state.half_mark else b"") + self.target[state.pos:]
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:
            return []
        return (self.constraint.encode(text) + [self.end_id])[:n] if n > 0 else []
