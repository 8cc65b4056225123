"""10,000 random (text, model output) pairs through parse: it must never raise, and its spans must
always be valid. Outputs are mostly corrupted renders (what a small model writes), some pure noise.
A seeded generator, not hypothesis, so the run is fixed and fast."""
import random

from cascadener.geic.markup import parse, render
from cascadener.geic.spans import Span

ALPHABET = "abcKJ  \t\n#\\.,'北京é\u0301\U0001F600İ"
WORDS = ["Kobe", "Paris", "NBA", "the", "in", "#tag", "C#", "\\", "北京", "  ", "##", "Jordan"]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))


def random_spans(rng: random.Random, text: str) -> list[Span]:
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 6))))
    return [Span(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]


def corrupt(rng: random.Random, out: str) -> str:
    chars = list(out)
    for _ in range(rng.randint(0, 6)):
        op, i = rng.randrange(5), rng.randint(0, len(chars))
        if op == 0 and i < len(chars):
            del chars[i]
        elif op == 1:
            chars.insert(i, rng.choice(ALPHABET))
        elif op == 2:
            chars.insert(i, "##")
        elif op == 3 and i < len(chars):
            chars[i] = chars[i].upper()
        else:
            chars.insert(i, rng.choice(WORDS) + " ")
    return "".join(chars)


def test_parse_survives_10k_random_outputs():
    rng = random.Random(1234)
    kept = 0
    for _ in range(10_000):
        text = random_text(rng)
        if rng.random() < 0.8:
            output = corrupt(rng, render(text, random_spans(rng, text)))
        else:
            output = random_text(rng)
        result = parse(text, output)
        for s in result.spans:
            assert 0 <= s.start < s.end <= len(text), (text, output)
            assert not text[s.start].isspace() and not text[s.end - 1].isspace(), (text, output)
        assert all(a.end <= b.start for a, b in zip(result.spans, result.spans[1:])), (text, output)
        kept += len(result.spans)
    assert kept > 5_000   # the corruptions are mild: most mentions must survive them
