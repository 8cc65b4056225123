"""Where one decode step's time goes: the model's step alone, eager and as a replayed CUDA graph,
then with the LM head, the argmax and the read-back the scheduler adds to every step.

    python bench/profile_step.py --model DIR --device cuda --random-weights    # a GPU (gpu_check.sh)
    python bench/profile_step.py --model DIR                                    # the same on the CPU

The store is the scheduler's (cascadener.engine.kv.KVStore) and the step is its static one
(cascadener.engine.graphs.StepGraph), fed one token per row at batch sizes 1 and 8; timings are
the mean over --calls after warm-up, with the device synchronized. What bench_core.py's decode
rate adds on top of the last row is the scheduler's own Python (plans, id tensors, constraints).
The kernel count is that of one eager step under torch.profiler (on the CPU: aten ops).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_core import write_random_checkpoint  # noqa: E402

from cascadener.engine.chat import ChatEngine  # noqa: E402
from cascadener.engine.graphs import EAGER_STEPS, SlotCache, StepGraph  # noqa: E402
from cascadener.engine.kv import KVStore  # noqa: E402


def mean_ms(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls * 1e3


def kernels_per_step(fn: Callable[[], object], device: torch.device) -> int:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    if device.type == "cuda":
        return sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    return sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::"))


@torch.inference_mode()
def profile_batch(model, batch: int, calls: int) -> dict:
    device = model.device
    # Room for the warm-up, the capture and the timed graph steps; each static step takes a slot.
    store = KVStore.for_model(model, batch, 64 + 2 * calls + EAGER_STEPS + 8)
    ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
    fed = torch.ones(batch, 1, dtype=torch.bool, device=device)
    cache = SlotCache(store)
    row = {"batch": batch,
           "eager_ms": mean_ms(lambda: model.hidden_states(ids, cache), calls, device),
           "eager_kernels": kernels_per_step(lambda: model.hidden_states(ids, cache), device)}
    step = StepGraph(model, store)
    for _ in range(EAGER_STEPS + 1):                     # the last call records the graph (on CUDA)
        step(ids, fed)
    if step.graph is not None:
        row["graph_replay_ms"] = mean_ms(step.graph.replay, calls, device)

    def whole() -> list[int]:
        hidden = step(ids, fed)
        return model.lm_head(hidden[:, 0]).float().argmax(-1).tolist()
    row["step_with_head_ms"] = mean_ms(whole, calls, device)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (with --random-weights: config and tokenizer)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--random-weights", action="store_true", help="random bf16 weights of the checkpoint's shape")
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    if not (Path(args.model) / "config.json").exists():
        ap.error(f"--model {args.model}: no config.json there")
    try:
        with tempfile.TemporaryDirectory(prefix="profile_step_") as tmp:
            path = write_random_checkpoint(args.model, Path(tmp)) if args.random_weights else args.model
            model = ChatEngine.load(path, dtype=torch.bfloat16, device=args.device).model
    except (ValueError, OSError) as e:          # a bad device, a broken checkpoint
        ap.error(str(e))
    name = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "the CPU"
    print(f"# {model.device} ({name}), torch {torch.__version__}, bf16, {model.config.num_hidden_layers} layers")
    print("| batch | eager step ms | kernels (eager) | graph replay ms | graph step + LM head + argmax + read-back ms |")
    print("|---|---|---|---|---|")
    for batch in (1, 8):
        try:
            r = profile_batch(model, batch, args.calls)
        except Exception as e:              # one printed line per failing size, the other still runs
            print(f"| {batch} | failed: {type(e).__name__}: {e} | | | |")
            continue
        replay = f"{r['graph_replay_ms']:.3f}" if "graph_replay_ms" in r else "n/a (no graph off CUDA)"
        print(f"| {batch} | {r['eager_ms']:.3f} | {r['eager_kernels']} | {replay} | {r['step_with_head_ms']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
