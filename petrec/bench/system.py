"""What a result needs to be reproducible: machine, library versions, git commit; and process memory.

Plain standard-library code (``/proc``, ``importlib.metadata``, ``git``) so the parent
process of a suite stays light; CUDA details come from torch only when it is importable.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from petrec.files import write_json_atomic

#: Distributions whose versions every result records.
VERSIONED = ("petrec", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets",
             "numpy", "scikit-learn")

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A run during which other processes used more than this share of the machine's CPU
#: (``train_info.cpu_sharing.other_share``) has its speed flagged as not clean.
SHARED_CPU_SHARE = 0.1


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED` plus Python (None = not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"name": props.name, "memory_gib": round(props.total_memory / 1024**3, 1)})
    return out


def machine() -> dict[str, Any]:
    """CPU model, core counts (usable by this process and total), memory, GPUs, OS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores_usable": usable,
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "platform": platform.platform(),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line for reports: ``AMD EPYC, 2 cores, 24.0 GiB RAM, no GPU``."""
    gpus = info.get("gpus") or []
    gpu = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) if gpus else "no GPU"
    return (f"{info.get('cpu_model', '?')}, {info.get('cpu_cores_usable', '?')} usable cores, "
            f"{info.get('memory_gib', '?')} GiB RAM, {gpu}")


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit of the source checkout and whether tracked files differ from it (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None and os.environ.get("PETREC_GIT_COMMIT"):
        # A copy of a checkout without .git (e.g. shipped to a GPU machine): the sender names it.
        return {"commit": os.environ["PETREC_GIT_COMMIT"], "dirty": None, "source": "PETREC_GIT_COMMIT"}
    # Results folders are outputs: a suite resumed before its results are committed is not "dirty".
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def rss_mb() -> dict[str, float]:
    """This process's current and peak resident set size in MiB (Linux ``/proc``; empty elsewhere)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def machine_cpu_seconds(stat_path: Path = Path("/proc/stat")) -> tuple[float, int] | None:
    """CPU seconds every process on this machine has used since boot, and the CPUs counted.

    Sums user, nice, system, irq, softirq and steal time (idle and iowait excluded) of the
    ``cpu`` line of ``/proc/stat``. Two readings around a run, minus the run's own CPU time,
    say how much of the machine other work took while it ran (see
    :func:`petrec.bench.runner.run_process`). None where ``/proc/stat`` is not readable.
    """
    try:
        lines = stat_path.read_text().splitlines()
    except OSError:
        return None
    fields = lines[0].split() if lines else []
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    cpus = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), cpus


def cpu_sharing_record(own_cpu: float, machine_cpu: float, cpus: int, wall: float) -> dict[str, Any]:
    """The ``cpu_sharing`` entry of a record: how much CPU other processes took during a run.

    ``other_share`` = (machine CPU time − the run's own CPU time) ÷ (CPUs × wall time): 0 on an
    otherwise idle machine, 0.5 when other work kept half of the cores busy.
    """
    other = max(0.0, machine_cpu - own_cpu)
    return {"run_cpu_seconds": round(own_cpu, 1), "other_cpu_seconds": round(other, 1),
            "cpus": cpus, "other_share": round(other / (cpus * wall), 3)}


class CpuSharingMeter:
    """Measures :func:`cpu_sharing_record` around work done in this process (and its children).

    ``start()`` before the work, ``stop()`` after it; ``stop`` returns None where ``/proc/stat``
    is not readable.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _own_cpu() -> float:
        import resource

        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def start(self) -> None:
        """Take the first reading."""
        import time

        reading = machine_cpu_seconds()
        self._start = None if reading is None else (reading[0], self._own_cpu(), time.perf_counter())

    def stop(self) -> dict[str, Any] | None:
        """Take the second reading and return the record (None if either reading failed)."""
        import time

        reading = machine_cpu_seconds()
        if self._start is None or reading is None:
            return None
        machine0, own0, tick = self._start
        wall = time.perf_counter() - tick
        if wall <= 0 or not reading[1]:
            return None
        return cpu_sharing_record(self._own_cpu() - own0, reading[0] - machine0, reading[1], wall)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to the current RSS; False where unsupported.

    Linux ≥ 4.0 resets it when ``5`` is written to ``/proc/self/clear_refs``; this lets a
    measurement exclude model loading (e.g. the fp32 copy a quantized base is built from).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def dir_bytes(path: Path) -> int | None:
    """Total size of the files under ``path`` (None when it does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_record(path: Path, data: Any) -> None:
    """Write a benchmark record as strict JSON (NaN / ±inf → null, numpy scalars → numbers), atomically."""
    write_json_atomic(path, clean_floats(data), allow_nan=False, default=_jsonable)


def clean_floats(obj: Any) -> Any:
    """Replace NaN / ±inf by None recursively (strict JSON has no NaN; None reads as "missing")."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_floats(v) for v in obj]
    return obj


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return clean_floats(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
