"""ID-based sequence baselines (gru4rec-ctr, caser-ctr, sasrec-ctr) through run_baseline and the runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from petrec.bench.baselines import BASELINES, BaselineError, run_baseline
from petrec.bench.id_baselines import ID_BASELINES
from petrec.bench.runner import run_suite, train_info_from
from petrec.bench.suite import SuiteConfig, expand, load_suite
from petrec.config import ConfigError, from_dict

#: A tiny P1-like table: the synthetic world under the TALLRec protocol.
SYNTH = {"dataset": "synthetic", "task": "ctr", "protocol": "tallrec", "synthetic_users": 60,
         "synthetic_items": 40, "few_shot_k": 64, "seed": 1}
#: A short schedule so each run takes about a second.
FAST = {"hidden": 16, "epochs": 3, "min_steps": 1, "eval_every_steps": 1, "early_stopping_patience": 0}


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == before  # the baseline restores the thread count it changed


def test_sasrec_ctr_returns_the_record_fields_the_runner_expects() -> None:
    out = run_baseline("sasrec-ctr", {"data": SYNTH, "id_ctr": FAST})
    for split in ("valid", "test"):
        # the record's ctr metrics, plus the debiased ones and groups a model run gets (petrec.debias)
        assert {"auc", "logloss", "accuracy", "f1", "ips_auc", "snips_auc", "tail/auc"} <= set(out[split])
        assert 0.0 <= out[split]["auc"] <= 1.0
    assert "_scores" not in out
    assert out["valid_best"]["metric"] == "auc"
    assert out["valid_best"]["value"] == pytest.approx(out["valid"]["auc"])  # the best weights were tested
    assert out["train_examples"] == 64  # the run's few-shot sample, not the whole block
    assert out["steps"] == 3 and 0 <= out["valid_best"]["step"] <= 3  # 64 examples / batch 64 × 3 epochs
    assert out["trainable_params"] == out["total_params"] > 0 and out["trainable_percent"] == 100.0
    assert out["hyperparameters"]["hidden"] == 16 and out["hyperparameters"]["history_len"] == 10
    assert out["labels"][0].startswith("baseline: SASRec") and "lr=0.001" in out["labels"][0]
    info = train_info_from(out, None, None)
    assert info["trainable_params"] == out["trainable_params"] and info["steps"] == 3
    assert info["steps_to_best"] == out["valid_best"]["step"] and info["labels"] == out["labels"]
    again = run_baseline("sasrec-ctr", {"data": SYNTH, "id_ctr": FAST})
    assert again["test"] == out["test"]  # same seed, same numbers
    other = run_baseline("sasrec-ctr", {"data": {**SYNTH, "seed": 2}, "id_ctr": FAST})
    assert other["test"] != out["test"]


def test_runner_records_an_id_baseline(tmp_path: Path) -> None:
    suite = from_dict(SuiteConfig, {
        "name": "idctr", "methods": {"full": {}},
        "defaults": {"data": {k: v for k, v in SYNTH.items() if k not in ("few_shot_k", "seed")}, "id_ctr": FAST},
        "experiments": [{"name": "P1", "few_shot_k": [32], "seeds": [3], "metric": "auc",
                         "baselines": ["gru4rec-ctr", "caser-ctr"]}],
    })
    records = run_suite(suite, tmp_path / "res", select=lambda s: s.kind == "baseline", progress=lambda s: None)
    assert [r["run_info"]["run_id"] for r in records] == ["P1__default__gru4rec-ctr__k32__s3",
                                                         "P1__default__caser-ctr__k32__s3"]
    for rec in records:
        assert rec["run_info"]["status"] == "ok", rec["run_info"]["error"]
        assert rec["run_info"]["kind"] == "baseline"
        assert rec["run_info"]["config"]["data"]["few_shot_k"] == 32 and rec["run_info"]["config"]["data"]["seed"] == 3
        assert 0.0 <= rec["metrics"]["test"]["auc"] <= 1.0 and "logloss" in rec["metrics"]["test"]
        assert rec["metrics"]["valid_best"]["metric"] == "auc"
        assert rec["train_info"]["trainable_params"] > 0 and rec["train_info"]["steps"] == 3
        assert rec["train_info"]["wall_seconds"] > 0


def test_bad_settings_and_one_class_data_fail_clearly() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'id_ctr\.hiden'"):
        run_baseline("gru4rec-ctr", {"data": SYNTH, "id_ctr": {"hiden": 8}})
    with pytest.raises(ConfigError, match="batch_size must be ≥ 1"):
        run_baseline("gru4rec-ctr", {"data": SYNTH, "id_ctr": {"batch_size": 0}})
    with pytest.raises(BaselineError, match="gru4rec-ctr needs both classes; the 1 training examples"):
        run_baseline("gru4rec-ctr", {"data": {**SYNTH, "few_shot_k": 1}, "id_ctr": FAST})
    with pytest.raises(BaselineError, match=r"needs data\.task='ctr'"):
        run_baseline("caser-ctr", {"data": {**SYNTH, "task": "rating"}})


def test_ml100k_suite_lists_the_id_baselines_in_every_experiment() -> None:
    suite = load_suite("ml100k-ctr")
    assert set(ID_BASELINES) <= set(BASELINES)
    for exp in suite.experiments:
        assert set(ID_BASELINES) <= set(exp.baselines), exp.name
    specs = [s for s in expand(suite) if s.method in ID_BASELINES]
    assert len(specs) == 3 * (3 + 3 + 3 + 1 + 1)  # k=256/64/16 × 3 seeds, P1-full, P2
    k256 = sorted((s.seed, s.config["data"]["few_shot_k"], s.config["data"]["seed"]) for s in specs
                  if s.experiment == "P1-k256" and s.method == "caser-ctr")
    assert k256 == [(1, 256, 1), (2, 256, 2), (3, 256, 3)]


@pytest.mark.data
def test_p1_k256_gru4rec_ctr_on_movielens(shared_data_dir: Path) -> None:
    data = {"dataset": "ml-100k", "protocol": "tallrec", "task": "ctr", "template": "tallrec",
            "data_dir": str(shared_data_dir), "few_shot_k": 256, "seed": 1}
    out = run_baseline("gru4rec-ctr", {"data": data})
    assert out["train_examples"] == 256
    assert 0.6 < out["test"]["auc"] < 0.85, out["test"]  # measured 0.7356 (history-share: 0.726)


def test_collab_id_is_the_recipes_id_model_fitted_outside_the_k_examples() -> None:
    from petrec.data import DataConfig, prepare

    data = {**SYNTH, "synthetic_users": 200, "synthetic_items": 60}
    out = run_baseline("collab-id", {"data": data})
    block = len(prepare(DataConfig(**{**data, "few_shot_k": None})).splits["train"])
    assert out["train_examples"] == block - 64  # the training block minus the language model's k
    assert 0.0 <= out["test"]["auc"] <= 1.0 and out["valid_best"]["value"] == out["valid"]["auc"]
    assert set(out["id_heldout"]) >= {"auc"} and out["labels"][0].startswith("baseline: the ID model")
    info = train_info_from({**out, "collab": {"fit": "heldout"}}, None, None)
    assert info["collab"] == {"fit": "heldout"}  # the runner keeps a run's collab block
    assert "residual_offset" not in info
    offset = {"collab_weight": 0.1, "bias": -0.2}  # ... and a residual run's offset
    assert train_info_from({**out, "residual_offset": offset}, None, None)["residual_offset"] == offset
    with pytest.raises(BaselineError, match=r"collab-id: .*expected at least 100"):
        run_baseline("collab-id", {"data": {**SYNTH, "synthetic_users": 20}})
    # collab_fit: train (the run's own setting) fits on the training split itself
    own = run_baseline("collab-id", {"data": {**data, "few_shot_k": 160}, "collab_fit": "train"})
    assert own["train_examples"] == 160
    with pytest.raises(BaselineError, match=r"collab_fit: expected 'heldout' or 'train', got 'all'"):
        run_baseline("collab-id", {"data": data, "collab_fit": "all"})


def test_prior_collab_mixes_prior_features_and_collab_id_on_validation() -> None:
    from petrec.fusion import fit_fusion

    data = {**SYNTH, "synthetic_users": 200, "synthetic_items": 60}
    mixed = run_baseline("prior-collab", {"data": data, "debias": {"enabled": False}})
    prior = run_baseline("prior-features", {"data": data, "debias": {"enabled": False}})
    ids = run_baseline("collab-id", {"data": data, "debias": {"enabled": False}})
    assert mixed["trainable_params"] == prior["trainable_params"] + ids["trainable_params"] + 2
    w, b = mixed["valid"]["fusion_collab_weight"], mixed["valid"]["fusion_bias"]
    assert np.isfinite([w, b]).all()
    # the validation mix can only help the in-sample validation fit over the prior alone
    assert mixed["valid"]["logloss"] <= prior["valid"]["logloss"] + 1e-9
    assert "fusion_collab_weight" not in mixed["test"]
    # test scores = prior + w * ID logit + b with validation's (w, b), recomputed from the two rows' scores
    from sklearn.metrics import roc_auc_score

    import petrec.bench.baselines as B
    from petrec.data import DataConfig, prepare

    cfg = DataConfig(**data)
    splits = prepare(cfg).splits
    block = prepare(DataConfig(**{**data, "few_shot_k": None})).splits["train"]
    p, i = B._prior_features(splits, block)[B.SCORES_KEY], B._collab_id(splits, cfg, prepare)[B.SCORES_KEY]
    y = np.asarray(splits["valid"]["label"])
    assert (w, b) == pytest.approx(fit_fusion(i["valid"], p["valid"], y, "ctr"))
    auc = roc_auc_score(np.asarray(splits["test"]["label"]), p["test"] + w * i["test"] + b)
    assert mixed["test"]["auc"] == pytest.approx(auc, abs=1e-9)
