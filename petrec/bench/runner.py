"""Run a suite: one subprocess per run, one JSON per run, resumable, failures recorded.

Each run is its own process so its peak memory is its own and a crash or out-of-memory
kill ends that run only: it is written as ``status: failed`` with the tail of its output
and the suite goes on. Re-running a suite skips runs whose JSON is already there for the
same config (``force`` re-runs everything, ``retry_failed`` re-runs the failed ones).

Results folder layout::

    <results>/runs/<run_id>.json     run_info / train_info / metrics (committed)
    <results>/suite.yaml             the suite as it ran
    <results>/bench_meta.json        command line, machine, start / end of the last invocation
    <results>/_work/<run_id>/        run output (adapter, logs); git-ignored
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from petrec.bench.suite import RunSpec, SuiteConfig, expand, suite_to_dict
from petrec.bench.system import (
    REPO_ROOT,
    SHARED_CPU_SHARE,
    cpu_sharing_record,
    dir_bytes,
    git_state,
    machine,
    machine_cpu_seconds,
    versions,
    write_record,
)
from petrec.config import read_yaml
from petrec.files import write_text_atomic

#: THE one place that says how a run is started. ``{python}`` = this interpreter; both kinds run a
#: module of the installed package, so a non-editable install needs no checkout.
#: A suite's ``command`` replaces the entry for its kind (``{repo}`` = the checkout root).
DEFAULT_COMMANDS: dict[str, list[str]] = {
    "finetune": ["{python}", "-m", "petrec.recipes.finetune"],
    "efficiency": ["{python}", "-m", "petrec.bench.efficiency"],
}
#: Flag that names the run's output folder, per kind.
OUTPUT_FLAGS: dict[str, str] = {"finetune": "--train.output_dir", "efficiency": "--output_dir"}
#: Characters of a failed run's output kept in its JSON.
ERROR_TAIL_CHARS = 4000
RUNS_DIR, WORK_DIR = "runs", "_work"


class BenchError(RuntimeError):
    """The harness itself cannot proceed (bad results folder)."""


@dataclass
class ProcessResult:
    """How a run subprocess ended."""

    returncode: int
    wall_seconds: float
    peak_rss_mb: float | None
    timed_out: bool
    cpu_seconds: float | None = None
    """CPU time (user + system) of the run process and the children it waited for."""
    machine_cpu_seconds: float | None = None
    """CPU time every process on the machine used during the run (``/proc/stat``)."""
    cpus: int | None = None
    """CPUs the machine's CPU time was counted over."""


def now() -> str:
    """UTC time stamp, ISO 8601, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_command(suite: SuiteConfig, spec: RunSpec, config_path: Path, out_dir: Path) -> list[str]:
    """The argv of one run: command prefix + ``--config <run_config.yaml>`` + output folder flag."""
    prefix = suite.command or DEFAULT_COMMANDS[spec.kind]
    argv = [part.replace("{python}", sys.executable).replace("{repo}", str(REPO_ROOT)) for part in prefix]
    return [*argv, "--config", str(config_path), OUTPUT_FLAGS[spec.kind], str(out_dir)]


def run_process(argv: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None) -> ProcessResult:
    """Run ``argv`` with output to ``log_path``; measure wall time and the child's peak RSS.

    The peak RSS and CPU time come from ``os.wait4`` (the rusage of that one child and the
    children it waited for), so every run's memory is its own. The machine's CPU time over the
    same span is read too, so :func:`cpu_sharing` can tell whether other work took cores from
    the run (its speed is then not a clean figure). A run past ``timeout_s`` is killed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    before = machine_cpu_seconds()
    tick = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timed_out, peak, cpu = False, None, None
        try:
            if hasattr(os, "wait4"):
                while True:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        proc.returncode = os.waitstatus_to_exitcode(status)
                        # ru_maxrss is KiB on Linux.
                        peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 1024**2
                        cpu = usage.ru_utime + usage.ru_stime
                        break
                    if time.perf_counter() - tick > timeout_s:
                        timed_out = True
                        _kill(proc)
                    time.sleep(0.2)
            else:  # pragma: no cover - Windows: no per-child rusage
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill(proc)
                    proc.wait()
        except BaseException:  # Ctrl-C: take the run down with us, record nothing
            _kill(proc)
            raise
    wall = time.perf_counter() - tick
    after = machine_cpu_seconds()
    spent = after[0] - before[0] if before is not None and after is not None else None
    return ProcessResult(int(proc.returncode), wall, peak, timed_out, cpu_seconds=cpu, machine_cpu_seconds=spent,
                         cpus=after[1] if after is not None else None)


