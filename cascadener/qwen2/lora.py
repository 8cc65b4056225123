"""Low-rank adapters (LoRA) written by hand, saved and loaded in the PEFT directory layout.

    y = W x + (B (A dropout(x))) * alpha / r        A: (r, in), B: (out, r), B starts at zero

so a fresh adapter leaves the model unchanged. Merging folds B A * scale into W once, after which
inference costs nothing extra; unmerge takes it out again exactly enough for training to resume.

An *activated* adapter (after Greenewald et al. 2025, "Activated LoRA") acts only from a point in
each prompt on: the tokens before it are read by the base model alone. Two such adapters on one
base then share the base's keys and values of what their prompts have in common (the cascade's
extractor and classifier: the type list and the sentence), so the second one never computes the
sentence again. Training gates the adapter per token (`gated`); inference runs the base and the
merged model side by side (cascadener.engine.scheduler), which needs no gate.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cascadener.qwen2.checkpoint import hf_name

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterError(ValueError):
    pass


@dataclass
class LoRAConfig:
    r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(ALL_TARGETS))
    use_rslora: bool = False            # scale alpha / sqrt(r) instead of alpha / r
    activated: bool = False             # acts from each prompt's activation point on (see above)

    @property
    def scale(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_peft(self, base: str = "") -> dict:
        # `activated` is this project's own field: written only when set, so that a plain
        # adapter's file is exactly PEFT's (PEFT would run an activated one on every token).
        mine = {k: v for k, v in asdict(self).items() if k != "activated" or v}
        return mine | {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none",
                       "fan_in_fan_out": False, "base_model_name_or_path": base, "modules_to_save": None}

    @classmethod
    def from_peft(cls, d: dict, source: str) -> LoRAConfig:
        if d.get("peft_type", "LORA") != "LORA":
            raise AdapterError(f"{source}: peft_type {d['peft_type']!r} is not LORA")
        if d.get("bias", "none") != "none" or d.get("modules_to_save"):
            raise AdapterError(f"{source}: adapters with trained biases or modules_to_save are not supported")
        targets = d.get("target_modules") or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        unknown = sorted(set(targets) - set(ALL_TARGETS))
        if unknown:
            raise AdapterError(f"{source}: unsupported target modules {unknown}")
        return cls(r=d["r"], lora_alpha=d.get("lora_alpha", d["r"]), lora_dropout=d.get("lora_dropout", 0.0),
                   target_modules=targets, use_rslora=d.get("use_rslora", False),
                   activated=bool(d.get("activated", False)))


class LoRALinear(nn.Module):
    """y = base(x) + B(A(dropout(x))) * scale. The adapters are float32 whatever the base's dtype:
    they are the master weights AdamW updates, and they merge into the base in float32."""

    def __init__(self, base: nn.Linear, r: int, scale: float, dropout: float):
        super().__init__()
        self.base = base
        self.scale = scale
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=torch.float32, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # PEFT's init: B = 0 makes the start exact
        self.merged = False
        self.gate: torch.Tensor | None = None       # (N, 1): 1 where the adapter acts (see `gated`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        # under bf16 autocast the two small matmuls run in bfloat16; without it, in float32
        h = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        if self.gate is not None:
            h = h * self.gate
        return y + (h * self.scale).to(y.dtype)

    def delta(self) -> torch.Tensor:
        return (self.lora_B.float() @ self.lora_A.float() * self.scale).to(self.base.weight.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta()
            self.merged = False


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def inject(model: nn.Module, cfg: LoRAConfig) -> dict[str, LoRALinear]:
    """Wrap every targeted linear of the decoder layers; freeze everything but the adapters."""
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in cfg.target_modules and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, cfg.r, cfg.scale, cfg.lora_dropout))
    layers = lora_layers(model)
    if not layers:
        raise AdapterError(f"no module matched target_modules {cfg.target_modules}")
    return layers


def peft_key(layer_name: str, which: str) -> str:
    """Our module path -> PEFT's tensor name, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight."""
    return PEFT_PREFIX + hf_name(f"{layer_name}.{which}.weight")


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {peft_key(n, w): getattr(m, w).detach().contiguous()
            for n, m in lora_layers(model).items() for w in ("lora_A", "lora_B")}


def save_adapter(model: nn.Module, cfg: LoRAConfig, out: str | Path, base: str = "") -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (ADAPTER_WEIGHTS + ".tmp")
    save_file(adapter_state(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(out / ADAPTER_WEIGHTS)
    (out / ADAPTER_CONFIG).write_text(json.dumps(cfg.to_peft(base), indent=2) + "\n")


def load_adapter(model: nn.Module, path: str | Path, merge: bool = True) -> LoRAConfig:
    """Attach a PEFT-layout LoRA adapter. merge=True (inference) folds it into the weights and
    removes the wrappers, so the model runs at plain speed; merge=False keeps it trainable."""
    path = Path(path)
    for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (path / f).exists():
            raise AdapterError(f"{path}: no {f} (expected a PEFT LoRA adapter directory)")
    try:
        peft = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path / ADAPTER_CONFIG}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise AdapterError(f"{path / ADAPTER_CONFIG}: not UTF-8 text ({e})") from None
    cfg = LoRAConfig.from_peft(peft, str(path / ADAPTER_CONFIG))
    try:
        tensors = load_file(str(path / ADAPTER_WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise AdapterError(f"{path / ADAPTER_WEIGHTS}: corrupt or truncated safetensors file ({e})") from None
    # PEFT may or may not insert the adapter name ("default") into the key.
    tensors = {k.replace(".default.weight", ".weight"): v for k, v in tensors.items()}
    layers = inject(model, cfg)
    expected = {peft_key(n, w): (m, w) for n, m in layers.items() for w in ("lora_A", "lora_B")}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AdapterError(f"{path / ADAPTER_WEIGHTS}: missing {missing[:3]} unexpected {unexpected[:3]} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected)")
    with torch.no_grad():
        for key, (module, which) in expected.items():
            param = getattr(module, which)
            if tensors[key].shape != param.shape:
                raise AdapterError(f"{path / ADAPTER_WEIGHTS}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                                   f"expected {tuple(param.shape)}")
            param.copy_(tensors[key])
    if merge:
        merge_all(model)
        strip_adapters(model)
    return cfg


@contextmanager
def gated(model: nn.Module, gate: torch.Tensor | None) -> Iterator[nn.Module]:
    """Forwards in which the adapters act on the tokens where `gate` (N,) is True only, N being the
    rows the linear layers see (the model's real tokens, in order); None: on every token."""
    layers = list(lora_layers(model).values())
    g = None if gate is None else gate.to(torch.float32)[:, None]
    for m in layers:
        m.gate = g
    try:
        yield model
    finally:
        for m in layers:
            m.gate = None


def merge_all(model: nn.Module) -> None:
    for m in lora_layers(model).values():
        m.merge()


@contextmanager
def merged(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model at plain speed with every adapter folded into a *copy* of its base weight,
    and put the untouched originals back afterwards. (merge then unmerge would round a bfloat16
    base twice and drift it a little at every evaluation of a training run.)"""
    layers = list(lora_layers(model).values())
    originals = [m.base.weight for m in layers]
    try:
        with torch.no_grad():
            for m in layers:
                m.base.weight = nn.Parameter(m.base.weight + m.delta(), requires_grad=False)
                m.merged = True
        yield model
    finally:
        for m, w in zip(layers, originals):
            m.base.weight, m.merged = w, False


def strip_adapters(model: nn.Module) -> None:
    """Replace every LoRALinear by its (merged or untouched) base linear: the plain model again."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.base)
