#!/usr/bin/env bash
# Everything petrec measures on a GPU, in one bounded call (about 9 minutes on one H200):
#   phase 1, alone on the GPU (clean timings): the efficiency-gpu suite (E1, BERT-large / 1B shapes);
#   phase 2, side by side: the gpu-marked tests + benchmarks/gpu_methods_check.py, the ml100k-ctr
#   suite (P1 k=256 x 3 seeds, P1 full, P2; then k=64 / k=16 while time remains) with 8 runs at
#   once, and the P3 / P4 next-item GPU suites (each run has its own wall-time budget).
# Every suite is resumable: run the script again and finished runs are skipped.
# Usage (repo root, CUDA machine, petrec importable, PETREC_DATA_DIR set):
#   OUT=gpu_out GPU_SESSION_SECONDS=520 bash benchmarks/gpu_session.sh
# Results land in benchmarks/results/<suite>/ and are packed into $OUT/results.tgz with the logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_session_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
: "${PETREC_DATA_DIR:?set PETREC_DATA_DIR to the folder holding ml-100k/, ml-1m/, amazon-scientific/}"
BUDGET=${GPU_SESSION_SECONDS:-520}
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/session.log"; }
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, transformers, peft, accelerate, bitsandbytes, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name()); print('transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'bitsandbytes', bitsandbytes.__version__, 'datasets', datasets.__version__)" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

log "phase 1: efficiency-gpu (alone)"
timeout $(( $(left) - 300 )) $PY -m petrec bench --suite efficiency-gpu > "$OUT/efficiency-gpu.log" 2>&1
log "efficiency-gpu exit $?"

log "phase 2: tests, methods check, ml100k-ctr, P3, P4 side by side"
P2_END=$(( $(left) - 30 ))
# Every background job ends by P2_END: the packing below must run inside the caller's limit (a
# first version let the test subshell outlive it, and the whole call returned nothing).
( timeout $(( P2_END / 2 )) $PY -m pytest -q -p no:cacheprovider -m gpu tests/methods > "$OUT/gpu_tests.log" 2>&1
  timeout $(( P2_END / 2 )) $PY benchmarks/gpu_methods_check.py > "$OUT/gpu_methods_check.json" \
    2> "$OUT/gpu_methods_check.log" ) &
for run in sasrec-ce-ref sasrec-ce sasrec-bce gru4rec caser bpr,popularity; do
  timeout $P2_END $PY -m petrec.models.sequential.suite --suite benchmarks/suites/ml1m-next-item-gpu.yaml \
    --work /tmp/petrec_runs --only "$run" > "$OUT/p3_${run%%,*}.log" 2>&1 &
done
for run in sasrec text text-hybrid gru4rec,popularity; do
  timeout $P2_END $PY -m petrec.models.sequential.suite --suite benchmarks/suites/scientific-next-item-gpu.yaml \
    --work /tmp/petrec_runs --only "$run" > "$OUT/p4_${run%%,*}.log" 2>&1 &
done
( timeout $P2_END $PY -m petrec bench --suite ml100k-ctr --experiments P1-k256,P1-full,P2 --jobs 8 --no-report \
    > "$OUT/ml100k-ctr.log" 2>&1
  [ "$(left)" -gt 60 ] && timeout $(( $(left) - 30 )) $PY -m petrec bench --suite ml100k-ctr \
    --experiments P1-k64,P1-k16 --jobs 8 --no-report > "$OUT/ml100k-ctr-small-k.log" 2>&1 ) &
wait
log "phase 2 done"
for s in ml1m-next-item-gpu scientific-next-item-gpu; do
  $PY -m petrec.models.sequential.suite --suite benchmarks/suites/$s.yaml --report-only > "$OUT/$s.table.md" 2>&1
done
# Pack the results here: on a machine that re-syncs the checkout between calls (a borrowed GPU box)
# files written into the working copy do not survive to the next call. Next-item run folders
# (metrics.json, train_log.jsonl) are packed too, in case a suite was cut before its result file.
tar czf "$OUT/results.tgz" --exclude=_work benchmarks/results/efficiency-gpu benchmarks/results/ml100k-ctr \
  benchmarks/results/ml1m-next-item-gpu benchmarks/results/scientific-next-item-gpu \
  $(ls -d /tmp/petrec_runs/*/*/metrics.json /tmp/petrec_runs/*/*/train_log.jsonl 2>/dev/null) \
  2>>"$OUT/session.log"
tar czf "$OUT/logs.tgz" "$OUT"/*.log "$OUT"/*.md "$OUT"/*.json "$OUT/gpu.txt" 2>/dev/null
log "packed"
