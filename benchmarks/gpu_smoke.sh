#!/usr/bin/env bash
# GPU smoke check for the training path (issue 4): a few minutes on one CUDA GPU.
#   1. the gpu-marked tests (CUDA quantization_config loading, bf16 autocast);
#   2. the quick-start recipe in bf16 (LoRA on MiniLM, a shortened schedule);
#   3. one P1 config (ml100k_ctr_qlora: nf4 base + LoRA) on 256 shots, if the data is there.
# Figures land in ${OUT:-gpu_smoke_out}/ (metrics.json per run + a summary).
# Usage: bash benchmarks/gpu_smoke.sh   (needs: pip install torch==<cuda build> && pip install -e .[dev])
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_smoke_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

timeout 300 python -m pytest -q -m gpu tests 2>&1 | tail -20 | tee "$OUT/gpu_tests.txt" || true

timeout 300 accelerate launch --num_processes 1 --mixed_precision bf16 recipes/finetune.py \
  --train.output_dir "$OUT/quickstart_bf16" --train.epochs 1 --train.mixed_precision bf16 \
  --train.batch_size 32 2>&1 | tail -5 | tee "$OUT/quickstart_bf16.log" || true

if [ -n "${PETREC_DATA_DIR:-}" ] || [ -d ../shared/data ]; then
  export PETREC_DATA_DIR=${PETREC_DATA_DIR:-$(cd ../shared/data && pwd)}
  timeout 300 accelerate launch --num_processes 1 recipes/finetune.py \
    --config recipes/configs/ml100k_ctr_qlora.yaml --data.few_shot_k 256 --train.epochs 3 \
    --train.output_dir "$OUT/p1_qlora_256" 2>&1 | tail -5 | tee "$OUT/p1_qlora_256.log" || true
fi

python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for m in sorted(out.glob("*/metrics.json")):
    d = json.loads(m.read_text())
    rows[m.parent.name] = {k: d.get(k) for k in ("test", "peak_memory", "train_samples_per_s", "wall_seconds")}
(out / "summary.json").write_text(json.dumps(rows, indent=2))
print(json.dumps(rows, indent=2))
PY
