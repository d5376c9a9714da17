"""benchmarks/serve_load.py: the goal quantities and the page computed from a record (no server)."""

from __future__ import annotations

from types import ModuleType


def _row(adapters: int, rps: float, *, candidates: int = 10, size: int = 64, other: float = 0.01) -> dict:
    return {"workers": 1, "adapters": adapters, "candidates": candidates, "max_batch_wait_ms": 5.0 if size > 1 else 0.0,
            "max_batch_size": size, "ok": 300, "failed": 0, "throughput_rps": rps, "p50_ms": 100.0, "p99_ms": 200.0,
            "server_cores_used": 0.9, "cpu_sharing": {"other_share": other}}


def _report() -> dict:
    adapters = [{"name": f"ctr-{i}", "own_tensor_mib": 0.28, "rss_delta_mib": d} for i, d in enumerate([80.0, 2.0, 4.0, 3.0])]
    return {"command": "python benchmarks/serve_load.py --export X", "git": {"commit": "abcdef0123", "dirty": False},
            "machine": {"cpu_model": "AMD EPYC", "cpu_cores_usable": 2, "memory_gib": 23.5, "gpus": []},
            "scenarios": [_row(1, 4.0), _row(5, 3.9), _row(20, 3.0, other=0.07),
                          _row(1, 40.0, candidates=1), _row(1, 20.0, candidates=1, size=1)],
            "memory": {"rss_before_base_mib": 300.0, "rss_after_base_mib": 310.0, "base_tensor_mib": 200.0,
                       "adapters": adapters}}


def test_summary_reads_the_goal_quantities(serve_load: ModuleType) -> None:
    report = _report()
    s = serve_load.summarize(report)
    assert s["rps_ratio_adapters"] == "20/1" and s["rps_ratio"] == 0.75 and s["rps_goal_met"] is False
    assert s["micro_batching_rps_gain"] == 2.0
    # adapters 2..N: median of 2, 4, 3 MiB over the base's 200 MiB of tensors (not its 10 MiB RSS step)
    assert s["rss_per_extra_adapter_mib"] == 3.0 and s["rss_per_adapter_ratio"] == 0.015 and s["rss_goal_met"]
    assert s["other_share_max"] == 0.07
    report["summary"] = s
    page = serve_load.render(report)
    assert "req/s at 20/1 adapters: 0.75 (goal ≥ 0.9): NOT met" in page
    assert "1.50% (goal ≤ 2%): met" in page and "at most 7.0% of the CPU" in page
    assert page.count("\n| 1 |") == 5


def test_summary_without_memory_or_batching_check(serve_load: ModuleType) -> None:
    report = {**_report(), "scenarios": [_row(1, 4.0)]}
    report.pop("memory")
    s = serve_load.summarize(report)
    assert "rps_ratio" not in s and "rss_per_adapter_ratio" not in s and "micro_batching_rps_gain" not in s