def cpu_sharing(proc: ProcessResult) -> dict[str, Any] | None:
    """How much of the machine's CPU other processes used while a run ran (None if unmeasured).

    ``other_share`` = (machine CPU time − the run's CPU time) ÷ (CPUs × wall time): 0 on an
    otherwise idle machine, 0.5 when other work kept half of the cores busy. Speeds of a run
    above :data:`petrec.bench.system.SHARED_CPU_SHARE` are flagged in progress and reports.
    """
    if proc.cpu_seconds is None or proc.machine_cpu_seconds is None or not proc.cpus or proc.wall_seconds <= 0:
        return None
    return cpu_sharing_record(proc.cpu_seconds, proc.machine_cpu_seconds, proc.cpus, proc.wall_seconds)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()


def log_tail(path: Path, chars: int = ERROR_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a run's log (empty when it cannot be read): an error's context."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def _load_metrics(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def run_info(spec: RunSpec, argv: list[str] | None, env_info: dict[str, Any]) -> dict[str, Any]:
    """The ``run_info`` block of a run's JSON (status fields are added by the caller)."""
    return {
        "run_id": spec.run_id,
        "suite": spec.suite,
        "kind": spec.kind,
        "experiment": spec.experiment,
        "table": spec.table,
        "method": spec.method,
        "variant": spec.variant,
        "few_shot_k": spec.few_shot_k,
        "seed": spec.seed,
        # Only k-fold runs carry it: records of suites without folds keep their exact shape.
        **({"fold": spec.fold} if spec.fold is not None else {}),
        "config": spec.config,
        "config_hash": spec.config_hash,
        "command": shlex.join(argv) if argv else None,
        **env_info,
    }


def train_info_from(metrics: dict[str, Any], proc: ProcessResult | None, out_dir: Path | None) -> dict[str, Any]:
    """The ``train_info`` block from a run's ``metrics.json`` plus what the runner measured."""
    peak = dict(metrics.get("peak_memory") or {})
    if proc is not None and proc.peak_rss_mb is not None:
        peak["process_peak_rss_mb"] = round(proc.peak_rss_mb, 1)
    best = metrics.get("valid_best") or {}
    adapter = dir_bytes(out_dir / "adapter") if out_dir is not None else None
    return {
        "peak_memory": peak,
        "train_samples_per_s": metrics.get("train_samples_per_s"),
        "inference_samples_per_s": metrics.get("inference_samples_per_s"),
        "wall_seconds": round(proc.wall_seconds, 2) if proc is not None else metrics.get("wall_seconds"),
        "train_wall_seconds": metrics.get("wall_seconds"),
        "train_examples": (metrics.get("examples") or {}).get("train"),
        "steps": metrics.get("steps"),
        "steps_to_best": best.get("step"),
        "stopped_early": metrics.get("stopped_early"),
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"),
        "trainable_percent": metrics.get("trainable_percent"),
        "adapter_bytes": adapter if adapter is not None else metrics.get("adapter_bytes"),
        "num_processes": metrics.get("num_processes"),
        **({"cpu_sharing": sharing} if proc is not None and (sharing := cpu_sharing(proc)) else {}),
        **({"labels": metrics["labels"]} if "labels" in metrics else {}),
        # Collaborative tokens: which ID model made them, and its own valid / test AUC (petrec.recipes.collab).
        **({"collab": metrics["collab"]} if "collab" in metrics else {}),
        # model.lm_target: residual, the fixed offset the language model trained beside.
        **({"residual_offset": metrics["residual_offset"]} if "residual_offset" in metrics else {}),
    }


def execute(suite: SuiteConfig, spec: RunSpec, results_dir: Path, env_info: dict[str, Any]) -> dict[str, Any]:
    """Run one spec (subprocess, or in-process for a baseline) and return its result record."""
    work = results_dir / WORK_DIR / spec.run_id
    started = now()
    if spec.kind == "baseline":
        from petrec.bench.baselines import run_baseline

        tick = time.perf_counter()
        info = run_info(spec, None, env_info)
        try:
            out = run_baseline(spec.method, spec.config)
        except Exception as exc:  # recorded, never hidden: the suite goes on
            info.update(status="failed", error=f"{type(exc).__name__}: {exc}", returncode=None,
                        started_at=started, finished_at=now())
            return {"run_info": info, "train_info": {"wall_seconds": time.perf_counter() - tick}, "metrics": {}}
        info.update(status="ok", error=None, returncode=0, started_at=started, finished_at=now())
        tinfo = train_info_from(out, None, None)
        tinfo["wall_seconds"] = round(time.perf_counter() - tick, 2)
        return {"run_info": info, "train_info": tinfo,
                "metrics": {k: out.get(k, {}) for k in ("valid", "valid_best", "test")}}

    work.mkdir(parents=True, exist_ok=True)
    out_dir = work / "out"
    metrics_path = out_dir / "metrics.json"
    if metrics_path.exists():
        metrics_path.unlink()  # never read a previous attempt's numbers
    config_path = work / "run_config.yaml"
    write_text_atomic(config_path, yaml.safe_dump(spec.config, sort_keys=False))
    argv = build_command(suite, spec, config_path, out_dir)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    proc = run_process(argv, work / "run.log", suite.timeout_s, env)
    info = run_info(spec, argv, env_info)
    info.update(returncode=proc.returncode, started_at=started, finished_at=now())
    metrics: dict[str, Any] = {}
    error = None
    if proc.timed_out:
        error = f"timed out after {suite.timeout_s:.0f} s (killed)\n" + log_tail(work / "run.log")
    elif proc.returncode != 0:
        killed = " (killed by signal: out of memory?)" if proc.returncode < 0 else ""
        error = f"exit code {proc.returncode}{killed}\n" + log_tail(work / "run.log")
    else:
        try:
            metrics = _load_metrics(metrics_path)
        except (OSError, ValueError) as exc:
            error = f"the run exited 0 but its metrics.json is missing or unreadable: {exc}\n" + log_tail(work / "run.log")
    info.update(status="failed" if error else "ok", error=error)
    return {
        "run_info": info,
        "train_info": train_info_from(metrics, proc, out_dir),
        "metrics": {k: metrics.get(k, {}) for k in ("valid", "valid_best", "test")},
    }


def _previous(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "run_info" in data else None


def _previous_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _summary(record: dict[str, Any]) -> str:
    info, tinfo = record["run_info"], record.get("train_info") or {}
    if info.get("status") != "ok":
        lines = [ln for ln in (info.get("error") or "").strip().splitlines() if ln.strip()]
        return f"FAILED ({lines[0] if lines else 'no output'}{' … ' + lines[-1] if len(lines) > 1 else ''})"
    test = (record.get("metrics") or {}).get("test") or {}
    parts = [f"{k}={v:.4f}" for k, v in list(test.items())[:2] if isinstance(v, (int, float))]
    if tinfo.get("train_samples_per_s"):
        parts.append(f"{tinfo['train_samples_per_s']:.1f} samples/s")
    peak = tinfo.get("peak_memory") or {}
    mem = peak.get("cuda_max_allocated_mb") or peak.get("process_peak_rss_mb") or peak.get("cpu_peak_rss_mb")
    if mem:
        parts.append(f"peak {mem:.0f} MB")
    share = (tinfo.get("cpu_sharing") or {}).get("other_share")
    if share is not None and share > SHARED_CPU_SHARE:
        parts.append(f"other processes used {share:.0%} of the CPU: speed not clean")
    return f"ok in {tinfo.get('wall_seconds') or 0:.1f} s" + (f" ({', '.join(parts)})" if parts else "")


def run_suite(
    suite: SuiteConfig,
    results_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    retry_failed: bool = False,
    select: Callable[[RunSpec], bool] | None = None,
    command_line: str | None = None,
    progress: Callable[[str], None] = print,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Run every (selected) run of ``suite`` that is not finished yet; return all their records.

    Args:
        suite: The suite.
        results_dir: Folder for ``runs/*.json`` and the report.
        force: Re-run runs that already have a result.
        retry_failed: Re-run runs whose result is ``failed`` (finished ``ok`` runs are kept).
        select: Optional filter over the expanded runs.
        command_line: What the user typed (written to ``bench_meta.json`` for the report).
        progress: Where per-run progress lines go.
        jobs: Runs in flight at once (each its own subprocess). 1 keeps timings clean; more
            fills a large GPU machine with small runs, and every record then says how many
            ran side by side (``run_info.concurrent_jobs``), since speed is shared.

    Returns:
        The records (fresh or loaded) of the selected runs, in suite order.
    """
    results = Path(results_dir)
    # Before this function writes anything: its own rewrite of a committed results folder's
    # suite.yaml / bench_meta.json must not mark the checkout "dirty" in every record.
    env_info = {"versions": versions(), "git": git_state(), "machine": machine()}
    runs_dir = results / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not (results / ".gitignore").exists():
        write_text_atomic(results / ".gitignore", f"{WORK_DIR}/\n")
    write_text_atomic(results / "suite.yaml", yaml.safe_dump(suite_to_dict(suite), sort_keys=False))
    specs = [s for s in expand(suite) if select is None or select(s)]
    meta_path = results / "bench_meta.json"
    command = command_line or f"petrec bench --suite {suite.name}"
    previous = _previous_meta(meta_path)
    invocation = {"command": command, "started_at": now(), "finished_at": None, "runs_selected": len(specs),
                  "jobs": jobs}
    meta = {"command": command, "suite": suite.name, "started_at": invocation["started_at"], "finished_at": None,
            "machine": env_info["machine"], "git": env_info["git"], "versions": env_info["versions"],
            "invocations": [*previous.get("invocations", []), invocation]}
    write_record(meta_path, meta)
    if jobs < 1:
        raise BenchError(f"jobs must be >= 1, got {jobs}")
    env_info = {**env_info, "concurrent_jobs": jobs}
    records: dict[int, dict[str, Any]] = {}
    pending: list[tuple[int, RunSpec, str]] = []
    width = len(str(len(specs)))
    for i, spec in enumerate(specs, 1):
        path = runs_dir / f"{spec.run_id}.json"
        prev = None if force else _previous(path)
        tag = f"[{i:>{width}}/{len(specs)}] {spec.run_id}"
        if prev is not None and prev["run_info"].get("config_hash") == spec.config_hash:
            status = prev["run_info"].get("status")
            if status == "ok" or (status == "failed" and not retry_failed):
                progress(f"{tag}: finished earlier ({status}), skipped")
                records[i] = prev
                continue
        elif prev is not None:
            progress(f"{tag}: config changed since the stored result, re-running")
        pending.append((i, spec, tag))

    def run_and_store(item: tuple[int, RunSpec, str]) -> tuple[int, dict[str, Any]]:
        i, spec, tag = item
        progress(f"{tag}: running …")
        record = execute(suite, spec, results, env_info)
        write_record(runs_dir / f"{spec.run_id}.json", record)
        progress(f"{tag}: {_summary(record)}")
        return i, record

    if jobs == 1:
        records.update(run_and_store(item) for item in pending)
    else:
        # Threads only wait on run subprocesses; statistics baselines run in-process but are tiny.
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            records.update(pool.map(run_and_store, pending))
    # Re-read: another invocation on the same folder may have started meanwhile; keep its entry.
    invocation["finished_at"] = now()
    latest = _previous_meta(meta_path).get("invocations") or []
    merged = [invocation if (i.get("command"), i.get("started_at")) == (command, invocation["started_at"]) else i
              for i in latest]
    if invocation not in merged:
        merged.append(invocation)
    meta.update(finished_at=invocation["finished_at"], invocations=merged)
    write_record(meta_path, meta)
    return [records[i] for i in sorted(records)]


def load_records(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All run records under ``results_dir/runs`` (sorted by run id); unreadable files raise.

    Raises:
        BenchError: The folder has no ``runs/`` or a file there is not a run record.
    """
    runs_dir = Path(results_dir) / RUNS_DIR
    if not runs_dir.is_dir():
        raise BenchError(f"{results_dir}: no {RUNS_DIR}/ folder; is this a petrec bench results folder?")
    out = []
    for path in sorted(runs_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BenchError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "run_info" not in data:
            raise BenchError(f"{path}: not a run record (expected keys run_info, train_info, metrics)")
        out.append(data)
    return out


def load_meta(results_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``bench_meta.json`` and ``suite.yaml`` of a results folder (empty where absent)."""
    results = Path(results_dir)
    meta: dict[str, Any] = {}
    if (results / "bench_meta.json").is_file():
        meta = json.loads((results / "bench_meta.json").read_text(encoding="utf-8"))
    if (results / "suite.yaml").is_file():
        meta["suite_config"] = read_yaml(results / "suite.yaml")
    return meta
