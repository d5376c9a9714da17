"""Continual fine-tuning on P2 cut into time periods (issue 19): warm start vs from scratch vs full fine-tuning.

BENCHMARKS.md P2 (ML-100K click/like, every user, globally ordered by time) is cut into N
consecutive periods at its timestamp quantiles (``data.protocol: periods``); each period is split
into its own train / valid / test by time: before the 80% quantile of the period's timestamps, to the
90% one, and after (``data.temporal_quantiles``). For periods 1..N the driver trains, one ``petrec.recipes.finetune``
subprocess each:

- ``warm``: LoRA on period p, starting from the adapter of ``warm`` at p-1 (``--init_adapter``);
- ``scratch``: LoRA on period p from the pretrained base;
- ``full``: full fine-tuning on period p from the pretrained base;
- ``replay`` (with ``--replay F``): as ``warm``, with F × (period p's training examples) drawn from
  the earlier periods' training examples mixed in (``data.period_replay``).

Each model is tested on its own period (the recipe's test pass: the gain on new data) and, with
``petrec evaluate --data-override period=q``, on the test split of every earlier period q
(forgetting = drop of q's test AUC since right after q was learned). Training wall time comes
from the recipe's ``metrics.json``. Records (one JSON per trained model, with its exact command,
machine, git commit, start / end), ``summary.json``, ``REPORT.md`` and ``plots/`` are written
atomically to ``--out`` and generated from the records only (:mod:`petrec.bench.continual`).

    PETREC_DATA_DIR=/path/to/data python benchmarks/continual.py --n-periods 3 \\
        --train-per-period 1500 --eval-per-period 500 --replay 0.2 --seeds 1
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from petrec.bench.continual import (
    RUNS_DIR,
    STRATEGIES,
    SUMMARY_FILE,
    job_for,
    record_name,
    write_outputs,
)
from petrec.bench.runner import ProcessResult, cpu_sharing, log_tail, now, run_process
from petrec.bench.system import REPO_ROOT, git_state, machine, versions, write_record
from petrec.files import read_json_object, write_text_atomic

Runner = Callable[[list[str], Path, float, "dict[str, str] | None"], ProcessResult]
#: How much of a failed subprocess's log a record keeps.
ERROR_CHARS = 1500


@dataclass(frozen=True)
class Job:
    """One model to train: a job kind (scratch / warm / replay / full) on one period with one seed."""

    kind: str
    period: int
    seed: int

    @property
    def run_id(self) -> str:
        """``warm__p2__s1``."""
        return record_name(self.kind, self.period, self.seed)[: -len(".json")]

    @property
    def method(self) -> str:
        """The PEFT method name of the recipe."""
        return "full" if self.kind == "full" else "lora"

    def init_from(self) -> Job | None:
        """The job whose adapter this one starts from (warm and replay chains), else None."""
        if self.kind in ("warm", "replay") and self.period >= 2:
            return Job(job_for(self.kind, self.period - 1), self.period - 1, self.seed)
        return None


def plan(n_periods: int, seeds: list[int], replay: float) -> list[Job]:
    """Jobs in run order: per seed, per period: scratch, warm, replay, full (a chain's parent runs first)."""
    kinds = [s for s in STRATEGIES if s != "replay" or replay > 0]
    jobs = []
    for seed in seeds:
        for p in range(1, n_periods + 1):
            for kind in kinds:
                job = Job(job_for(kind, p), p, seed)
                if job not in jobs:
                    jobs.append(job)
    return jobs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; bad values end with a usage error naming the flag."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/continual", help="results folder (records, REPORT.md, plots)")
    p.add_argument("--work", default="/tmp/petrec_runs/continual", help="run folders (adapters) and logs")
    p.add_argument("--n-periods", type=int, default=3)
    p.add_argument("--train-per-period", type=int, default=1500,
                   help="seeded sample of each period's training split (data.max_train_examples)")
    p.add_argument("--eval-per-period", type=int, default=500,
                   help="seeded sample of each period's valid and of its test split (data.max_eval_examples)")
    p.add_argument("--replay", type=float, default=0.0, metavar="FRACTION",
                   help="add the replay strategy: warm start + FRACTION x the period's training examples "
                        "drawn from earlier periods' (0 = no replay row)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--backbone", default="minilm", help="model.backbone (alias, folder or Hugging Face id)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="LoRA learning rate")
    p.add_argument("--full-lr", type=float, default=1e-4, help="full fine-tuning learning rate")
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of each run (default: torch's)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess before it is killed")
    p.add_argument("--resume", action="store_true", help="keep finished records (and their run folders) and "
                                                         "run only what is missing")
    p.add_argument("--force", action="store_true", help="delete the records of an earlier measurement first")
    p.add_argument("--report-only", action="store_true", help="only rebuild summary.json, REPORT.md and plots")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    for flag, low in (("n_periods", 2), ("train_per_period", 1), ("eval_per_period", 1), ("epochs", 1),
                      ("batch_size", 1), ("max_length", 8), ("lora_r", 1), ("eval_batch_size", 1)):
        if getattr(args, flag) < low:
            p.error(f"--{flag.replace('_', '-')} must be >= {low}, got {getattr(args, flag)}")
    if not 0 <= args.replay < float("inf"):
        p.error(f"--replay must be a finite fraction >= 0, got {args.replay}")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct integers >= 0, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.timeout <= 0 or min(args.lr, args.full_lr, args.head_lr) <= 0:
        p.error("--timeout, --lr, --full-lr and --head-lr must be > 0")
    if args.resume and args.force:
        p.error("--resume and --force exclude each other")
    return args


def data_fields(args: argparse.Namespace, period: int, seed: int, replay: float = 0.0) -> dict[str, Any]:
    """The ``data:`` section of one run: P2 with protocol periods, sampled as the flags say."""
    return {"dataset": "ml-100k", "task": "ctr", "protocol": "periods", "history_len": 10,
            "n_periods": args.n_periods, "period": period, "period_replay": replay,
            "max_train_examples": args.train_per_period, "max_eval_examples": args.eval_per_period, "seed": seed}


def recipe_config(args: argparse.Namespace, job: Job) -> dict[str, Any]:
    """The whole recipe config of ``job`` (collab-ctr-cpu's P1-full schedule, on P2's periods)."""
    model: dict[str, Any] = {"backbone": args.backbone, "task": "ctr", "head_norm": True, "method": job.method}
    if job.method == "lora":
        model["method_kwargs"] = {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.05}
    return {
        "data": data_fields(args, job.period, job.seed, args.replay if job.kind == "replay" else 0.0),
        "model": model,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
                  "lr": args.full_lr if job.method == "full" else args.lr, "head_lr": args.head_lr,
                  "warmup_ratio": 0.06, "eval_every_steps": 0, "early_stopping_patience": 0,
                  "metric_for_best": "auc", "progress": False, "trackers": [], "log_every_steps": 10,
                  "seed": job.seed},
        "max_length": args.max_length,
    }


def train_argv(config_path: Path, run_dir: Path, init_dir: Path | None) -> list[str]:
    """``python -m petrec.recipes.finetune --config C --train.output_dir D [--init_adapter P]``."""
    argv = [sys.executable, "-m", "petrec.recipes.finetune", "--config", str(config_path),
            "--train.output_dir", str(run_dir)]
    return argv + (["--init_adapter", str(init_dir)] if init_dir is not None else [])


def eval_argv(run_dir: Path, period: int, out: Path, batch_size: int) -> list[str]:
    """``python -m petrec evaluate`` of a run on period ``period``'s test split (no replay in the data)."""
    return [sys.executable, "-m", "petrec", "evaluate", "--run", str(run_dir), "--split", "test",
            "--data-override", f"period={period}", "--data-override", "period_replay=0",
            "--batch-size", str(batch_size), "--out", str(out)]


def child_env(threads: int | None) -> dict[str, str]:
    """This environment, with this checkout first on PYTHONPATH and the thread count set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _eval_entry(metrics: dict[str, Any], source: str) -> dict[str, Any]:
    keep = ("auc", "logloss", "accuracy", "n_examples", "examples")
    return {**{k: metrics[k] for k in keep if k in metrics}, "source": source}


def run_job(args: argparse.Namespace, job: Job, work: Path, runner: Runner,
            env_info: dict[str, Any], enabled: list[str]) -> dict[str, Any]:
    """Train one job, test it on its period and every earlier one; return its record."""
    run_dir = work / job.run_id
    parent = job.init_from()
    init_dir = work / parent.run_id if parent is not None else None
    config_path = work / "configs" / f"{job.run_id}.yaml"
    write_text_atomic(config_path, yaml.safe_dump(recipe_config(args, job), sort_keys=False))
    argv = train_argv(config_path, run_dir, init_dir)
    env = child_env(args.threads)
    info: dict[str, Any] = {
        "suite": "continual", "run_id": job.run_id, "job": job.kind, "method": job.method, "period": job.period,
        "seed": job.seed, "strategies": [s for s in enabled if job_for(s, job.period) == job.kind],
        "init_adapter": str(init_dir) if init_dir is not None else None,
        "period_replay": args.replay if job.kind == "replay" else 0.0, "run_dir": str(run_dir),
        "command": shlex.join(argv), "config": recipe_config(args, job), "started": now(),
    }
    record: dict[str, Any] = {"run_info": info, **env_info}
    proc = runner(argv, work / "logs" / f"{job.run_id}.log", args.timeout, env)
    record["train_info"] = {"process_wall_seconds": proc.wall_seconds, "process_peak_rss_mb": proc.peak_rss_mb,
                            "cpu_sharing": cpu_sharing(proc)}
    if proc.returncode != 0 or not (run_dir / "metrics.json").is_file():
        info.update(status="timeout" if proc.timed_out else "failed", ended=now(),
                    error=log_tail(work / "logs" / f"{job.run_id}.log", ERROR_CHARS))
        return record
    metrics = read_json_object(run_dir / "metrics.json", ValueError, "the recipe's metrics.json")
    record["metrics"] = metrics
    evals = {str(job.period): _eval_entry(metrics.get("test") or {}, "the recipe's test pass")}
    info["eval_commands"] = []
    for q in range(1, job.period):
        out = work / "evals" / f"{job.run_id}__on_p{q}.json"
        e_argv = eval_argv(run_dir, q, out, args.eval_batch_size)
        info["eval_commands"].append(shlex.join(e_argv))
        e_proc = runner(e_argv, work / "logs" / f"{job.run_id}__on_p{q}.log", args.timeout, env)
        if e_proc.returncode != 0 or not out.is_file():
            info.update(status="failed", ended=now(), error=f"evaluation on period {q}: "
                        + log_tail(work / "logs" / f"{job.run_id}__on_p{q}.log", ERROR_CHARS))
            record["eval"] = evals
            return record
        evals[str(q)] = _eval_entry(read_json_object(out, ValueError, "petrec evaluate's JSON"), "petrec evaluate")
    record["eval"] = dict(sorted(evals.items(), key=lambda kv: int(kv[0])))
    info.update(status="ok", ended=now())
    return record


def _day(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M") if stamp else ""


def period_facts(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Per period: its time span, all its examples, and the train / valid / test examples the runs use."""
    from petrec.data import DataConfig, prepare

    rows = []
    for p in range(1, args.n_periods + 1):
        summary = prepare(DataConfig(**data_fields(args, p, seed))).summary
        splits = summary["splits"]
        cuts = [None, *summary["period_cuts"], None]
        rows.append({"period": p, "start": _day(cuts[p - 1]) or "(first)", "end": _day(cuts[p]) or "(last)",
                     "examples": summary["period_examples"][p - 1], "train": splits["train"]["examples"],
                     "valid": splits["valid"]["examples"], "test": splits["test"]["examples"],
                     "train_before_sampling": summary["train_examples_before_sampling"]})
    note = (f"Periods cut at the {args.n_periods}-quantiles of all ML-100K timestamps (UTC); within a period "
            "train / valid / test by time at its own 80% / 90% quantiles. Training sampled to "
            f"{args.train_per_period} examples per period, valid and test each to {args.eval_per_period} "
            f"(seeded, data.max_train_examples / max_eval_examples; seed {seed}). An example belongs to the "
            "period of its target; its history (up to 10 earlier items) may lie in earlier periods.")
    return {"periods": rows, "note": note}


def describe(args: argparse.Namespace) -> dict[str, str]:
    """Settings lines for the report."""
    out = {
        "model": f"{args.backbone}; LoRA r={args.lora_r} (alpha {2 * args.lora_r}, dropout 0.05) at lr {args.lr}, "
                 f"full fine-tuning at lr {args.full_lr}; head lr {args.head_lr}, head_norm",
        "schedule": f"{args.epochs} epoch(s), batch {args.batch_size}, max_length {args.max_length}, one validation "
                    "pass at the end (its weights are tested)",
    }
    if args.replay > 0:
        out["replay"] = f"{args.replay} x the period's training examples, from earlier periods' training samples"
    if args.threads is not None:
        out["threads"] = str(args.threads)
    return out


def main(argv: list[str] | None = None, runner: Runner = run_process) -> int:
    """Run the plan (or rebuild the report); return the exit status."""
    args = parse_args(argv)
    if argv is None:  # the command line: a SIGTERM ends the current run subprocess too (run_process kills it)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out, work = Path(args.out), Path(args.work)
    command = shlex.join(["python", "benchmarks/continual.py", *(sys.argv[1:] if argv is None else argv)])
    if args.report_only:
        meta = read_json_object(out / SUMMARY_FILE, ValueError, "a continual summary")
        meta.pop("summary", None)
        meta.pop("records", None)
        write_outputs(out, meta, plots=not args.no_plots)
        print(f"rebuilt {out / 'REPORT.md'}")
        return 0
    existing = sorted((out / RUNS_DIR).glob("*.json"))
    if existing and not (args.resume or args.force):
        print(f"continual: {out / RUNS_DIR} already holds {len(existing)} records; pass --resume to continue "
              "that measurement or --force to start over", file=sys.stderr)
        return 2
    if args.force:
        for path in existing:
            path.unlink()
    started = now()
    env_info = {"machine": machine(), "versions": versions(), "git": git_state()}
    meta = {"title": f"P2 (ML-100K ctr) cut into {args.n_periods} time periods", "command": command,
            "started": started, **env_info, "settings": {**vars(args), "describe": describe(args)},
            "data": period_facts(args, args.seeds[0])}
    enabled = [s for s in STRATEGIES if s != "replay" or args.replay > 0]
    jobs = plan(args.n_periods, args.seeds, args.replay)
    failed: set[Job] = set()
    for i, job in enumerate(jobs, 1):
        path = out / RUNS_DIR / record_name(job.kind, job.period, job.seed)
        head = f"[{i}/{len(jobs)}] {job.run_id}"
        if args.resume and path.is_file():
            old = read_json_object(path, ValueError, "a continual run record")
            if (old.get("run_info") or {}).get("status") == "ok" and (work / job.run_id / "adapter").is_dir():
                print(f"{head}: kept from an earlier invocation", flush=True)
                continue
        parent = job.init_from()
        if parent is not None and parent in failed:
            failed.add(job)
            write_record(path, {"run_info": {"run_id": job.run_id, "job": job.kind, "period": job.period,
                                             "seed": job.seed, "status": "skipped",
                                             "error": f"{parent.run_id} did not finish"}, **env_info})
            print(f"{head}: skipped ({parent.run_id} did not finish)", flush=True)
            continue
        print(f"{head}: training {job.method} on period {job.period}"
              + (f" from {parent.run_id}" if parent else "") + f" (+ tests of periods 1..{job.period})", flush=True)
        record = run_job(args, job, work, runner, env_info, enabled)
        write_record(path, record)
        info = record["run_info"]
        if info["status"] != "ok":
            failed.add(job)
            print(f"{head}: {info['status']}: {info.get('error', '').strip().splitlines()[-1:]}", flush=True)
            continue
        aucs = ", ".join(f"p{q} {e.get('auc', float('nan')):.4f}" for q, e in record["eval"].items())
        print(f"{head}: done in {record['train_info']['process_wall_seconds']:.0f} s "
              f"(training {record['metrics'].get('wall_seconds', float('nan')):.0f} s); test AUC {aucs}", flush=True)
    meta["ended"] = now()
    summary = write_outputs(out, meta, plots=not args.no_plots)
    print(f"wrote {out / 'REPORT.md'} ({len(summary['failed'])} runs did not finish)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
