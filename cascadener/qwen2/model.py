"""Qwen2 decoder in plain PyTorch: config, modules and the forward pass. No weights are read here
(cascadener.qwen2.checkpoint reads them and config.json), and no NER.

Reading order follows nanoGPT: RMSNorm -> rotary helpers -> Attention -> MLP -> Block -> config -> Qwen2.
The math matches Hugging Face's modeling_qwen2.py to float32 rounding; the traps it avoids are
called out where they occur.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from cascadener.kernels import attention, rmsnorm, rope

from cascadener.qwen2.cache import AttentionMeta, KVCache, causal_pad_mask


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32, cast back, *then* scale: in bfloat16 the order changes the rounding.
        # kernels/rmsnorm.py has the line-by-line reference; `fast` is bit-identical to it.
        return rmsnorm.fast(x, self.weight, self.eps)


# --- Rotary position embedding -------------------------------------------------------------------
# Qwen2 uses the "split halves" convention: dimension i is rotated together with i + head_dim/2
# (not with its neighbour i+1, as in Meta's complex-number Llama code). The angle table is built in
# float32 whatever the model dtype, because positions up to 32k times frequencies near 1 lose
# all precision in bfloat16; only the finished cos/sin are cast to the activation dtype. The rotation
# itself is kernels/rope.py (reference and a bit-identical fast path).

def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin of shape (B, T, head_dim) for integer positions (B, T)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[..., None] * inv_freq          # (B, T, head_dim/2)
    emb = torch.cat((angles, angles), dim=-1)                 # (B, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


# --- Attention -----------------------------------------------------------------------------------
# Grouped-query attention: 14 query heads share 2 key/value heads in the 0.5B model. Query head h
# reads kv head h // (n_head / n_kv_head), i.e. kv heads are repeated *contiguously*
# (repeat_interleave), never tiled:
#
#     q heads:  0 1 2 3 4 5 6 | 7 8 9 10 11 12 13
#     kv head:  0 0 0 0 0 0 0 | 1 1 1  1  1  1  1

class Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_head * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv_head * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv_head * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=False)
        self.qkv_proj: nn.Module | None = None      # set by an inference form only (see `project`)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of the tokens x (N, C). The checkpoint, LoRA and training keep Hugging Face's three
        layers; an inference form may stack them into one `qkv_proj` (cascadener.engine.fastlinear):
        the same dot products, with one call streaming the weights instead of three."""
        if self.qkv_proj is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        kv = self.n_kv_head * self.head_dim
        return self.qkv_proj(x).split((self.n_head * self.head_dim, kv, kv), dim=-1)

    def forward(self, x: torch.Tensor, meta: AttentionMeta, cache: KVCache | None) -> torch.Tensor:
        """x (N, C): the real tokens only (see AttentionMeta); attention itself runs on the grid."""
        B, T = meta.grid
        q, k, v = self.project(x)
        q = meta.to_grid(q).view(B, T, self.n_head, self.head_dim).transpose(1, 2)         # (B, H, T, D)
        k = meta.to_grid(k).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)      # (B, Hkv, T, D)
        v = meta.to_grid(v).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rope.fast(q, meta.rope), rope.fast(k, meta.rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)                                      # (B, Hkv, S, D)
        # An explicit mask, never is_causal: with a cache the query block sits at the *end* of the
        # keys, and SDPA's is_causal aligns it to the top-left corner instead. kernels/attention.py
        # picks a grouped matmul (short blocks on a CPU) or SDPA.
        y = attention.fast(q, k, v, meta.mask)
        return self.o_proj(meta.from_grid(y.transpose(1, 2).reshape(B * T, self.n_head * self.head_dim)))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: Qwen2Config, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, meta: AttentionMeta, cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), meta, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


# --- Config --------------------------------------------------------------------------------------

class ConfigError(ValueError):
    pass


# Fields of an HF config.json that carry no information for inference here. Sliding window:
# every released Qwen2/2.5 checkpoint ships use_sliding_window=false, which makes `sliding_window`
# and `max_window_layers` inert; a config that turns it on is refused rather than run wrongly.
_IGNORED_FIELDS = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "initializer_range", "attention_dropout", "sliding_window", "max_window_layers",
    "pad_token_id", "_name_or_path", "layer_types", "output_attentions", "output_hidden_states",
    "return_dict", "use_return_dict", "is_encoder_decoder", "quantization_config_disabled",
}


