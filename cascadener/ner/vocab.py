"""The tokenizer's vocabulary as raw bytes, and a byte trie over it.

Qwen2's tokenizer is byte-level BPE: a token is a string of bytes, and its vocabulary entry spells
each byte as one printable unicode character through GPT-2's `bytes_to_unicode` table (space is
`Ġ`, newline `Ċ`, byte 0xE6 `æ`...). A multi-byte UTF-8 character may be split across tokens
(the tiny test tokenizer writes 東 as `æĿ` + `±...`), so a copy constraint has to reason about
bytes, not characters: `token_bytes` undoes the table.

The trie is a sorted list of the distinct byte strings. Tokens sharing a prefix form one
contiguous run of that list, so a trie node is just (first index, end index, prefix) and stepping
to a child is two binary searches inside the run: no per-node objects for 150k tokens, and the
build is one sort.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

from cascadener.qwen2.tokenizer import Tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the other 68 bytes are moved
    to the code points 256, 257, ... in byte order, so every byte has a visible stand-in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}


# str.translate table from the stand-in characters back to the Latin-1 character of each byte,
# so `token.translate(_TO_LATIN1).encode("latin-1")` is the token's bytes in one C-level pass.
_TO_LATIN1 = {ord(c): chr(b) for b, c in _bytes_to_unicode().items()}


def token_bytes(tokenizer: Tokenizer) -> dict[int, bytes]:
    """id -> bytes for every ordinary vocabulary token.

    Added tokens (`<|im_end|>` and the other ChatML/special markers) are left out: they are not
    byte strings of the vocabulary but atoms matched before BPE, so they can never be part of a
    copy. Nor can the embedding's padding rows past the tokenizer's vocabulary, which have no entry.
    """
    added = set(tokenizer.tok.get_added_tokens_decoder())
    out: dict[int, bytes] = {}
    for token, i in tokenizer.tok.get_vocab(with_added_tokens=False).items():
        if i in added:
            continue
        try:
            out[i] = token.translate(_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:  # a character outside the byte table: not a byte-level token
            continue
    return out


class Node(NamedTuple):
    """The tokens whose bytes start with `prefix`: trie.keys[lo:hi]."""
    lo: int
    hi: int
    prefix: bytes


class TokenTrie:
    """Byte trie of a vocabulary, stored as the sorted list of its distinct byte strings."""

    def __init__(self, vocab: dict[int, bytes]):
        by_bytes: dict[bytes, list[int]] = {}
        for i, b in vocab.items():
            by_bytes.setdefault(b, []).append(i)
        self.keys: list[bytes] = sorted(by_bytes)
        self.ids: list[tuple[int, ...]] = [tuple(sorted(by_bytes[k])) for k in self.keys]

    def root(self) -> Node:
        return Node(0, len(self.keys), b"")

    def child(self, node: Node, byte: int) -> Node | None:
        """The node one byte further down, or None when no token continues that way."""
        prefix = node.prefix + bytes((byte,))
        lo = bisect_left(self.keys, prefix, node.lo, node.hi)
        # Tokens continuing with `byte` end where those continuing with byte + 1 would begin.
        hi = bisect_left(self.keys, node.prefix + bytes((byte + 1,)), lo, node.hi) if byte < 255 else node.hi
        return Node(lo, hi, prefix) if lo < hi else None

    def tokens_at(self, node: Node) -> tuple[int, ...]:
        """Ids whose bytes are exactly the node's prefix (the shortest key sorts first in its run)."""
        return self.ids[node.lo] if self.keys[node.lo] == node.prefix else ()
