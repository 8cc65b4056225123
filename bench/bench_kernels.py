"""Kernel benchmark: reference vs fast path of every op in kernels/, at the real Qwen2-0.5B shapes.

One command:

    python bench/bench_kernels.py                      # all ops, fp32 + bf16, 5 rounds
    python bench/bench_kernels.py --ops attention int8 --dtypes bf16 --rounds 9 --json out.json

Shapes: hidden 896, 14 query heads / 2 kv heads of 64, MLP 4864, vocabulary 151936. Modes: decode
at batch 1 and batch 8 (one new token per row), prefill of 256 tokens at batch 1; the int8 linear at
M = 1, 8 and 256 rows (the LM head at 1 and 8 only: prefill needs logits at one position). Attention at
decode reads a cache of S slots through a (B, Hkv, S, D) view of a larger buffer, as
KVStore.update (cascadener.engine.kv) returns it; at batch 8 the rows are left-padded, so a boolean mask is used.

Weights and caches are read cold, as in decode, where each layer's weights and K/V are read once
per token from DRAM: an op whose operands fit the 32 MiB L3 is given enough clones of them (at least
COLD_BYTES in all) to cycle through, so a benchmark loop cannot serve them from cache. (rmsnorm and
rope read only activations, which are cache-hot in the model too.)

Method: the VM's speed drifts 2-3x over minutes and other jobs share the two cores, so
* every variant of a case is timed back to back within a round, in rotating order, and a case's
  rounds are spread over the whole run (round r of every case, then round r+1 ...);
* a sample is the mean over enough calls to last ~5 ms (microsecond ops are below timer noise);
* the figure kept is the best sample over all rounds;
* with --wait-quiet S, each round first waits up to S seconds for other processes to use < 15% of
  the CPUs, and the busy fraction seen is printed, so a noisy run says so.

Accuracy column: `max|Δ|` against the case's first variant (the reference; "=" when
bit-identical). For int8 it is `rel err`, max|y - y_true| / max|y_true| against the float32 linear
of the *unquantized* weight, for the baseline bf16/fp32 linear as well, so int8's error can be read
next to bf16's own rounding; `*` marks the path cascadener.kernels.int8_linear.fast takes at that shape. With the real checkpoint present (--model, default as bench_core.py)
the int8 rows use its weights (layer 12 and the tied embedding); activations are random N(0, 1).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark this tree's cascadener.kernels, whatever else is installed

from common import default_model_dir, machine_info, wait_for_quiet  # noqa: E402

from cascadener.kernels import attention, int8_linear, packed_linear, rmsnorm, rope, swiglu  # noqa: E402

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB = 896, 14, 2, 64, 4864, 151936
EPS, THETA = 1e-6, 1_000_000.0
CACHE_SLOTS = 4096                      # the buffer the decode K/V views are cut from
MODES = {"decode1": (1, 1), "decode8": (8, 1), "prefill": (1, 256)}   # (batch, new tokens)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OPS = ("rmsnorm", "rope", "swiglu", "attention", "int8")
INT8_SHAPES = {"q/o 896->896": (896, 896), "k/v 896->128": (896, 128), "gate/up 896->4864": (896, 4864),
               "down 4864->896": (4864, 896), "lm_head 896->151936": (896, VOCAB)}
REAL_TENSORS = {"q/o 896->896": "model.layers.12.self_attn.q_proj.weight",
                "k/v 896->128": "model.layers.12.self_attn.k_proj.weight",
                "gate/up 896->4864": "model.layers.12.mlp.gate_proj.weight",
                "down 4864->896": "model.layers.12.mlp.down_proj.weight",
                "lm_head 896->151936": "model.embed_tokens.weight"}
SAMPLE_S = 5e-3
COLD_BYTES = 64 << 20                   # twice this CPU's L3


@dataclass
class Case:
    """One op at one shape and dtype; `variants` are timed against the first one."""
    op: str
    mode: str
    dtype: str
    shape: str
    variants: dict[str, Callable[[], torch.Tensor]]
    truth: Callable[[], torch.Tensor] | None = None     # int8: the float32 linear of the real weight
    best: dict[str, float] = field(default_factory=dict)
    inner: dict[str, int] = field(default_factory=dict)
    err: dict[str, str] = field(default_factory=dict)


# --- inputs --------------------------------------------------------------------------------------

def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype: torch.dtype, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen(seed)) * scale).to(dtype)


def rope_tables(batch: int, t: int, start: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, T, D) for positions start..start+T-1, as cascadener.qwen2.model.rope_cos_sin builds them."""
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
    pos = torch.arange(start, start + t).float().expand(batch, t)
    angles = pos[..., None] * inv_freq
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def heads(batch: int, t: int, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(B, n, T, D) as the model makes it: a transposed view of the projection's (B, T, n, D)."""
    return randn(batch, t, n, HEAD_DIM, dtype=dtype, seed=seed).transpose(1, 2)


def cache_view(batch: int, slots: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(B, Hkv, S, D): the first S slots of a CACHE_SLOTS buffer, strided as the cache returns it."""
    return randn(batch, KV_HEADS, CACHE_SLOTS, HEAD_DIM, dtype=dtype, seed=seed)[:, :, :slots]


def left_pad_mask(batch: int, t: int, slots: int) -> torch.Tensor:
    """(B, 1, T, S) boolean: causal over the last T slots, row b left-padded by 37*b slots."""
    q_slot = torch.arange(t)[:, None] + slots - t
    k_slot = torch.arange(slots)[None]
    real = k_slot >= (37 * torch.arange(batch))[:, None, None]
    return ((k_slot <= q_slot) & real | (k_slot == q_slot))[:, None]


def real_weights(model_dir: str | None) -> dict[str, torch.Tensor]:
    if model_dir is None:
        return {}
    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        print(f"note: {path} not found, int8 accuracy uses random weights")
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {label: f.get_tensor(name) for label, name in REAL_TENSORS.items()}


def clones(*operands: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The operands and enough clones of them to total >= COLD_BYTES. Clones, not fresh random
    values: every call computes the same result, so outputs can still be compared."""
    size = sum(t.untyped_storage().nbytes() for t in operands)      # views count their whole buffer
    return [operands] + [tuple(clone_view(t) for t in operands) for _ in range(-(-COLD_BYTES // size) - 1)]


def cold(fn: Callable[..., torch.Tensor], sets: list[tuple[torch.Tensor, ...]]) -> Callable[[], torch.Tensor]:
    """fn(*operands) as a thunk that takes the next operand set (from `clones`) at every call."""
    it = itertools.cycle(sets)
    return lambda: fn(*next(it))


def clone_view(t: torch.Tensor) -> torch.Tensor:
    """A copy with its own buffer and the same strides (a cache view stays a strided view)."""
    base = torch.empty(t.untyped_storage().nbytes() // t.element_size(), dtype=t.dtype)
    base.copy_(torch.as_strided(t, (base.numel(),), (1,), 0))
    return torch.as_strided(base, t.shape, t.stride(), t.storage_offset())


# --- the cases -----------------------------------------------------------------------------------

def rmsnorm_cases(dtype: str) -> list[Case]:
    dt = DTYPES[dtype]
    w = randn(HIDDEN, dtype=dt, scale=0.3, seed=1) + 1
    out = []
    for mode, (b, t) in MODES.items():
        x = randn(b, t, HIDDEN, dtype=dt, scale=3.0)
        out.append(Case("rmsnorm", mode, dtype, f"({b},{t},{HIDDEN})", {
            "reference": lambda x=x: rmsnorm.reference(x, w, EPS),
            "fast": lambda x=x: rmsnorm.fast(x, w, EPS)}))
    return out


def rope_cases(dtype: str) -> list[Case]:
    dt = DTYPES[dtype]
    out = []
    for mode, (b, t) in MODES.items():
        q = heads(b, t, HEADS, dt, seed=2)
        cos, sin = rope_tables(b, t, start=300, dtype=dt)
        tab = rope.tables(cos, sin)          # once per forward, shared by 48 calls: not timed
        out.append(Case("rope", mode, dtype, f"q ({b},{HEADS},{t},{HEAD_DIM})", {
            "reference": lambda q=q, c=cos, s=sin: rope.reference(q, c, s),
            "fast": lambda q=q, tab=tab: rope.fast(q, tab)}))
    return out


def swiglu_cases(dtype: str) -> list[Case]:
    dt = DTYPES[dtype]
    g, u = randn(MLP, HIDDEN, dtype=dt, scale=0.03, seed=3), randn(MLP, HIDDEN, dtype=dt, scale=0.03, seed=4)
    d = randn(HIDDEN, MLP, dtype=dt, scale=0.015, seed=5)
    separate = clones(g, u, d)
    packed = [tuple(map(packed_linear.pack, ws)) for ws in separate] if swiglu.available() else []
    out = []
    for mode, (b, t) in MODES.items():
        x = randn(b, t, HIDDEN, dtype=dt)
        out.append(Case("swiglu", mode, dtype, f"({b},{t},{HIDDEN})x{MLP}", {
            "reference": cold(lambda g, u, d, x=x: swiglu.reference(x, g, u, d), separate),
            **({"fast": cold(lambda g, u, d, x=x: swiglu.fast(x, g, u, d), packed)} if packed else {})}))
    return out


def attention_cases(dtype: str) -> list[Case]:
    dt = DTYPES[dtype]
    setups = [("decode1", 1, 1, 512, False), ("decode1", 1, 1, 2048, False),
              ("decode8", 8, 1, 512, True), ("decode8", 8, 1, 2048, True), ("prefill", 1, 256, 256, True)]
    out = []
    for mode, b, t, s, masked in setups:
        q = heads(b, t, HEADS, dt, seed=6)
        k, v = cache_view(b, s, dt, seed=7), cache_view(b, s, dt, seed=8)
        mask = left_pad_mask(b, t, s) if masked else None
        kv = clones(k, v)
        out.append(Case("attention", mode, dtype, f"B={b} T={t} S={s}" + (" mask" if masked else ""), {
            name: cold(lambda k, v, f=f, q=q, m=mask: f(q, k, v, m), kv)
            for name, f in (("reference", attention.reference), ("sdpa", attention.sdpa),
                            ("grouped", attention.grouped), ("fast", attention.fast))}))
    return out


def int8_cases(dtype: str, weights: dict[str, torch.Tensor]) -> list[Case]:
    dt = DTYPES[dtype]
    out = []
    for label, (k_in, n_out) in INT8_SHAPES.items():
        w32 = weights[label].float() if label in weights else randn(n_out, k_in, dtype=torch.float32, scale=0.02, seed=9)
        w = w32.to(dt)
        q, scale = int8_linear.quantize(w)
        w_sets, q_sets = clones(w), clones(q)
        # fbgemm's packed weight is opaque to `cold`: make enough whole layers instead
        dyn = (itertools.cycle([ao_dynamic_linear(w) for _ in range(-(-COLD_BYTES // q.numel()))])
               if dt == torch.float32 else None)
        for m in (1, 8) if label.startswith("lm_head") else (1, 8, 256):   # prefill takes the head at one position
            x = randn(m, k_in, dtype=dt, seed=10)
            mark = " *" if int8_linear.uses_fused_kernel(m, k_in, dt) else ""
            variants = {
                f"{dtype} F.linear": cold(lambda w, x=x: F.linear(x, w), w_sets),
                "int8 fused kernel" + mark: cold(lambda q, x=x, s=scale: int8_linear.fused_matmul(x, q, s), q_sets),
                "int8 dequant" + ("" if mark else " *"): cold(lambda q, x=x, s=scale: int8_linear.dequant_matmul(x, q, s), q_sets),
            }
            if dyn is not None:
                variants["ao dynamic (int8 act.)"] = lambda x=x, dyn=dyn: next(dyn)(x)
            out.append(Case("int8", f"M={m}", dtype, label, variants,
                            truth=lambda x=x, w32=w32: F.linear(x.float(), w32)))
    return out


def ao_dynamic_linear(w: torch.Tensor) -> torch.nn.Module:
    """torch.ao's fbgemm dynamic-quantized linear (float32 only): int8 weights *and* activations."""
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w
    lin.qconfig = torch.ao.quantization.default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)    # the quantized-tensor API is deprecated
        return DynLinear.from_float(lin)


# --- timing --------------------------------------------------------------------------------------

def sample(fn: Callable[[], object], inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def prepare(case: Case) -> None:
    """Warm up, size the inner loops, and fill in the accuracy columns."""
    outs = {}
    for name, fn in case.variants.items():
        fn()
        outs[name] = fn().float()
        case.inner[name] = max(1, min(2000, int(SAMPLE_S / max(sample(fn, 1), 1e-7))))
    base = next(iter(outs.values()))
    if case.truth is not None:
        y = case.truth()
        for name, o in outs.items():
            case.err[name] = f"{((o - y).abs().max() / y.abs().max()).item():.2e}"
    else:
        for name, o in outs.items():
            case.err[name] = "=" if torch.equal(o, base) else f"{(o - base).abs().max().item():.1e}"


def run_round(cases: list[Case], rnd: int) -> None:
    for case in cases:
        names = list(case.variants)
        names = names[rnd % len(names):] + names[:rnd % len(names)]     # rotate who goes first
        for name in names:
            t = sample(case.variants[name], case.inner[name])
            case.best[name] = min(case.best.get(name, float("inf")), t)


# --- report --------------------------------------------------------------------------------------

def fmt_time(s: float) -> str:
    return f"{s * 1e6:,.1f} us" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


def table(cases: list[Case]) -> str:
    lines = ["| op | mode | dtype | shape | variant | best time | speed-up | max\\|Δ\\| vs ref / rel err |",
             "|---|---|---|---|---|---:|---:|---:|"]
    for c in cases:
        base = next(iter(c.best.values()))
        for name, t in c.best.items():
            lines.append(f"| {c.op} | {c.mode} | {c.dtype} | {c.shape} | {name} | {fmt_time(t)} | "
                         f"{base / t:.2f}x | {c.err[name]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each round wait up to S seconds for the machine to be idle")
    ap.add_argument("--model", default=default_model_dir(), help="checkpoint for real int8 weights")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    info = machine_info() | {"threads": torch.get_num_threads()}
    print(json.dumps(info))
    weights = real_weights(args.model) if "int8" in args.ops else {}
    makers = {"rmsnorm": rmsnorm_cases, "rope": rope_cases, "swiglu": swiglu_cases,
              "attention": attention_cases, "int8": lambda d: int8_cases(d, weights)}
    with torch.inference_mode():
        cases = [c for op in args.ops for d in args.dtypes for c in makers[op](d)]
        for c in cases:
            prepare(c)
        busy = []
        for rnd in range(args.rounds):
            busy.append(wait_for_quiet(args.wait_quiet) if args.wait_quiet else None)
            t = time.perf_counter()
            run_round(cases, rnd)
            print(f"round {rnd + 1}/{args.rounds}: {time.perf_counter() - t:.1f} s"
                  + (f", others' CPU use before it {busy[-1]:.0%}" if busy[-1] is not None else ""), flush=True)
    print()
    print(table(cases))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "busy_before_rounds": busy,
            "cases": [{"op": c.op, "mode": c.mode, "dtype": c.dtype, "shape": c.shape,
                       "best_s": c.best, "err": c.err} for c in cases]}, indent=1))


if __name__ == "__main__":
    main()
