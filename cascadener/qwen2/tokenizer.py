"""The Qwen2 tokenizer (byte-level BPE from tokenizer.json) and the ChatML template, written by hand.

ChatML as the checkpoints' own Jinja template renders it (tool calls aside):

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{query}<|im_end|>\\n<|im_start|>assistant\\n

When the conversation has no system turn the template inserts a default one, and that default
differs between Qwen2 ("You are a helpful assistant.") and Qwen2.5 ("You are Qwen, created by
Alibaba Cloud. ..."), so it is read from the checkpoint's tokenizer_config.json, never assumed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as HFTokenizerFile  # the Rust tokenizer library, not transformers

from cascadener.qwen2.checkpoint import read_json_object

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# The default system turn sits in the template as a literal between these markers.
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system\\n((?:(?!<\|im_end\|>)[^'\"{}])*)<\|im_end\|>")


class TokenizerError(ValueError):
    pass


def default_system_prompt(chat_template: str | None) -> str | None:
    """The literal system prompt a Qwen chat template inserts when none is given, if any."""
    if not chat_template:
        return None
    m = _DEFAULT_SYSTEM.search(chat_template)
    return m.group(1) if m else None


@dataclass
class Tokenizer:
    tok: HFTokenizerFile
    default_system: str | None = None
    stop_tokens: tuple[str, ...] = (IM_END, ENDOFTEXT)
    _stop_ids: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._stop_ids = [i for t in self.stop_tokens if (i := self.tok.token_to_id(t)) is not None]

    def encode(self, text: str) -> list[int]:
        # add_special_tokens=False: Qwen2 adds no BOS; ChatML markers in the text are still
        # recognised as single special tokens because they are added tokens.
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce; embedding rows past this are padding."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    @property
    def stop_ids(self) -> list[int]:
        return list(self._stop_ids)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        parts = []
        if (not messages or messages[0]["role"] != "system") and self.default_system is not None:
            parts.append(f"{IM_START}system\n{self.default_system}{IM_END}\n")
        for i, m in enumerate(messages):
            if m.get("role") not in ("system", "user", "assistant"):
                raise TokenizerError(f"message {i}: role {m.get('role')!r} is not system, user or assistant")
            parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
        if add_generation_prompt:
            parts.append(f"{IM_START}assistant\n")
        return "".join(parts)

    def head_length(self, prompt: Sequence[int], head: list[dict]) -> int:
        """How many leading tokens of `prompt` belong to the conversation `head`, whose last message
        the prompt leaves open (continues it, or closes it): the tokens on which the prompt and the
        head, rendered without its last end of turn and encoded alone, agree. The text after the
        head may merge with its last characters into other tokens (".\n" is one token), so the
        agreement counts, not the head's own length; at most len(prompt) - 1, so that what reads
        past the head computes at least the prompt's last token, where the answer starts."""
        text = self.apply_chat_template(head, add_generation_prompt=False)
        closing = f"{IM_END}\n"
        if not text.endswith(closing):
            raise TokenizerError("a head conversation must end with a message")
        ids = self.encode(text[:-len(closing)])
        n = min(len(ids), len(prompt) - 1)
        return next((i for i in range(n) if ids[i] != prompt[i]), max(n, 0))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load tokenizer.json and the tokenizer_config.json beside it (a checkpoint dir, or the tokenizer.json file)."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.exists():
        raise TokenizerError(f"{path}: no tokenizer.json (expected a checkpoint in the Hugging Face layout)")
    try:
        tok = HFTokenizerFile.from_file(str(file))
    except Exception as e:
        raise TokenizerError(f"{file}: cannot load tokenizer ({e})") from None
    # Required: without it the default system turn, and so every prompt, would silently change.
    config_file = file.parent / "tokenizer_config.json"
    if not config_file.exists():
        raise TokenizerError(f"{config_file}: missing (a checkpoint in the Hugging Face layout has "
                             "tokenizer.json and tokenizer_config.json)")
    config = read_json_object(config_file, TokenizerError)
    return Tokenizer(tok, default_system=default_system_prompt(config.get("chat_template")))
