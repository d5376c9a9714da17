"""One-GPU check of petrec.methods' CUDA paths, in a few minutes.

Runs (1) the ``gpu``-marked tests of tests/methods, (2) MiniLM loaded 4-bit / 8-bit through
``quantization_config`` (:func:`petrec.methods.load_quantized`) with LoRA and a head: measured
weight memory, a few bf16-autocast training steps, save → load equality, merge, (3) the CPU-style
quantize-by-``.to()`` path on a CUDA model, and (4) every method on the BehaviourModel-shaped
MiniLM on CUDA under bf16 autocast (forward + backward). Prints one JSON object; exits non-zero
when any check fails.

    python benchmarks/gpu_methods_check.py            # on a GPU machine
    python benchmarks/gpu_methods_check.py --allow-cpu  # smoke-run the script's logic on CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import petrec  # noqa: E402
from petrec.methods import load_quantized  # noqa: E402
from petrec.paths import minilm_path  # noqa: E402


class Behaviour(nn.Module):
    """Backbone + CLS pooling + linear head (petrec.models' shape)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 2, device=next(backbone.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(out[:, 0].float())


def _batch(device: str, n: int = 16, t: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 5000, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, t // 2 :] = 0
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _train_steps(model: nn.Module, batch: dict[str, torch.Tensor], steps: int, device: str) -> list[float]:
    labels = (batch["input_ids"][:, 1] % 2).long()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    model.train()
    for _ in range(steps):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = nn.functional.cross_entropy(model(**batch).float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 4))
    model.eval()
    return losses


def check_quantized(kind: str, device: str) -> dict[str, Any]:
    """load_quantized (CUDA) or attach(quantize=) (CPU) → LoRA → train → save/load → merge."""
    t0 = time.time()
    if device == "cuda":
        backbone = load_quantized(str(minilm_path()), kind, device_map={"": 0})
        model = petrec.attach(Behaviour(backbone), "lora", head=["head"], r=8)
    else:
        from transformers import AutoModel

        model = petrec.attach(Behaviour(AutoModel.from_pretrained(minilm_path())), "lora",
                              head=["head"], quantize=kind, r=8)
    report = petrec.trainable_report(model)
    batch = _batch(device)
    losses = _train_steps(model, batch, 5, device)
    with torch.no_grad():
        out = model(**batch)
    with tempfile.TemporaryDirectory() as tmp:
        petrec.save_adapter(model, tmp)
        if device == "cuda":
            fresh = Behaviour(load_quantized(str(minilm_path()), kind, device_map={"": 0}))
        else:
            from transformers import AutoModel

            fresh = Behaviour(AutoModel.from_pretrained(minilm_path()))
        again = petrec.load_adapter(fresh, tmp)
        with torch.no_grad():
            reload_diff = (again(**batch) - out).abs().max().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = petrec.merge(model)
    with torch.no_grad():
        merge_diff = (merged(**batch) - out).abs().max().item()
    ok = (
        report.quantized_ratio is not None
        and report.quantized_ratio <= (0.3 if kind == "nf4" else 0.55)
        and all(torch.isfinite(torch.tensor(losses)))
        and reload_diff == 0.0
    )
    return {
        "check": f"{kind}-lora", "ok": bool(ok), "seconds": round(time.time() - t0, 1),
        "quantized_ratio": round(report.quantized_ratio or 0, 4), "trainable": report.trainable,
        "losses": losses, "reload_max_abs_diff": reload_diff, "merge_max_abs_diff": merge_diff,
        "peak_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
    }


def check_every_method(device: str) -> list[dict[str, Any]]:
    """Each registry method on the wrapped MiniLM: bf16-autocast forward + backward on ``device``."""
    from transformers import AutoModel

    base = Behaviour(AutoModel.from_pretrained(minilm_path())).to(device)
    batch = _batch(device, n=4, t=16)
    rows = []
    for method in petrec.METHODS:
        t0 = time.time()
        model = copy.deepcopy(base)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                petrec.attach(model, method, head=["head"])
            losses = _train_steps(model, batch, 2, device)
            grads = [p.grad for p in model.parameters() if p.requires_grad]
            ok = all(torch.isfinite(torch.tensor(losses))) and any(
                g is not None and g.abs().sum() > 0 for g in grads
            )
            rows.append({"check": f"{method}-bf16", "ok": bool(ok), "losses": losses,
                         "trainable": petrec.trainable_report(model).trainable,
                         "seconds": round(time.time() - t0, 2)})
        except Exception as exc:  # report every method, not just the first failure
            rows.append({"check": f"{method}-bf16", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return rows


def main() -> int:
    """Run all checks; print JSON; return 0 when all pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run the non-CUDA parts on CPU")
    parser.add_argument("--skip-pytest", action="store_true", help="do not run the gpu-marked tests")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        print("no CUDA device; pass --allow-cpu for a CPU smoke run", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    checks: list[dict[str, Any]] = []
    if not args.skip_pytest and device == "cuda":
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/methods", "-p", "no:cacheprovider"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )
        checks.append({"check": "pytest -m gpu tests/methods", "ok": proc.returncode == 0,
                       "tail": proc.stdout.strip().splitlines()[-1:]})
    for kind in ("nf4", "int8"):
        try:
            checks.append(check_quantized(kind, device))
        except Exception as exc:
            checks.append({"check": f"{kind}-lora", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
    checks.extend(check_every_method(device))
    results["checks"] = checks
    results["all_ok"] = all(c["ok"] for c in checks)
    print(json.dumps(results, indent=1))
    return 0 if results["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
