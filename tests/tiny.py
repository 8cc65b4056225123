"""Tiny random Qwen2 checkpoints in the official layout, built by the tests themselves.

Weights come from numpy's PCG64 (stable across versions and platforms), so a checkpoint built
from a seed is the same everywhere and golden numbers recorded once stay valid.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                  "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
                  "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CORPUS = [
    "Kobe Bryant played for the Los Angeles Lakers in the NBA.",
    "Angela Merkel visited Paris and Berlin in June.",
    "The European Union signed a deal with Japan.",
    "## marks ## entities ## in text ## like ##New York##.",
    "東京は日本の首都です。北京是中国的首都。",
    "person, location, organization, miscellaneous, unknown",
] * 4

TINY_CONFIG = dict(
    architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=512, hidden_size=64,
    intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    hidden_act="silu", bos_token_id=0, eos_token_id=2, use_sliding_window=False, sliding_window=512,
    max_window_layers=2, attention_dropout=0.0, torch_dtype="float32", rope_scaling=None,
)


def tiny_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def tiny_weights(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    D = C // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * D

    def w(*shape: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"model.embed_tokens.weight": w(V, C, scale=0.5), "model.norm.weight": 1 + w(C, scale=0.1)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": 1 + w(C, scale=0.1),
              p + "post_attention_layernorm.weight": 1 + w(C, scale=0.1),
              p + "self_attn.q_proj.weight": w(C, C, scale=0.2), p + "self_attn.q_proj.bias": w(C),
              p + "self_attn.k_proj.weight": w(kv, C, scale=0.2), p + "self_attn.k_proj.bias": w(kv),
              p + "self_attn.v_proj.weight": w(kv, C), p + "self_attn.v_proj.bias": w(kv),
              p + "self_attn.o_proj.weight": w(C, C),
              p + "mlp.gate_proj.weight": w(I, C), p + "mlp.up_proj.weight": w(I, C),
              p + "mlp.down_proj.weight": w(C, I)}
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = w(V, C, scale=0.5)
    return t


def write_tiny_checkpoint(out: Path, seed: int = 0, **overrides) -> Path:
    """config.json, model.safetensors, tokenizer.json and tokenizer_config.json in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TINY_CONFIG | overrides
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tiny_weights(cfg, seed), str(out / "model.safetensors"), metadata={"format": "pt"})
    tiny_tokenizer().save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
         "bos_token": None, "chat_template": QWEN2_TEMPLATE}))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0], "do_sample": False}))
    return out
