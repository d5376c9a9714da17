"""Check that every number in README.md's headline table comes from a benchmark record.

The project's rule: every figure the README quotes comes from a JSON record under
``benchmarks/results`` (a run record with its command and machine). This script enforces it
for the "Headline numbers" table of the "## Measured results" section, plus the prose
sentences listed in the mapping, using an explicit mapping file,
``benchmarks/readme_sources.json``:

- ``rows``: one entry per table row, matched by the row's exact first cell ("what"). Its
  ``where`` must equal the row's third cell, and every record the row uses must lie in that
  folder (under ``benchmarks/results``).
- Each row lists, in the order they appear, every number of its second cell ("measured"). A
  number is a run of digits not glued to a word (``P1``, ``NDCG@10`` and ``E1`` are names, not
  numbers); ``0.55–0.58`` is two numbers. Each entry has the number's ``text`` and one of:

  - ``value``: how to compute it from records; the README text must equal the computed value
    formatted at the README's precision (``0.7294`` ← 0.72937 …). A value is
    ``{"record": PATH, "key": "a.b.c"}`` (PATH relative to ``benchmarks/results``; ``key`` a
    dotted path or a list of keys; optional ``"commit"`` reads the record from git history),
    ``{"glob": PATTERN, "key": …, "count": N}`` (exactly N records; only inside
    ``mean`` / ``min`` / ``max``), ``{"mean" | "min" | "max": [VALUE, …] or GLOB}``, or
    ``{"ratio": [NUMERATOR, DENOMINATOR]}`` (recomputed, never read from a summary);
    an optional ``"scale"`` on the entry multiplies the value (e.g. 100 for a percentage);
  - ``reference``: a published or goal figure, not a measurement; the entry's text says what
    and where from (when ``source_file``, a path in the repository, is given, the number's
    text must appear in that file);
  - ``context``: a number that is part of a name or a description (the 7 of LLaMA-7B).

- ``prose``: sentences outside the table, each found by a ``quote`` of README.md (whitespace
  runs count as one space): either
  ``numbers`` (as above, every number of the quote) or an ``observation`` (a figure with no
  record, which the README must label with the ``commit`` it was observed at).

Every record used must be a run record: ``run_info.status`` (when present) is ``ok`` and a
command and a machine are recorded (for runs the harness ran in its own process, the command
is the ``petrec bench`` invocation in the suite folder's ``bench_meta.json``). Exit status 1, with one line per unbacked number, when
anything does not match; 0 otherwise.

    python benchmarks/check_readme.py [--readme README.md] [--sources benchmarks/readme_sources.json] [-v]
"""

from __future__ import annotations

import argparse
import glob as globlib
import json
import math
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_README = REPO / "README.md"
DEFAULT_SOURCES = REPO / "benchmarks" / "readme_sources.json"
DEFAULT_RESULTS = REPO / "benchmarks" / "results"

# A number: digits (with thousands commas and a decimal part) not preceded by a word
# character, "@" or "." — so P1, E1, NDCG@10 and the 2 in "v1.2" are not numbers.
NUMBER = re.compile(r"(?<![\w@.,])\d+(?:,\d{3})*(?:\.\d+)?")
MINUS = ("-", "−")


class SourceError(Exception):
    """A record, key or mapping entry that cannot give a value."""


class _NoHistoryError(SourceError):
    """A record at a git commit, with no git history to read it from."""


@dataclass
class Report:
    """What the check found: problems (unbacked numbers) and one line per checked number."""

    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"record": 0, "reference": 0,
                                                             "context": 0, "observation": 0})
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def numbers_in(text: str) -> list[str]:
    """The numbers of a README cell or sentence, as written, in order (a leading minus kept)."""
    out = []
    for m in NUMBER.finditer(text):
        start = m.start()
        sign = ""
        if start > 0 and text[start - 1] in MINUS and (start == 1 or not text[start - 2].isalnum()):
            sign = "-"
        out.append(sign + m.group())
    return out


