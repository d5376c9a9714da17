"""Benchmark suites: a typed YAML matrix of methods × variants × few-shot sizes × seeds.

A suite file (``benchmarks/suites/<name>.yaml``) keeps the shared training settings in one
place (``defaults``), per-method overrides in ``methods`` (full fine-tuning is just another
method, as in peft's ``method_comparison``), and one or more ``experiments`` (a protocol:
its own overrides, the methods it runs, seeds, few-shot sizes and reference baselines).
:func:`expand` turns it into one :class:`RunSpec` per subprocess run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from petrec.config import ConfigError, from_dict, merge_dicts, read_yaml, to_dict

#: Where a suite kind puts the axis values inside the run config (dotted keys).
SEED_KEYS: dict[str, tuple[str, ...]] = {
    "finetune": ("train.seed", "data.seed"),
    "efficiency": ("seed",),
}
FEW_SHOT_KEY = "data.few_shot_k"
#: What an experiment's ``folds`` sets in each run's config (the data layer's user k-fold protocol).
FOLD_PROTOCOL_KEY, FOLDS_KEY, FOLD_KEY = "data.protocol", "data.kfold_k", "data.kfold_fold"
METHOD_KEYS: dict[str, str] = {"finetune": "model.method", "efficiency": "method"}
OUTPUT_KEYS: dict[str, str] = {"finetune": "train.output_dir", "efficiency": "output_dir"}
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SuiteError(ConfigError):
    """A suite file is malformed; the message names the file and the key."""


@dataclass
class GoalConfig:
    """One target the report checks, e.g. LoRA peak memory ≤ 0.45× full at the BERT-large shape."""

    method: str
    """Method the goal is about."""
    quantity: Literal["memory_ratio", "train_sps_ratio", "infer_sps_ratio", "metric_mean", "metric_minus_full"]
    """Summary column checked (ratios are to full fine-tuning in the same table cell)."""
    op: Literal["<=", ">="]
    """Comparison."""
    value: float
    """Threshold."""
    variant: str | None = None
    """Variant the goal applies to; None = every variant."""
    few_shot_k: int | str | None = None
    """Few-shot size (``256`` or ``full``); None = every size."""
    label: str = ""
    """How the report names the goal."""

    def __post_init__(self) -> None:
        if self.few_shot_k is not None:
            self.few_shot_k = str(self.few_shot_k)
            if self.few_shot_k != "full" and not self.few_shot_k.isdigit():
                raise ValueError(f"goal few_shot_k must be a positive integer or 'full', got {self.few_shot_k!r}")
        sign = "≤" if self.op == "<=" else "≥"
        self.label = self.label or f"{self.method} {self.quantity} {sign} {self.value:g}"


@dataclass
class AblationConfig:
    """A paired comparison the report computes: a method's runs minus the same seeds of another row.

    E.g. ``{method: lora, against: prior-collab, variant: id-fused}``: what the language model adds to
    the mix it is part of, seed by seed (both rows of one seed share the data sample and split).
    """

    method: str
    """The row with the part under test (a method or baseline name)."""
    against: str
    """The row without it (a method or baseline name), in the same table cell."""
    variant: str | None = None
    """Variant the comparison applies to; None = every variant."""
    label: str = ""
    """How the report names it (default: ``method − against``)."""

    def __post_init__(self) -> None:
        if self.method == self.against:
            raise ValueError(f"ablation {self.method!r}: 'against' must name another row")
        self.label = self.label or f"{self.method} − {self.against}"


@dataclass
class ExperimentConfig:
    """One protocol inside a suite (one or more report tables)."""

    name: str
    """Short identifier (``P1``, ``E1``); part of every run id."""
    title: str = ""
    """Human title of the report section (defaults to ``name``)."""
    table: str | None = None
    """Report section this experiment's runs go to; experiments sharing it share tables (default: ``name``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Run-config values for every run of this experiment (merged over the suite ``defaults``)."""
    methods: list[str] | None = None
    """Methods to run (names in the suite's ``methods``); None = all of them."""
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method run-config values that apply in this experiment only."""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named extra axis (backbone, model shape): name → run-config values; empty = one variant."""
    few_shot_k: list[int | None] = field(default_factory=lambda: [None])
    """Training-set sizes (``data.few_shot_k``); None = the full training split."""
    seeds: list[int] = field(default_factory=lambda: [1])
    """Seeds; each one sets the run's training and sampling seeds."""
    folds: int | None = None
    """User k-fold cross-validation: None (default) runs the experiment's own split once; an
    integer ≥ 2 repeats every (method, variant, k, seed) run, baselines included, once per fold
    ``f`` = 0 … folds−1 with ``data.protocol: kfold``, ``data.kfold_k: folds`` and
    ``data.kfold_fold: f`` (users of fold f are test, of f+1 mod folds valid, the rest train;
    :func:`petrec.data.splits.kfold_assign`). ``data.seed`` (the run's seed) draws the user
    partition, so every method and baseline of one seed sees the same folds, and several seeds
    are repeated k-fold. Run ids gain ``__f<fold>`` before the seed; the report pools the
    folds × seeds runs of a cell into one mean and 95% interval. The experiment's data config
    must leave ``protocol`` unset or ``kfold`` and ``kfold_fold`` unset (``finetune`` suites only)."""
    metric: str | None = None
    """Test metric of the tables and plots (``auc``, ``rmse`` ...); None = no task metric (E1 shapes)."""
    baselines: list[str] = field(default_factory=list)
    """Reference statistics baselines computed in-process (names in :data:`petrec.bench.baselines.BASELINES`)."""
    note: str = ""
    """Free text printed under the section title (what was cut for CPU time, labels)."""
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    """Published numbers shown beside the runs: label → {few-shot size or ``full``: test metric}."""
    goals: list[GoalConfig] = field(default_factory=list)
    """Targets the report checks and states as met / not met (never test asserts)."""
    ablations: list[AblationConfig] = field(default_factory=list)
    """Paired per-seed differences the report states (:func:`petrec.bench.findings.ablation_lines`)."""

    def __post_init__(self) -> None:
        if not self.name or _ID_SAFE.search(self.name):
            raise ValueError(f"experiment name {self.name!r} must be non-empty and use only letters, digits, . _ -")
        if not self.seeds:
            raise ValueError(f"experiment {self.name}: seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"experiment {self.name}: seeds {self.seeds} repeat a value")
        if not self.few_shot_k:
            raise ValueError(f"experiment {self.name}: few_shot_k must list at least one size (null = full)")
        for k in self.few_shot_k:
            if k is not None and k < 1:
                raise ValueError(f"experiment {self.name}: few_shot_k values must be ≥ 1 or null, got {k}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int)
                                       or self.folds < 2):
            raise ValueError(f"experiment {self.name}: folds must be an integer ≥ 2 (user folds of the kfold "
                             f"protocol) or null, got {self.folds!r}")
        for name in self.variants:
            if not name or _ID_SAFE.search(name):
                raise ValueError(f"experiment {self.name}: variant name {name!r} must use only letters, digits, . _ -")
        self.variants = {name: dict(v or {}) for name, v in self.variants.items()}
        self.references = {label: {str(k): float(v) for k, v in (vals or {}).items()}
                           for label, vals in self.references.items()}
        self.method_overrides = {name: dict(v or {}) for name, v in self.method_overrides.items()}
        self.title = self.title or self.name
        self.table = self.table or self.name


@dataclass
class SuiteConfig:
    """A whole benchmark suite, as read from one YAML file."""

    name: str
    """Suite name; results go to ``benchmarks/results/<name>/``."""
    description: str = ""
    """What the suite measures, printed at the top of REPORT.md."""
    kind: Literal["finetune", "efficiency"] = "finetune"
    """finetune: each run is ``recipes/finetune.py``; efficiency: each run is ``petrec.bench.efficiency``."""
    command: list[str] | None = None
    """Run command prefix (``{python}`` and ``{repo}`` are substituted); None = the kind's default."""
    timeout_s: float = 3600.0
    """Wall-clock limit of one run; a run past it is killed and recorded as failed."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Shared run-config values (the one place for common training settings)."""
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Method name → run-config overrides (e.g. its learning rate or ``model.method_kwargs``)."""
    experiments: list[ExperimentConfig] = field(default_factory=list)
    """The protocols the suite runs."""

    def __post_init__(self) -> None:
        if not self.name or _ID_SAFE.search(self.name):
            raise ValueError(f"suite name {self.name!r} must be non-empty and use only letters, digits, . _ -")
        if not self.methods:
            raise ValueError("a suite needs at least one entry under 'methods'")
        self.methods = {name: dict(v or {}) for name, v in self.methods.items()}
        if not self.experiments:
            raise ValueError("a suite needs at least one entry under 'experiments'")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.command is not None and not self.command:
            raise ValueError("command must be null or a non-empty list")
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names repeat: {names}")
        for name in self.methods:
            if not name or _ID_SAFE.search(name):
                raise ValueError(f"method name {name!r} must use only letters, digits, . _ -")
        for exp in self.experiments:
            unknown = sorted(set(exp.methods or []) - set(self.methods))
            unknown += sorted(set(exp.method_overrides) - set(self.methods))
            if unknown:
                raise ValueError(
                    f"experiment {exp.name}: method(s) {unknown} are not under 'methods' "
                    f"(known: {sorted(self.methods)})"
                )
            if exp.folds is not None:
                _check_folds(self, exp)
            rows = set(exp.methods if exp.methods is not None else self.methods) | set(exp.baselines)
            for ablation in exp.ablations:
                bad = sorted({ablation.method, ablation.against} - rows)
                if bad:
                    raise ValueError(f"experiment {exp.name}: ablation '{ablation.label}' names {bad}, not among its "
                                     f"methods or baselines ({sorted(rows)})")
                if ablation.variant is not None and exp.variants and ablation.variant not in exp.variants:
                    raise ValueError(f"experiment {exp.name}: ablation '{ablation.label}' names variant "
                                     f"{ablation.variant!r}; known: {sorted(exp.variants)}")
            if exp.baselines:
                from petrec.bench.baselines import BASELINES

                bad = sorted(set(exp.baselines) - set(BASELINES))
                if bad:
                    raise ValueError(f"experiment {exp.name}: unknown baseline(s) {bad}; known: {sorted(BASELINES)}")


def _dotted(cfg: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_folds(suite: SuiteConfig, exp: ExperimentConfig) -> None:
    """Raise one error naming the experiment when its runs' data config contradicts ``folds``."""
    if suite.kind != "finetune":
        raise ValueError(f"experiment {exp.name}: folds needs a finetune suite (the kfold protocol of the data "
                         f"layer); this suite's kind is {suite.kind!r}")
    methods = exp.methods if exp.methods is not None else list(suite.methods)
    for variant, vcfg in (exp.variants or {"default": {}}).items():
        base = merge_dicts(merge_dicts(suite.defaults, exp.overrides), vcfg)
        sources = [("the experiment", base)] + [
            (f"method {m}", merge_dicts(merge_dicts(base, suite.methods[m]), exp.method_overrides.get(m, {})))
            for m in methods]
        for who, cfg in sources:
            where = f"{who}, variant {variant}" if exp.variants else who
            found, protocol = _dotted(cfg, FOLD_PROTOCOL_KEY)
            if found and protocol != "kfold":
                raise ValueError(f"experiment {exp.name}: folds: {exp.folds} runs the kfold protocol (user folds), "
                                 f"but {where} sets data.protocol: {protocol!r}; set it to kfold or leave it out")
            found, k = _dotted(cfg, FOLDS_KEY)
            if found and k != exp.folds:
                raise ValueError(f"experiment {exp.name}: folds: {exp.folds} but {where} sets data.kfold_k: {k!r}; "
                                 "leave data.kfold_k out (folds sets it)")
            if _dotted(cfg, FOLD_KEY)[0]:
                raise ValueError(f"experiment {exp.name}: folds: {exp.folds} runs every fold, but {where} sets "
                                 "data.kfold_fold; leave it out")


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: exactly what one subprocess (or in-process baseline) runs."""

    run_id: str
    """Unique, file-name-safe id (``P1__default__lora__k256__s1``)."""
    suite: str
    """Suite name."""
    kind: str
    """``finetune``, ``efficiency`` or ``baseline``."""
    experiment: str
    """Experiment name."""
    table: str
    """Report section."""
    method: str
    """Method (or baseline) name."""
    variant: str
    """Variant name (``default`` when the experiment has none)."""
    few_shot_k: int | None
    """Training-set size; None = full."""
    seed: int
    """Seed."""
    config: dict[str, Any]
    """Run-config values passed to the run (nested sections)."""
    fold: int | None = None
    """User fold tested by this run (``data.kfold_fold``) when its experiment sets ``folds``; None otherwise."""

    @property
    def config_hash(self) -> str:
        """SHA-256 prefix of the canonical JSON of ``kind`` + ``config``: a finished run with another hash is stale."""
        blob = json.dumps({"kind": self.kind, "config": self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    root = node
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return merge_dicts(cfg, root)


def make_run_id(experiment: str, variant: str, method: str, k: int | None, seed: int,
                fold: int | None = None) -> str:
    """The run id of one matrix cell (file-name safe); a k-fold run has ``__f<fold>`` before the seed."""
    parts = [experiment, variant, method, "kfull" if k is None else f"k{k}",
             *([] if fold is None else [f"f{fold}"]), f"s{seed}"]
    return "__".join(_ID_SAFE.sub("-", p) for p in parts)


def _with_fold(cfg: dict[str, Any], folds: int | None, fold: int | None) -> dict[str, Any]:
    """``cfg`` set to the kfold protocol, ``folds`` user folds, testing ``fold`` (unchanged when no folds)."""
    if folds is None or fold is None:
        return cfg
    for key, value in ((FOLD_PROTOCOL_KEY, "kfold"), (FOLDS_KEY, folds), (FOLD_KEY, fold)):
        cfg = _set_dotted(cfg, key, value)
    return cfg


def expand(suite: SuiteConfig) -> list[RunSpec]:
    """All runs of a suite, baselines first within each experiment, in a stable order.

    Merge order of one run's config: suite ``defaults`` ← experiment ``overrides`` ← variant
    ← suite ``methods[m]`` ← experiment ``method_overrides[m]`` ← axis values (method name,
    few-shot size, seeds, and with ``folds`` the kfold protocol and fold). Folds are the innermost
    axis: all folds of one seed, each fold's baselines first.
    """
    runs: list[RunSpec] = []
    for exp in suite.experiments:
        variants = exp.variants or {"default": {}}
        methods = exp.methods if exp.methods is not None else list(suite.methods)
        folds: list[int | None] = [None] if exp.folds is None else list(range(exp.folds))
        for variant, vcfg in variants.items():
            for k in exp.few_shot_k:
                for seed in exp.seeds:
                    for fold in folds:
                        base = merge_dicts(merge_dicts(suite.defaults, exp.overrides), vcfg)
                        for name in exp.baselines:
                            cfg = _set_dotted(base, FEW_SHOT_KEY, k)
                            cfg = _set_dotted(cfg, "data.seed", seed)
                            cfg = _with_fold(cfg, exp.folds, fold)
                            runs.append(RunSpec(make_run_id(exp.name, variant, name, k, seed, fold), suite.name,
                                                "baseline", exp.name, exp.table or exp.name, name, variant, k,
                                                seed, cfg, fold))
                        for method in methods:
                            cfg = merge_dicts(base, suite.methods[method])
                            cfg = merge_dicts(cfg, exp.method_overrides.get(method, {}))
                            cfg = _set_dotted(cfg, METHOD_KEYS[suite.kind], method)
                            if suite.kind == "finetune":
                                cfg = _set_dotted(cfg, FEW_SHOT_KEY, k)
                            for key in SEED_KEYS[suite.kind]:
                                cfg = _set_dotted(cfg, key, seed)
                            cfg = _with_fold(cfg, exp.folds, fold)
                            runs.append(RunSpec(make_run_id(exp.name, variant, method, k, seed, fold), suite.name,
                                                suite.kind, exp.name, exp.table or exp.name, method, variant, k,
                                                seed, cfg, fold))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SuiteError(f"suite {suite.name}: run ids repeat ({dup[:3]}); a baseline and a method share a name?")
    return runs


#: Folder of the suites shipped inside the package (the embedded default lives here).
PACKAGED_SUITES = Path(__file__).resolve().parent / "suites"
DEFAULT_SUITE = "quick"


def resolve_suite_path(name_or_path: str | None) -> Path:
    """Map a suite name (``quick``) or a YAML path to the file to read.

    Names are looked up in ``benchmarks/suites/`` of a source checkout first, then in the
    suites packaged with petrec (so ``petrec bench`` works on a fresh install).

    Raises:
        SuiteError: No such file.
    """
    name_or_path = name_or_path or DEFAULT_SUITE
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SuiteError(f"suite file {str(path)!r} not found")
        return path
    checkout = Path(__file__).resolve().parents[2] / "benchmarks" / "suites" / f"{name_or_path}.yaml"
    for candidate in (checkout, PACKAGED_SUITES / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in (checkout.parent, PACKAGED_SUITES) if d.is_dir() for p in d.glob("*.yaml")})
    raise SuiteError(f"unknown suite {name_or_path!r}: not a file and not one of {known}")


def load_suite(name_or_path: str | None = None) -> SuiteConfig:
    """Read and validate a suite (a name or a YAML path); errors name the file and key."""
    path = resolve_suite_path(name_or_path)
    try:
        return from_dict(SuiteConfig, read_yaml(path))
    except ConfigError as exc:
        raise SuiteError(f"{path}: {exc}") from None


def suite_to_dict(suite: SuiteConfig) -> dict[str, Any]:
    """Plain-data form (written next to the results as ``suite.yaml``)."""
    return to_dict(suite)
