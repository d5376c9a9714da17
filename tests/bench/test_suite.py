"""Suite files: expansion of the matrix, override order, validation, the shipped suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from petrec.bench.suite import PACKAGED_SUITES, SuiteConfig, SuiteError, expand, load_suite
from petrec.config import from_dict

REPO = Path(__file__).resolve().parents[2]
#: The suites of this harness (other areas keep suites of their own format in the same folder).
SUITE_NAMES = ("quick", "ml100k-ctr", "ml100k-ctr-cpu", "efficiency", "efficiency-gpu", "kfold-quick")
SUITES = [REPO / "benchmarks" / "suites" / f"{name}.yaml" for name in SUITE_NAMES]


def _suite(**exp: object) -> SuiteConfig:
    return from_dict(SuiteConfig, {
        "name": "t",
        "defaults": {"train": {"lr": 1.0, "epochs": 2}, "data": {"dataset": "ml-100k"}},
        "methods": {"full": {"train": {"lr": 2.0}}, "lora": {"model": {"method_kwargs": {"r": 8}}}},
        "experiments": [{"name": "P1", **exp}],
    })


def test_expand_matrix_order_and_override_precedence() -> None:
    suite = _suite(few_shot_k=[16, None], seeds=[1, 2], overrides={"train": {"epochs": 5}},
                   variants={"small": {"max_length": 64}}, baselines=["history-share"],
                   method_overrides={"lora": {"train": {"lr": 3.0}}})
    runs = expand(suite)
    assert [r.run_id for r in runs] == [
        f"P1__small__{m}__{k}__s{s}" for k in ("k16", "kfull") for s in (1, 2)
        for m in ("history-share", "full", "lora")
    ]
    full = next(r for r in runs if r.run_id == "P1__small__full__k16__s2")
    assert full.config == {"train": {"lr": 2.0, "epochs": 5, "seed": 2}, "data": {"dataset": "ml-100k",
                           "few_shot_k": 16, "seed": 2}, "max_length": 64, "model": {"method": "full"}}
    lora = next(r for r in runs if r.run_id == "P1__small__lora__kfull__s1")
    assert lora.config["train"]["lr"] == 3.0 and lora.config["model"] == {"method_kwargs": {"r": 8}, "method": "lora"}
    assert lora.config["data"]["few_shot_k"] is None
    base = runs[0]
    assert base.kind == "baseline" and base.config["data"] == {"dataset": "ml-100k", "few_shot_k": 16, "seed": 1}
    assert len({r.config_hash for r in runs}) == len(runs)


def test_efficiency_kind_uses_top_level_method_and_seed() -> None:
    suite = from_dict(SuiteConfig, {"name": "e", "kind": "efficiency", "defaults": {"steps": 3},
                                    "methods": {"lora": {}}, "experiments": [{"name": "E1"}]})
    (run,) = expand(suite)
    assert run.config == {"steps": 3, "method": "lora", "seed": 1}


@pytest.mark.parametrize(("bad", "message"), [
    ({"methods": ["dora"]}, "method(s) ['dora'] are not under 'methods'"),
    ({"seeds": [1, 1]}, "repeat"),
    ({"few_shot_k": [0]}, "few_shot_k values must be ≥ 1"),
    ({"baselines": ["magic"]}, "unknown baseline(s) ['magic']"),
    ({"name": "a b"}, "letters, digits"),
    ({"colour": "red"}, "unknown key 'experiments[0].colour'"),
    ({"folds": 1}, "experiment P1: folds must be an integer ≥ 2"),
    ({"folds": 5, "overrides": {"data": {"protocol": "tallrec"}}},
     "experiment P1: folds: 5 runs the kfold protocol (user folds), but the experiment sets data.protocol: 'tallrec'"),
    ({"folds": 5, "method_overrides": {"lora": {"data": {"kfold_fold": 2}}}},
     "experiment P1: folds: 5 runs every fold, but method lora sets data.kfold_fold"),
    ({"folds": 5, "overrides": {"data": {"kfold_k": 3}}}, "experiment P1: folds: 5 but the experiment sets data.kfold_k: 3"),
])
def test_bad_suites_fail_with_one_clear_error(bad: dict, message: str, tmp_path: Path) -> None:
    import yaml

    data = {"name": "t", "methods": {"full": {}, "lora": {}}, "experiments": [{"name": "P1", **bad}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_unknown_suite_name_lists_known() -> None:
    with pytest.raises(SuiteError, match=r"unknown suite 'nope'.*quick"):
        load_suite("nope")


def test_shipped_suites_load_and_quick_is_the_packaged_default() -> None:
    for path in SUITES:
        suite = load_suite(str(path))
        assert suite.name == path.stem
        assert expand(suite)
    assert (PACKAGED_SUITES / "quick.yaml").read_text() == (REPO / "benchmarks/suites/quick.yaml").read_text()
    quick = load_suite(None)
    assert quick.name == "quick"
    methods = {r.method for r in expand(quick) if r.kind == "finetune"}
    assert methods == {"full", "head", "bitfit", "lora", "dora", "ia3", "prompt", "prefix", "adapter", "qlora"}


def test_shipped_suite_methods_are_registered() -> None:
    from petrec.methods.registry import METHODS

    for path in SUITES:
        suite = load_suite(str(path))
        assert set(suite.methods) <= set(METHODS), path


def test_cpu_sized_ml100k_suite_differs_from_the_gpu_one_only_in_training_length() -> None:
    # ml100k-ctr-cpu is the same P1 k=256 protocol cut to fit a 2-core CPU: same data, model,
    # methods and per-method settings; only the schedule (epochs, validation points) is shorter,
    # and P2 samples its training and evaluation splits further.
    gpu, cpu = load_suite("ml100k-ctr"), load_suite("ml100k-ctr-cpu")
    assert cpu.methods == gpu.methods
    assert {k: v for k, v in cpu.defaults.items() if k != "train"} == {
        k: v for k, v in gpu.defaults.items() if k != "train"}
    changed = {k for k in gpu.defaults["train"] if cpu.defaults["train"].get(k) != gpu.defaults["train"][k]}
    assert changed == {"epochs", "eval_every_steps", "early_stopping_patience"}
    gpu_exps = {e.name: e for e in gpu.experiments}
    for exp in cpu.experiments:
        twin = gpu_exps[exp.name]
        assert (exp.few_shot_k, exp.seeds, exp.baselines, sorted(exp.methods or [])) == (
            twin.few_shot_k, twin.seeds, twin.baselines, sorted(twin.methods or [])), exp.name
        # Same data, except that the CPU's P2 samples fewer training and evaluation examples.
        sampled = {"max_train_examples", "max_eval_examples"} if exp.name == "P2" else set()
        cpu_data, gpu_data = (
            {k: v for k, v in (e.overrides.get("data") or {}).items() if k not in sampled} for e in (exp, twin))
        assert cpu_data == gpu_data, exp.name
    runs = [r for r in expand(cpu) if r.kind == "finetune" and r.experiment == "P1-k256"]
    assert len(runs) == 30 and {r.method for r in runs} == set(gpu.methods)


def test_folds_repeat_every_run_per_fold_with_the_kfold_data_config() -> None:
    from petrec.data import DataConfig

    suite = _suite(folds=3, seeds=[1, 2], few_shot_k=[16], baselines=["history-share"])
    runs = expand(suite)
    assert [r.run_id for r in runs] == [
        f"P1__default__{m}__k16__f{f}__s{s}" for s in (1, 2) for f in range(3)
        for m in ("history-share", "full", "lora")
    ]
    for r in runs:
        assert r.config["data"] == {"dataset": "ml-100k", "few_shot_k": 16, "seed": r.seed,
                                    "protocol": "kfold", "kfold_k": 3, "kfold_fold": r.fold}
        DataConfig(**r.config["data"])  # a valid data config for the recipe and the baselines
    assert [r.fold for r in runs if r.method == "history-share"] == [0, 1, 2, 0, 1, 2]
    lora = next(r for r in runs if r.run_id == "P1__default__lora__k16__f2__s1")
    assert lora.kind == "finetune" and lora.config["train"] == {"lr": 1.0, "epochs": 2, "seed": 1}
    assert len({r.config_hash for r in runs}) == len(runs)


def test_no_folds_leaves_ids_and_configs_unchanged() -> None:
    from petrec.bench.suite import make_run_id

    runs = expand(_suite(seeds=[1, 2], baselines=["history-share"]))
    assert all(r.fold is None for r in runs)
    assert [r.run_id for r in runs] == [make_run_id("P1", "default", m, None, s)
                                        for s in (1, 2) for m in ("history-share", "full", "lora")]
    assert runs[0].run_id == "P1__default__history-share__kfull__s1"
    assert all(set(r.config["data"]) == {"dataset", "few_shot_k", "seed"} for r in runs)
    assert make_run_id("P1", "default", "lora", 256, 3, fold=4) == "P1__default__lora__k256__f4__s3"


def test_committed_results_keep_their_run_ids_and_config_hashes() -> None:
    # The records in benchmarks/results/ are resumed by id and config hash: a suite without
    # folds must expand to exactly the ids and hashes they were written under.
    import json

    from petrec.config import read_yaml

    checked = 0
    for folder in sorted((REPO / "benchmarks" / "results").glob("*/suite.yaml")):
        planned = {r.run_id: r.config_hash for r in expand(from_dict(SuiteConfig, read_yaml(folder)))}
        for path in sorted((folder.parent / "runs").glob("*.json")):
            info = json.loads(path.read_text())["run_info"]
            assert planned.get(info["run_id"]) == info["config_hash"], path
            checked += 1
    assert checked > 100


def test_folds_accept_an_explicit_kfold_protocol_and_reject_other_kinds(tmp_path: Path) -> None:
    suite = _suite(folds=2, overrides={"data": {"protocol": "kfold", "kfold_k": 2}})
    assert {r.fold for r in expand(suite)} == {0, 1}
    with pytest.raises(ValueError, match="experiment E1: folds needs a finetune suite"):
        from_dict(SuiteConfig, {"name": "e", "kind": "efficiency", "methods": {"lora": {}},
                                "experiments": [{"name": "E1", "folds": 3}]})
    with pytest.raises(ValueError, match=r"experiment P1: .*method full, variant v sets data.protocol: 'loo'"):
        _suite(folds=3, variants={"v": {}}, method_overrides={"full": {"data": {"protocol": "loo"}}})


def test_kfold_quick_suite_runs_five_folds_with_baselines() -> None:
    suite = load_suite(str(REPO / "benchmarks" / "suites" / "kfold-quick.yaml"))
    runs = expand(suite)
    assert {r.fold for r in runs} == set(range(5))
    assert all(r.config["data"]["protocol"] == "kfold" and r.config["data"]["kfold_k"] == 5 for r in runs)
    assert {r.method for r in runs if r.kind == "baseline"} == {"history-share", "item-rate", "logreg-counts"}
    assert runs[0].run_id == "CV5__default__history-share__k256__f0__s1"
