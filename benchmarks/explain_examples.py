"""Worked examples of ``petrec explain`` on P1: which history items moved a trained model's score.

For each run folder given, the first ``--per-class`` liked and disliked examples of a split are
explained by occlusion (:mod:`petrec.explain`); the record keeps every number with the item
titles, and REPORT.md shows each example as a table and a bar chart. Run from the repository root:

    python benchmarks/explain_examples.py --run RUN_DIR [--run RUN_DIR ...] \\
        --out benchmarks/results/explain

Every figure in REPORT.md is read from ``explain.json`` (written first); nothing is typed in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from petrec.bench.plots import pyplot, save_figure
from petrec.bench.system import describe_machine, git_state, machine, versions, write_record
from petrec.files import read_json_object, write_text_atomic

RECORD = "explain.json"


def pick_rows(labels: list[int], per_class: int) -> list[int]:
    """The first ``per_class`` positions of each class, liked first, in split order.

    Raises:
        ValueError: ``per_class`` < 1, or a class has fewer examples than asked for.
    """
    if per_class < 1:
        raise ValueError(f"--per-class: expected at least 1, got {per_class}")
    rows: list[int] = []
    for cls in (1, 0):
        found = [i for i, y in enumerate(labels) if int(y) == cls][:per_class]
        if len(found) < per_class:
            raise ValueError(f"the split holds {len(found)} examples with label {cls}; --per-class asks {per_class}")
        rows += found
    return rows


def explain_run(run_dir: Path, split: str, per_class: int, batch_size: int) -> dict[str, Any]:
    """Explain the picked examples of one run; titles and labels ride along for the report."""
    from petrec.data import prepare
    from petrec.explain import explain_examples
    from petrec.runs import load_run

    run = load_run(run_dir)
    if run.model_cfg.task != "ctr":
        raise ValueError(f"{run_dir}: a {run.model_cfg.task!r} run; this page shows ctr runs")
    data = prepare(run.data)
    rows = pick_rows(list(data.splits[split]["label"]), per_class)
    examples = data.splits[split].select(rows)
    titles = dict(zip(data.items["item_id"], data.items["title"], strict=True))
    found = explain_examples(run, examples, items=data.items, batch_size=batch_size)
    out = []
    for row, example, exp in zip(rows, examples, found, strict=True):
        entry = exp.to_dict()
        entry.update(row=row, label=int(example["label"]), candidate_title=titles.get(exp.item_id, exp.item_id),
                     history_titles=[titles.get(i, i) for i in exp.history_item_ids],
                     history_labels=[int(v) for v in example["history_labels"]])
        out.append(entry)
    cfg = run.model_cfg
    return {"run": str(run_dir), "backbone": cfg.backbone, "method": cfg.method, "scoring": cfg.scoring,
            "behaviour_prior": cfg.behaviour_prior, "prior_fusion": cfg.prior_fusion,
            "split": split, "examples": out}


def _plot(example: dict[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    effects = example["effects"]
    names = [f"{t[:38]} ({'+' if y else '-'})" for t, y in zip(example["history_titles"], example["history_labels"],
                                                               strict=True)]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(names) + 1.2))
    ax.barh(range(len(effects)), effects, color=["tab:green" if e >= 0 else "tab:red" for e in effects])
    ax.set_yticks(range(len(effects)), names, fontsize=8)
    ax.invert_yaxis()  # oldest history item on top
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("effect on the like probability (full history - without the item)")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def write_report(record: dict[str, Any], folder: Path) -> Path:
    """REPORT.md and one bar chart per example, from the record alone."""
    lines = ["# Explanations: worked examples on P1 (`petrec explain`, occlusion)", "",
             f"- command: `{record['command']}`",
             f"- machine: {record['machine_summary']}; git commit {record['git'].get('commit')}",
             f"- when: {record['started']} → {record['finished']}", "",
             "effect = the model's like probability with the full history minus the probability with that one",
             "history item left out (its like / dislike goes with it; a prior's features are recomputed too).",
             "(+) = the user liked the history item, (-) = disliked. Items are listed oldest first.", ""]
    plots = folder / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for r, run in enumerate(record["runs"]):
        prior = f", behaviour prior ({run['prior_fusion']})" if run["behaviour_prior"] else ""
        lines += [f"## {run['backbone']} + {run['method']} ({run['scoring']} scoring{prior})", "",
                  f"run folder: `{run['run']}`, split `{run['split']}`", ""]
        for e in run["examples"]:
            head = (f"### {run['split']} row {e['row']}: \"{e['candidate_title']}\" — true label "
                    f"{'liked' if e['label'] else 'disliked'}, score {e['score']:.3f}")
            lines += [head, ""]
            if e.get("prior") is not None:
                lines += [f"prior logit {e['prior']:+.3f}, language-model part {e['lm']:+.3f} "
                          f"(prior share {e['prior_share']:.2f})", ""]
            lines += ["| rank | history item | liked | effect |", "|---|---|---|---|"]
            for j in e["ranking"]:
                lines.append(f"| {e['ranking'].index(j) + 1} | {e['history_titles'][j]} | "
                             f"{'yes' if e['history_labels'][j] else 'no'} | {e['effects'][j]:+.4f} |")
            name = f"run{r}_row{e['row']}.png"
            _plot(e, plots / name, head.removeprefix("### "))
            lines += ["", f"![{name}](plots/{name})", ""]
    path = folder / "REPORT.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="a ctr run folder (repeatable)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--per-class", type=int, default=2, help="liked and disliked examples per run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/explain")
    parser.add_argument("--report-only", action="store_true", help="rewrite REPORT.md from the existing record")
    args = parser.parse_args(argv)
    folder = Path(args.out)
    if args.report_only:
        record = read_json_object(folder / RECORD, ValueError)
        print(f"wrote {write_report(record, folder)}")
        return 0
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    runs = []
    for run_dir in args.run:
        try:
            runs.append(explain_run(Path(run_dir), args.split, args.per_class, args.batch_size))
        except (ValueError, OSError) as exc:
            print(f"explain_examples: {exc}", file=sys.stderr)
            return 2
        print(f"explained {len(runs[-1]['examples'])} examples of {run_dir}")
    info = machine()
    record = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "started": started, "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": info, "machine_summary": describe_machine(info), "versions": versions(),
              "git": git_state(), "runs": runs}
    folder.mkdir(parents=True, exist_ok=True)
    write_record(folder / RECORD, record)
    print(f"wrote {folder / RECORD} and {write_report(record, folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
