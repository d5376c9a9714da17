"""Suite files: expansion of the matrix, override order, validation, the shipped suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from petrec.bench.suite import PACKAGED_SUITES, SuiteConfig, SuiteError, expand, load_suite
from petrec.config import from_dict

REPO = Path(__file__).resolve().parents[2]
#: The suites of this harness (other areas keep suites of their own format in the same folder).
SUITE_NAMES = ("quick", "ml100k-ctr", "ml100k-ctr-cpu", "efficiency", "efficiency-gpu")
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