def formats_as(value: float, text: str) -> bool:
    """Whether ``value`` printed at the precision of ``text`` reads ``text``."""
    plain = text.replace(",", "")
    decimals = len(plain.split(".", 1)[1]) if "." in plain else 0
    if not math.isfinite(value):
        return False
    shown = f"{value:.{decimals}f}"
    return shown == plain or (shown.lstrip("-") == plain.lstrip("-") and float(shown) == 0.0)


def table_rows(readme: str, section: str, marker: str) -> list[list[str]]:
    """Cells of the body rows of the first Markdown table after ``marker`` in ``section``."""
    lines = readme.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == section)
    except StopIteration:
        raise SourceError(f"section {section!r} not found in the README") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    body = lines[start + 1:end]
    try:
        at = next(i for i, line in enumerate(body) if marker in line)
    except StopIteration:
        raise SourceError(f"{marker!r} not found in section {section!r}") from None
    rows: list[list[str]] = []
    in_table = False
    for line in body[at + 1:]:
        if line.startswith("|"):
            in_table = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            rows.append(cells)
        elif in_table:
            break
    if not rows:
        raise SourceError(f"no table after {marker!r}")
    return rows[1:]  # the first row is the header


class Records:
    """Reads JSON records under the results folder (and from git history when asked)."""

    def __init__(self, results: Path, repo: Path) -> None:
        self.results = results
        self.repo = repo
        self._cache: dict[tuple[str, str | None], Any] = {}
        self.used: set[tuple[str, str | None]] = set()
        self._history: bool | None = None

    def history_available(self) -> bool:
        """Whether full git history is there to read records at older commits."""
        if self._history is None:
            try:
                out = subprocess.run(["git", "-C", str(self.repo), "rev-parse", "--is-shallow-repository"],
                                     capture_output=True, text=True, check=True).stdout.strip()
                self._history = out == "false"
            except (OSError, subprocess.CalledProcessError):
                self._history = False
        return self._history

    def load(self, path: str, commit: str | None = None) -> Any:
        key = (path, commit)
        if key not in self._cache:
            if commit is None:
                file = self.results / path
                if not file.is_file():
                    raise SourceError(f"record {path} not found")
                text = file.read_text(encoding="utf-8")
            else:
                rel = (self.results / path).resolve().relative_to(self.repo.resolve()).as_posix()
                proc = subprocess.run(["git", "-C", str(self.repo), "show", f"{commit}:{rel}"],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SourceError(f"record {path} not found at commit {commit}")
                text = proc.stdout
            try:
                self._cache[key] = json.loads(text)
            except json.JSONDecodeError as err:
                raise SourceError(f"record {path} is not JSON: {err}") from None
            self._validate(path, self._cache[key])
        self.used.add(key)
        return self._cache[key]

    def _validate(self, path: str, record: Any) -> None:
        """A run record: status ok (when recorded), a machine, and a command.

        Runs the harness executes in its own process (statistics and ID baselines) record no
        command of their own; theirs is the ``petrec bench`` invocation in the suite folder's
        ``bench_meta.json`` (``runs/<run>.json`` → ``bench_meta.json`` beside ``runs/``).
        """
        if not isinstance(record, dict):
            raise SourceError(f"record {path} is not a JSON object")
        info = record.get("run_info") if isinstance(record.get("run_info"), dict) else record
        status = info.get("status")
        if status is not None and status != "ok":
            raise SourceError(f"record {path} has status {status!r}")
        if not info.get("machine"):
            raise SourceError(f"record {path} is not a run record (no machine)")
        if not info.get("command") and not self._bench_command(path, info):
            raise SourceError(f"record {path} is not a run record (no command, and no "
                              f"bench_meta.json command for its suite)")

    def _bench_command(self, path: str, info: dict[str, Any]) -> bool:
        parts = Path(path).parts
        if not info.get("suite") or "runs" not in parts:
            return False
        meta = self.results.joinpath(*parts[:parts.index("runs")], "bench_meta.json")
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return data.get("suite") == info["suite"] and bool(
            data.get("command") or any(i.get("command") for i in data.get("invocations", [])))

    def glob(self, pattern: str) -> list[str]:
        return sorted(Path(p).relative_to(self.results).as_posix()
                      for p in globlib.glob(str(self.results / pattern)))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def lookup(record: Any, key: str | list[str], path: str) -> float:
    """The number at ``key`` (dotted, or a list of keys / list indices) in ``record``."""
    parts = key.split(".") if isinstance(key, str) else list(key)
    node = record
    for part in parts:
        if isinstance(node, list) and str(part).lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                raise SourceError(f"{path}: no {key!r}")
            node = node[index]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise SourceError(f"{path}: no {key!r}")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise SourceError(f"{path}: {key!r} is {node!r}, not a number")
    return float(node)


def resolve(spec: Any, records: Records, where: str | None) -> list[float]:
    """Values of a value spec (a list for ``glob``; one value otherwise)."""
    if isinstance(spec, list):
        return [v for item in spec for v in resolve(item, records, where)]
    if not isinstance(spec, dict):
        raise SourceError(f"bad value spec {spec!r}")
    if "record" in spec:
        path = spec["record"]
        if where is not None and not path.startswith(where):
            raise SourceError(f"record {path} is not in the row's folder {where}")
        commit = spec.get("commit")
        if commit is not None and not records.history_available():
            raise _NoHistoryError(f"record {path} at commit {commit}")
        return [lookup(records.load(path, commit), spec["key"], path)]
    if "glob" in spec:
        pattern = spec["glob"]
        if where is not None and not pattern.startswith(where):
            raise SourceError(f"glob {pattern} is not in the row's folder {where}")
        paths = records.glob(pattern)
        if len(paths) != spec.get("count", -1):
            raise SourceError(f"glob {pattern} matches {len(paths)} records, the mapping expects "
                              f"{spec.get('count')}")
        return [lookup(records.load(p), spec["key"], p) for p in paths]
    for name, fn in (("mean", statistics.fmean), ("min", min), ("max", max)):
        if name in spec:
            values = resolve(spec[name], records, where)
            if not values:
                raise SourceError(f"{name} of no values")
            return [fn(values)]
    if "ratio" in spec:
        num, den = spec["ratio"]
        (a,), (b,) = resolve(num, records, where), resolve(den, records, where)
        if b == 0:
            raise SourceError("ratio with a zero denominator")
        return [a / b]
    raise SourceError(f"bad value spec {spec!r}")


def check_numbers(label: str, found: list[str], entries: list[dict[str, Any]], records: Records,
                  where: str | None, report: Report) -> None:
    """Match the numbers ``found`` in README text with the mapping's ``entries``, in order."""
    for i in range(max(len(found), len(entries))):
        text = found[i] if i < len(found) else None
        entry = entries[i] if i < len(entries) else None
        if entry is None:
            report.problems.append(f"UNBACKED {text} in {label}: no entry in the mapping for it")
            continue
        if text is None:
            report.problems.append(f"MISSING {entry.get('text')} in {label}: the mapping lists it, "
                                   f"the README does not have it")
            continue
        if entry.get("text") != text:
            report.problems.append(f"UNBACKED {text} in {label}: the mapping expects "
                                   f"{entry.get('text')!r} at this place")
            continue
        name = f"{text} ({entry['label']})" if entry.get("label") else text
        if "reference" in entry:
            source_file = entry.get("source_file")
            if source_file and text not in _read(records.repo / source_file):
                report.problems.append(f"UNBACKED {name} in {label}: reference not found in {source_file}")
                continue
            report.counts["reference"] += 1
            report.checked.append(f"ref   {name:<28} {entry['reference']}")
        elif "context" in entry:
            report.counts["context"] += 1
            report.checked.append(f"ctx   {name:<28} {entry['context']}")
        elif "value" in entry:
            try:
                values = resolve(entry["value"], records, where)
            except _NoHistoryError as err:
                report.counts["record"] += 1
                report.notes.append(f"not checkable here (no git history): {name} in {label}: {err}")
                continue
            except SourceError as err:
                report.problems.append(f"UNBACKED {name} in {label}: {err}")
                continue
            if len(values) != 1:
                report.problems.append(f"UNBACKED {name} in {label}: the spec gives {len(values)} "
                                       f"values (use mean / min / max)")
                continue
            value = values[0] * entry.get("scale", 1)
            if not formats_as(value, text):
                report.problems.append(f"UNBACKED {name} in {label}: the records give {value:.6g}")
                continue
            report.counts["record"] += 1
            report.checked.append(f"ok    {name:<28} = {value:.6g}")
        else:
            report.problems.append(f"UNBACKED {name} in {label}: the mapping entry has no value, "
                                   f"reference or context")


def check(readme: Path = DEFAULT_README, sources: Path = DEFAULT_SOURCES,
          results: Path = DEFAULT_RESULTS, repo: Path = REPO) -> Report:
    """Check README ``readme`` against the mapping ``sources`` and the records in ``results``."""
    report = Report()
    text = readme.read_text(encoding="utf-8")
    mapping = json.loads(sources.read_text(encoding="utf-8"))
    records = Records(results, repo)
    table = mapping["table"]
    try:
        rows = table_rows(text, table["section"], table["marker"])
    except SourceError as err:
        report.problems.append(f"TABLE {err}")
        return report
    by_what = {row["what"]: row for row in mapping["rows"]}
    seen = set()
    for cells in rows:
        if len(cells) != 3:
            report.problems.append(f"ROW {cells[0]!r}: expected 3 cells (what | measured | where)")
            continue
        what, measured, where_cell = cells
        row = by_what.get(what)
        label = f"row {what!r}"
        if row is None:
            for number in numbers_in(measured):
                report.problems.append(f"UNBACKED {number} in {label}: the row is not in the mapping")
            continue
        seen.add(what)
        where = row["where"]
        if where_cell.strip("`") != where:
            report.problems.append(f"ROW {label}: its 'where' cell says {where_cell}, the mapping {where}")
        if not (results / where).is_dir():
            report.problems.append(f"ROW {label}: folder {where} not found under {results}")
        check_numbers(label, numbers_in(measured), row["numbers"], records, where, report)
    for what in by_what.keys() - seen:
        report.problems.append(f"ROW {what!r}: in the mapping, not in the README's table")
    flat = " ".join(text.split())
    for claim in mapping.get("prose", []):
        quote = " ".join(claim["quote"].split())
        label = f"sentence {quote[:60]!r}"
        if quote not in flat:
            report.problems.append(f"PROSE {label}: quote not found in the README (update the mapping)")
            continue
        if "observation" in claim:
            commit = claim.get("commit")
            if not commit or commit not in quote:
                report.problems.append(f"UNBACKED {label}: an observation must name its commit in "
                                       f"the README text")
                continue
            report.counts["observation"] += 1
            report.checked.append(f"obs   {claim['observation']}: {quote!r}")
            continue
        check_numbers(label, numbers_in(quote), claim["numbers"], records, None, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=DEFAULT_README)
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every checked number")
    args = parser.parse_args(argv)
    report = check(args.readme, args.sources, args.results)
    if args.verbose:
        print("\n".join(report.checked))
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(problem)
    c = report.counts
    print(f"{c['record']} numbers backed by records, {c['reference']} declared references, "
          f"{c['context']} context numbers, {c['observation']} sentences labelled as observations; "
          f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
