"""Tokenizer round trips and the hand-written ChatML against the checkpoints' own Jinja templates."""
from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cascadener import load_tokenizer
from cascadener.qwen2.tokenizer import default_system_prompt

REPO = Path(__file__).resolve().parent.parent
SHARED_TOKENIZER = Path(os.environ.get("CASCADENER_TOKENIZER", REPO.parent / "shared/assets/qwen2-tokenizer"))
QWEN25_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

CONVERSATIONS = [
    [{"role": "user", "content": "Kobe was in NBA"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "北京"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "##a##"}, {"role": "user", "content": "b\n c"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
]


def real_tokenizer_dir() -> Path:
    if not (SHARED_TOKENIZER / "tokenizer.json").exists():
        pytest.skip(f"real Qwen2 tokenizer not found at {SHARED_TOKENIZER} (set CASCADENER_TOKENIZER)")
    return SHARED_TOKENIZER


@lru_cache(maxsize=None)
def cached_tokenizer(path: Path):
    return load_tokenizer(path)


def jinja_render(template: str, messages, add_generation_prompt: bool) -> str:
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 renders the reference template")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)   # as transformers configures it
    env.filters["tojson"] = json.dumps
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, tools=None)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("gen", [True, False])
def test_chatml_equals_the_checkpoint_template(messages, gen, tiny_ckpt):
    for path in (tiny_ckpt, real_tokenizer_dir()):
        tok = cached_tokenizer(path)
        template = json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
        assert tok.apply_chat_template(messages, add_generation_prompt=gen) == jinja_render(template, messages, gen)


def test_default_system_comes_from_the_checkpoint(tiny_ckpt):
    assert load_tokenizer(tiny_ckpt).default_system == "You are a helpful assistant."     # Qwen2 template
    assert load_tokenizer(real_tokenizer_dir()).default_system == QWEN25_DEFAULT          # Qwen2.5 template
    assert default_system_prompt(None) is None


def test_real_tokenizer_known_ids():
    tok = cached_tokenizer(real_tokenizer_dir())
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.encode("##Kobe## was in ##NBA##") == [565, 42, 15422, 565, 572, 304, 7704, 45, 7064, 565]
    assert tok.encode("<|im_start|>user") == [151644, 872]
    assert tok.stop_ids == [151645, 151643] and tok.vocab_size == 151665


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_up_to_nfc(text):
    tok = cached_tokenizer(real_tokenizer_dir())
    assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_tiny_round_trip_up_to_nfc(tiny_ckpt, text):
    tok = cached_tokenizer(tiny_ckpt)
    assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)
