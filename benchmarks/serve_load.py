"""Bounded load test of ``petrec serve`` on loopback: throughput and p50 / p99 latency.

For each scenario (uvicorn workers × adapters loaded) the script starts ``petrec serve`` on
127.0.0.1, waits for ``/readyz``, sends ``--warmup`` requests (not counted), then exactly
``--requests`` ``POST /v1/predict`` requests from ``--concurrency`` asyncio + httpx clients, under
an overall ``--time-limit``; requests not finished by then count as failed. With N adapters
loaded, requests go round-robin over the N adapters (micro-batches form per adapter). Each
request: a 5-item history and ``--candidates`` candidate items from the synthetic catalogue
(fixed seed). ``--batching-check`` adds single-candidate requests with micro-batching on and
off; ``--memory N`` measures RSS and tensor memory of the base plus N adapters in-process.
Results go to ``OUT/load.json`` (and are printed as a table).

    python benchmarks/serve_load.py --export /tmp/serve_load/export --batching-check --memory 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from petrec.bench.system import (  # noqa: E402
    cpu_sharing_record,
    describe_machine,
    git_state,
    machine,
    machine_cpu_seconds,
)
from petrec.files import write_json_atomic, write_text_atomic  # noqa: E402

#: Issue 20's serving goals: memory per extra adapter ÷ the base's, and req/s at the most
#: adapters ÷ at one (single worker, same requests).
GOAL_RSS_PER_ADAPTER = 0.02
GOAL_MANY_ADAPTERS_RPS = 0.9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (uvicorn workers), MiB."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children so far."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def _worker_rss_mib(pid: int) -> list[float]:
    import psutil

    kids = psutil.Process(pid).children(recursive=True)  # workers are multiprocessing spawns
    return [round(p.memory_info().rss / 2**20, 1) for p in kids if "spawn_main" in " ".join(p.cmdline())]


def _bodies(items: list[str], n: int, adapters: list[str], candidates: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pick = rng.choice(len(items), size=5 + candidates, replace=False)
        out.append({
            "adapter": adapters[i % len(adapters)],
            "history": [{"item_id": items[j], "label": int(rng.integers(0, 2))} for j in pick[:5]],
            "candidates": [{"item_id": items[j]} for j in pick[5:]],
        })
    return out


async def _fire(url: str, key: str, bodies: list[dict], concurrency: int, limit_s: float) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    headers = {"Authorization": f"Bearer {key}"}

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/predict", json=body, headers=headers)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                    continue
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=limit_s, limits=limits) as client:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(client_loop(client)) for _ in range(concurrency)]
        _done, pending = await asyncio.wait(tasks, timeout=limit_s)
        for t in pending:
            t.cancel()
        wall = time.perf_counter() - t0
    unfinished = len(bodies) - len(latencies) - len(failures)
    lat = np.array(latencies) * 1000
    return {
        "requests": len(bodies), "ok": len(latencies), "failed": len(failures) + unfinished,
        "failure_examples": failures[:3], "timed_out": bool(pending), "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "mean_ms": round(statistics.fmean(lat), 1) if len(lat) else None,
    }


def run_scenario(args: argparse.Namespace, workers: int, n_adapters: int, items: list[str], *,
                 candidates: int, batch_wait_ms: float, batch_size: int) -> dict:
    """Start a server with ``n_adapters`` copies of the export and ``workers`` workers; load it."""
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    names = [f"ctr-{i}" for i in range(n_adapters)]
    for name in names:
        shutil.copytree(args.export, tmp / name)
    key = secrets.token_urlsafe(24)
    port = _free_port()
    env = {**os.environ, "PETREC_API_KEYS": key, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "petrec", "serve", "--base", args.base, "--adapters", str(tmp),
           "--port", str(port), "--workers", str(workers), "--strict", "--log-level", "warning",
           "--max-batch-wait-ms", str(batch_wait_ms), "--max-batch-size", str(batch_size)]
    log = open(tmp / "server.log", "w")  # noqa: SIM115
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + args.start_timeout
        ready = 0
        while time.time() < deadline and ready < workers:  # every worker answers /readyz once loaded
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    ready += 1
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError((tmp / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        startup = time.perf_counter() - t_start
        warm = _bodies(items, args.warmup, names, candidates, seed=1)
        asyncio.run(_fire(url, key, warm, args.concurrency, args.time_limit))
        import psutil

        bodies = _bodies(items, args.requests, names, candidates)
        server_cpu0, client_cpu0 = _cpu_s(proc.pid), sum(os.times()[:2])
        machine0 = machine_cpu_seconds()
        psutil.cpu_percent(None)
        result = asyncio.run(_fire(url, key, bodies, args.concurrency, args.time_limit))
        machine1 = machine_cpu_seconds()
        result["machine_cpu_busy_pct"] = psutil.cpu_percent(None)  # all cores, during the measured phase
        server_cpu, client_cpu = _cpu_s(proc.pid) - server_cpu0, sum(os.times()[:2]) - client_cpu0
        result["server_cores_used"] = round(server_cpu / result["wall_s"], 2)
        result["client_cores_used"] = round(client_cpu / result["wall_s"], 2)
        # Other processes' share of the machine while the load ran (server + client are "own").
        result["cpu_sharing"] = (None if machine0 is None or machine1 is None else
                                 cpu_sharing_record(server_cpu + client_cpu, machine1[0] - machine0[0],
                                                    machine1[1], result["wall_s"]))
        result.update({"workers": workers, "adapters": n_adapters, "candidates": candidates,
                       "max_batch_wait_ms": batch_wait_ms, "max_batch_size": batch_size,
                       "startup_s": round(startup, 1),
                       "rss_total_mib": round(_rss_mib(proc.pid), 1),
                       "worker_rss_mib": _worker_rss_mib(proc.pid) if workers > 1 else [round(_rss_mib(proc.pid), 1)]})
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
        result["batch_requests_mean_one_worker"] = _batch_mean(metrics)
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _batch_mean(metrics: str) -> float | None:
    """Mean requests per micro-batch in the worker that answered /metrics."""
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("petrec_batch_requests_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("petrec_batch_requests_count"):
            count += float(line.rsplit(" ", 1)[1])
    return round(total / count, 2) if count else None


def memory_probe(export: Path, base: str, n: int) -> dict:
    """In this process: RSS and tensor bytes of the base, then of ``n`` copies of the export."""
    import gc

    import psutil
    import torch

    from petrec.serve.registry import Base, build_adapter

    torch.set_num_threads(1)
    proc = psutil.Process()

    def rss() -> float:
        return round(proc.memory_info().rss / 2**20, 1)

    tmp = Path(tempfile.mkdtemp(prefix="serve-mem-"))
    try:
        for i in range(n):
            shutil.copytree(export, tmp / f"ctr-{i}")
        out: dict = {"rss_before_base_mib": rss()}
        b = Base.load(base)
        out.update(rss_after_base_mib=rss(), base_tensor_mib=round(b.bytes / 2**20, 2), adapters=[])
        keep = []
        for i in range(n):
            before = rss()
            a = build_adapter(b, tmp, f"ctr-{i}")
            keep.append(a)
            gc.collect()
            out["adapters"].append({"name": a.name, "shares_base": a.shares_base,
                                    "own_tensor_mib": round(a.own_bytes / 2**20, 3),
                                    "shared_tensor_mib": round(a.shared_bytes / 2**20, 2),
                                    "rss_delta_mib": round(rss() - before, 1)})
        out["rss_after_all_mib"] = rss()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(report: dict) -> dict:
    """Goal quantities from the record's scenarios and memory probe (None where not measured)."""
    rows = report["scenarios"]
    one = [r for r in rows if r["workers"] == 1 and r["candidates"] == max(x["candidates"] for x in rows)]
    by_adapters = {r["adapters"]: r for r in one if r["max_batch_size"] > 1}
    out: dict = {"goal_rss_per_adapter": GOAL_RSS_PER_ADAPTER, "goal_many_adapters_rps": GOAL_MANY_ADAPTERS_RPS}
    if len(by_adapters) >= 2:
        lo, hi = min(by_adapters), max(by_adapters)
        out.update(rps_ratio_adapters=f"{hi}/{lo}",
                   rps_ratio=round(by_adapters[hi]["throughput_rps"] / by_adapters[lo]["throughput_rps"], 3))
        out["rps_goal_met"] = out["rps_ratio"] >= GOAL_MANY_ADAPTERS_RPS
    single = [r for r in rows if r["workers"] == 1 and r["adapters"] == 1 and r["candidates"] == 1]
    on = [r for r in single if r["max_batch_size"] > 1]
    off = [r for r in single if r["max_batch_size"] == 1]
    if on and off:
        out["micro_batching_rps_gain"] = round(on[0]["throughput_rps"] / off[0]["throughput_rps"], 3)
    mem = report.get("memory")
    if mem and len(mem["adapters"]) >= 2:
        extra = [a["rss_delta_mib"] for a in mem["adapters"][1:]]  # the first also pays one-off imports
        # The base's memory = its parameter tensors: its RSS step is no measure (safetensors maps the
        # file lazily, so pages arrive later, with the first adapter) and a larger denominator flatters.
        base = mem["base_tensor_mib"]
        out.update(rss_per_extra_adapter_mib=round(statistics.median(extra), 2), base_tensor_mib=round(base, 2),
                   own_tensor_mib_per_adapter=mem["adapters"][-1]["own_tensor_mib"])
        out["rss_per_adapter_ratio"] = round(out["rss_per_extra_adapter_mib"] / base, 4)
        out["rss_goal_met"] = out["rss_per_adapter_ratio"] <= GOAL_RSS_PER_ADAPTER
    shares = [r["cpu_sharing"]["other_share"] for r in rows if r.get("cpu_sharing")]
    out["other_share_max"] = max(shares) if shares else None
    return out


