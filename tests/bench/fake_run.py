"""A stand-in for the finetune recipe in the harness tests: reads the run config, writes metrics.json.

Behaviour is set by the run config's ``fake`` section:
    fail_methods: methods that print an error and exit 3
    silent_methods: methods that exit 0 without writing metrics.json
    sleep_methods: methods that sleep 30 s (for the timeout test)
    calls_file: a file to which every invocation appends its method and seed (and ``f<fold>`` of a k-fold run)
The test metric is deterministic: auc = base[method] + 0.01 * seed (+ 0.001 * data.kfold_fold of a k-fold run).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
parser.add_argument("--train.output_dir", dest="out", required=True)
args = parser.parse_args()
cfg = yaml.safe_load(Path(args.config).read_text())
fake = cfg.get("fake") or {}
method = cfg["model"]["method"]
seed = cfg["train"]["seed"]
fold = (cfg.get("data") or {}).get("kfold_fold")
if fake.get("calls_file"):
    with open(fake["calls_file"], "a") as f:
        f.write(f"{method} {seed}" + ("" if fold is None else f" f{fold}") + "\n")
if method in fake.get("fail_methods", []):
    print("loading model ...")
    print(f"RuntimeError: fake failure of {method}", file=sys.stderr)
    sys.exit(3)
if method in fake.get("sleep_methods", []):
    time.sleep(30)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
if method in fake.get("silent_methods", []):
    sys.exit(0)
(out / "adapter").mkdir(exist_ok=True)
(out / "adapter" / "adapter.safetensors").write_bytes(b"x" * fake.get("adapter_bytes", {}).get(method, 100))
base = {"full": 0.70, "lora": 0.68, "head": 0.60}.get(method, 0.5)
params = {"full": 1000, "lora": 10, "head": 2}.get(method, 1)
memory = {"full": 400.0, "lora": 200.0, "head": 100.0}.get(method, 50.0)
speed = {"full": 10.0, "lora": 15.0, "head": 30.0}.get(method, 1.0)
metrics = {
    "valid": {"auc": base + 0.01 * seed + 0.001},
    "valid_best": {"metric": "auc", "value": base, "step": 7},
    "test": {"auc": base + 0.01 * seed + 0.001 * (fold or 0), "logloss": 0.6},
    "trainable_params": params, "total_params": 1000, "trainable_percent": 100.0 * params / 1000,
    "peak_memory": {"cpu_peak_rss_mb": memory},
    "train_samples_per_s": speed, "inference_samples_per_s": 2 * speed,
    "steps": 9, "stopped_early": False, "wall_seconds": 1.5, "num_processes": 1,
    "examples": {"train": 32, "valid": 8, "test": 8},
}
(out / "metrics.json").write_text(json.dumps(metrics))
print("done")
