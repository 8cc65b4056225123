#!/usr/bin/env bash
# Issue 13's GPU checks as one run on a lent GPU machine (nothing here is needed on a CPU).
#
#   bash bench/gpu_check.sh --prepare     # here: the 0.5B checkpoint's config and tokenizer into .gpu/
#   then, with the device tool: run  command "bash bench/gpu_check.sh"  carry [".gpu"]  timeout_s 540
#
# On the GPU machine (its python3 has torch, transformers, pytest and hypothesis; nothing is
# installed): every test with a `device` parameter on CUDA (the engine's invariants, the pipeline's
# spans against the CPU's), then bench/bench_core.py on random weights of the real 0.5B shape
# against HF transformers on the same card, with the CUDA-graph step and without it
# (--eager-steps), and bench/profile_step.py (where a step's time goes). The real weights stay
# here: only config and tokenizer files travel (.gpu/).
# Everything printed is also written under $OUT, which the device tool brings back. Each stage
# has its own time limit, so one that hangs leaves the others their time.
set -uo pipefail
cd "$(dirname "$0")/.."
CKPT=.gpu/qwen2-0.5b

if [ "${1:-}" = "--prepare" ]; then
  src="${CASCADENER_ASSETS:?set CASCADENER_ASSETS to the real Qwen2.5 0.5B checkpoint}"
  mkdir -p "$CKPT"
  for f in config.json generation_config.json tokenizer.json tokenizer_config.json vocab.json merges.txt; do
    [ -f "$src/$f" ] && cp "$src/$f" "$CKPT/"
  done
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  echo "prepared $CKPT: $(ls "$CKPT" | tr '\n' ' ')"
  exit 0
fi

out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
[ -f "$CKPT/config.json" ] || { echo "error: $CKPT/config.json missing: run 'bash bench/gpu_check.sh --prepare' here and carry .gpu" >&2; exit 2; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/machine.txt"

echo "== tests on CUDA"
timeout -s INT -k 10 150 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_engine.py tests/test_pipeline.py tests/test_activated.py 2>&1 | tee "$out/tests.txt"

echo "== bench_core, CUDA graph steps (the default on a GPU) against HF"
timeout -s INT -k 10 220 python3 bench/bench_core.py --device cuda --random-weights --model "$CKPT" --dtypes bf16 \
  --modes prefill,decode1,decode8 --repeats 2 --wait-quiet 0 --json "$out/core.json" 2>&1 | tee "$out/core.txt"

echo "== bench_core, eager steps (no graph), ours only"
timeout -s INT -k 10 80 python3 bench/bench_core.py --device cuda --random-weights --model "$CKPT" --dtypes bf16 \
  --modes decode1,decode8 --repeats 1 --wait-quiet 0 --no-hf --eager-steps --json "$out/core_eager.json" \
  2>&1 | tee "$out/core_eager.txt"

echo "== where one decode step's time goes"
timeout -s INT -k 10 60 python3 bench/profile_step.py --model "$CKPT" --random-weights --device cuda --calls 100 \
  2>&1 | tee "$out/profile_step.txt"