def render(report: dict) -> str:
    """The Markdown page of a record (every figure read from it)."""
    s = report["summary"]
    sharing = ("Other processes took at most {:.1%} of the CPU during a measured phase.".format(s["other_share_max"])
               if s.get("other_share_max") is not None else "Other processes' CPU share: not measurable here.")
    git = report.get("git") or {}
    lines = ["# `petrec serve` load test", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {describe_machine(report['machine'])}; commit {str(git.get('commit'))[:7]}"
             f"{' (uncommitted changes)' if git.get('dirty') else ''}. {sharing}", "",
             "| workers | adapters | candidates / request | batch wait ms / size | ok | failed | req/s | p50 ms | "
             "p99 ms | server cores | other processes' CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["scenarios"]:
        other = r.get("cpu_sharing", {}) or {}
        lines.append(f"| {r['workers']} | {r['adapters']} | {r['candidates']} | {r['max_batch_wait_ms']} / "
                     f"{r['max_batch_size']} | {r['ok']} | {r['failed']} | {r['throughput_rps']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r['server_cores_used']} | "
                     f"{other.get('other_share', float('nan')):.1%} |")
    lines += ["", "## Goals (issue 20)", ""]
    if "rps_ratio" in s:
        lines.append(f"- req/s at {s['rps_ratio_adapters']} adapters: {s['rps_ratio']} (goal ≥ "
                     f"{s['goal_many_adapters_rps']}): {'met' if s['rps_goal_met'] else 'NOT met'}.")
    if "rss_per_adapter_ratio" in s:
        lines.append(f"- RSS per extra adapter: {s['rss_per_extra_adapter_mib']} MiB (median over adapters 2..N; "
                     f"own tensors {s['own_tensor_mib_per_adapter']} MiB) against the base's "
                     f"{s['base_tensor_mib']} MiB of parameter tensors: {s['rss_per_adapter_ratio']:.2%} (goal ≤ "
                     f"{s['goal_rss_per_adapter']:.0%}): {'met' if s['rss_goal_met'] else 'NOT met'}.")
    if "micro_batching_rps_gain" in s:
        lines.append(f"- Micro-batching, single-candidate requests: {s['micro_batching_rps_gain']}× the req/s of "
                     "batch size 1.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, type=Path, help="one export folder (copied N times)")
    p.add_argument("--base", default="minilm")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--time-limit", type=float, default=240.0, help="seconds for all requests of a scenario")
    p.add_argument("--start-timeout", type=float, default=240.0)
    p.add_argument("--max-batch-wait-ms", type=float, default=5.0)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--scenarios", default="1x1,1x5,1x20", help="WORKERSxADAPTERS, comma-separated")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve")
    p.add_argument("--out-name", default="load.json", help="results file inside --out")
    p.add_argument("--batching-check", action="store_true",
                   help="also run 1 worker / 1 adapter with 1 candidate per request, micro-batching on "
                        "(the flags above) and off (--max-batch-wait-ms 0 --max-batch-size 1)")
    p.add_argument("--memory", type=int, default=0, metavar="N",
                   help="also load the base and N copies of the export in this process and report "
                        "RSS / tensor memory per adapter")
    args = p.parse_args(argv)
    items = list(pd.read_parquet(args.export / "items.parquet")["item_id"].astype(str))
    plan = [(int(w), int(a), args.candidates, args.max_batch_wait_ms, args.max_batch_size)
            for w, a in (spec.split("x") for spec in args.scenarios.split(",") if spec)]
    if args.batching_check:
        plan += [(1, 1, 1, args.max_batch_wait_ms, args.max_batch_size), (1, 1, 1, 0.0, 1)]
    rows = []
    for workers, n_adapters, cands, wait_ms, size in plan:
        print(f"scenario: {workers} worker(s), {n_adapters} adapter(s), {cands} candidate(s), "
              f"batch wait {wait_ms} ms / size {size} ...", flush=True)
        rows.append(run_scenario(args, workers, n_adapters, items, candidates=cands, batch_wait_ms=wait_ms,
                                 batch_size=size))
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "command": "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "git": git_state(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scenarios": rows,
    }
    if args.memory:
        report["memory"] = memory_probe(args.export, args.base, args.memory)
    report["summary"] = summarize(report)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / args.out_name, report)
    text = render(report)
    write_text_atomic(args.out / (Path(args.out_name).stem.upper() + ".md"), text)
    print(text)
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
