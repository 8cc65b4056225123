"""The ops that dominate CPU inference time, each as a readable `reference` and a `fast` path.

    rmsnorm      RMSNorm (float32 normalisation, cast, then scale)              fast: bit-identical
    rope         rotate-half rotary embedding                                   fast: bit-identical
    swiglu       down(silu(gate(x)) * up(x)), silu and * as GEMM post-ops (PackedSwiGLU) fast: one rounding
    attention    grouped-query attention over a KV cache, boolean mask          fast: float32-exact math
    int8_linear  weight-only per-channel int8 linear (Int8Linear) for decode    fast: int8 tolerance
    packed_linear  linear with the weight reordered once for oneDNN (PackedLinear) fast: summation order

Each module's docstring says why the fast path is fast and how far it may drift; tests/test_kernels.py
checks every claim, bench/bench_kernels.py measures them at the Qwen2-0.5B shapes.
"""