@dataclass
class Qwen2Config:
    vocab_size: int = 151936                # embedding rows; the tokenizer may use fewer ids (padding rows)
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = True             # Qwen2: q/k/v have a bias; False loads Llama-style layers
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_sliding_window: bool = False
    rope_scaling: dict | None = None
    head_dim: int = 0                       # 0 = hidden_size // num_attention_heads

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by "
                                  f"num_attention_heads {self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise ConfigError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.hidden_act != "silu":
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported (Qwen2 uses 'silu')")
        if self.use_sliding_window:
            raise ConfigError("use_sliding_window=true is not supported; released Qwen2 models set it false")
        if self.rope_scaling:
            raise ConfigError(f"rope_scaling {self.rope_scaling!r} is not supported (only plain RoPE)")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> Qwen2Config:
        if d.get("model_type", "qwen2") not in ("qwen2", "llama"):
            raise ConfigError(f"{source}: model_type {d['model_type']!r} is not a Qwen2-family model")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - _IGNORED_FIELDS)
        if unknown:
            raise ConfigError(f"{source}: unknown config fields {unknown}")
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @property
    def eos_ids(self) -> list[int]:
        e = self.eos_token_id
        return [] if e is None else [e] if isinstance(e, int) else list(e)


# --- The model -----------------------------------------------------------------------------------

class Qwen2(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pad_mask: torch.Tensor | None = None,
                logits_at: torch.Tensor | slice | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T', V) in float32.

        pad_mask (B, T) marks real tokens (True) against left padding. With a cache it describes
        only the new tokens; positions continue from what the cache holds for each row.
        logits_at selects the positions whose logits are wanted (e.g. slice(-1, None) while
        decoding): the head is over a quarter of the 0.5B model's weights, so skip what is unused.
        """
        x = self.hidden_states(idx, cache, pad_mask)
        if logits_at is not None:
            x = x[:, logits_at]
        # A 2-D contiguous input: on CPU in bfloat16 the strided 3-D slice takes a matmul path
        # up to 40x slower for the same numbers.
        B, T, C = x.shape
        return self.lm_head(x.reshape(B * T, C)).view(B, T, -1).float()

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None,
                      pad_mask: torch.Tensor | None = None,
                      layout: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, T, C): what the LM head (or a restricted head) reads.

        layout = (positions (B, T), mask (B, 1, T, T)), without a cache, replaces the causal
        order: training packs a sentence's examples as a token tree (training/batches.py).
        pad_mask None: every token is real. With a cache whose `begin` reads nothing back either,
        the forward then never waits for the device, so it can be captured as a CUDA graph
        (cascadener.engine.graphs)."""
        B, T = idx.shape
        real = torch.ones_like(idx, dtype=torch.bool) if pad_mask is None else pad_mask
        if layout is not None:
            assert cache is None, "a packed layout is for uncached (training) forwards"
            positions, mask = layout
        elif cache is not None:
            positions, mask = cache.begin(real)
        else:
            positions, mask = uncached_positions_and_mask(real)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, self.dtype)
        meta = AttentionMeta.for_pad_mask(rope.tables(cos, sin), mask, pad_mask, (B, T))
        x = self.embed_tokens(meta.from_grid(idx.reshape(B * T, 1)).squeeze(1))         # (N, C)
        for block in self.layers:
            x = block(x, meta, cache)
        return meta.to_grid(self.norm(x)).view(B, T, -1)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device


def uncached_positions_and_mask(pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Positions count real tokens only, so a left-padded row sees the same positions as alone."""
    positions = (pad_mask.long().cumsum(-1) - 1).clamp(min=0)
    if bool(pad_mask.all()):
        T = pad_mask.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=pad_mask.device).tril()
        return positions, causal[None, None]
    return positions, causal_pad_mask(pad_mask, pad_mask, offset=0)


def bytes_per_token_decode(model: Qwen2) -> int:
    """Weight bytes a batch-1 decode step must stream: every weight once (parameters, and the int8
    buffers of a quantized model), except the embedding table, of which only one row is gathered
    unless the LM head reads it too (tied)."""
    tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers())}.values()
    total = sum(t.numel() * t.element_size() for t in tensors)
    emb = model.embed_tokens.weight
    tied = getattr(model.lm_head, "weight", None) is emb
    return total if tied else total - emb.numel() * emb.element_size()


__all__ = ["Qwen2", "Qwen2Config", "ConfigError", "RMSNorm", "rope_cos_sin", "bytes_per_token_decode"]
