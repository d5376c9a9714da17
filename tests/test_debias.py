"""Debiased evaluation wiring: exposure counts from the training split, the per-example columns,
and the keys the evaluators add (checked against direct computations)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from petrec.collate import BehaviourCollator, ItemCollator
from petrec.data import DataConfig, prepare
from petrec.data.exposure import annotate_splits
from petrec.debias import (
    DEBIAS_COLUMNS,
    GROUPS,
    DebiasConfig,
    ExposureStats,
    weighted_loss,
)
from petrec.evaluation import evaluate_ctr, make_next_item_eval
from petrec.metrics import debias as D
from petrec.train import TrainConfig, make_accelerator, train


def test_counts_weights_groups_and_columns() -> None:
    train = {"user_id": ["a", "a", "a", "b", "c"], "item_id": ["x", "x", "y", "x", "z"], "label": [1, 1, 0, 1, 0]}
    cfg = DebiasConfig(cold_user_max=1, cold_item_max=1, head_share=0.5, torso_share=0.3)
    stats = ExposureStats.fit(train, ["x", "y", "z", "w"], cfg)
    assert stats.item_counts.tolist() == [3, 1, 1, 0] and stats.user_counts == {"a": 3, "b": 1, "c": 1}
    assert stats.weights == pytest.approx(D.ips_weights(D.popularity_propensities([3, 1, 1, 0])))
    assert stats.strata.tolist() == [0, 1, 2, 2]  # x starts at 0%, y at 60%, z at 80%
    cols = stats.columns({"user_id": ["a", "b", "new"], "item_id": ["y", "w", "x"]})
    assert list(cols) == list(DEBIAS_COLUMNS)
    assert cols["ips_weight"] == pytest.approx(stats.weights[[1, 3, 0]].tolist())
    assert cols["pop_stratum"] == [1, 2, 0]
    assert cols["cold_user"] == [0, 1, 1] and cols["cold_item"] == [1, 1, 0]
    # Implicit ctr: the sampled negatives (label 0) were never shown, so they are not counted.
    implicit = ExposureStats.fit(train, ["x", "y", "z", "w"], cfg, implicit_ctr=True)
    assert implicit.item_counts.tolist() == [3, 0, 0, 0] and implicit.user_counts == {"a": 2, "b": 1}
    # ... and they are drawn uniformly from the catalogue, so a sampled negative's weight is 1.
    weights = implicit.columns({"user_id": ["a", "a"], "item_id": ["y", "y"], "label": [1, 0]})["ips_weight"]
    assert weights == pytest.approx([implicit.weights[1], 1.0]) and implicit.weights[1] > 1.5
    with pytest.raises(KeyError, match="example item 'q' is not in the item catalogue"):
        stats.columns({"user_id": ["a"], "item_id": ["q"]})
    with pytest.raises(KeyError, match="training item 'z' is not in the item catalogue"):
        ExposureStats.fit(train, ["x", "y"], cfg)


def test_logistic_propensity_weights_each_example_by_its_history() -> None:
    train = {"user_id": ["a", "a", "b", "b", "c", "c"], "item_id": ["x", "y", "x", "z", "x", "y"],
             "history_item_ids": [["z"], ["x"], ["y"], ["x"], [], ["x"]], "label": [1, 1, 1, 1, 1, 1]}
    genres = ["Drama", "Drama|Comedy", "Comedy", ""]
    stats = ExposureStats.fit(train, ["x", "y", "z", "w"], DebiasConfig(propensity="logistic", clip=50.0),
                              item_genres=genres)
    assert stats.exposure is not None
    rows = {"user_id": ["a", "b", "d"], "item_id": ["z", "z", "w"], "history_item_ids": [["x"], ["z", "y"], []]}
    cols = stats.columns(rows)
    index = {"x": 0, "y": 1, "z": 2, "w": 3}
    histories = [[index[i] for i in h] for h in rows["history_item_ids"]]
    expected = stats.exposure.weights(histories, [2, 2, 3], clip=50.0)
    assert cols["ips_weight"] == pytest.approx(expected.tolist())
    assert cols["ips_weight"][0] != pytest.approx(cols["ips_weight"][1])  # same item, other history
    assert cols["pop_stratum"] == stats.columns({"user_id": ["a", "b", "d"], "item_id": ["z", "z", "w"],
                                                 "history_item_ids": [[], [], []]})["pop_stratum"]
    with pytest.raises(KeyError, match="reads each example's 'history_item_ids' column"):
        stats.columns({"user_id": ["a"], "item_id": ["x"]})
    with pytest.raises(KeyError, match="example history item 'q' is not in the item catalogue"):
        stats.columns({"user_id": ["a"], "item_id": ["x"], "history_item_ids": [["q"]]})
    with pytest.raises(KeyError, match="reads each example's 'history_item_ids' column"):
        ExposureStats.fit({"user_id": ["a"], "item_id": ["x"]}, ["x"], DebiasConfig(propensity="logistic"))


def test_annotate_splits_with_the_logistic_propensity() -> None:
    cfg = DataConfig(history_len=3)
    data = prepare(cfg)
    pop = annotate_splits(data.splits, data, cfg, DebiasConfig())
    log = annotate_splits(data.splits, data, cfg, DebiasConfig(propensity="logistic"))
    w_pop, w_log = np.array(pop["test"]["ips_weight"]), np.array(log["test"]["ips_weight"])
    assert np.isfinite(w_log).all() and (w_log > 0).all() and not np.allclose(w_pop, w_log)
    assert pop["test"]["pop_stratum"] == log["test"]["pop_stratum"]  # strata stay popularity's


@pytest.mark.parametrize(("key", "value", "message"), [
    ("propensity", "learned", r"debias\.propensity must be one of popularity, logistic, got 'learned'"),
    ("exposure_negatives", 0, r"debias\.exposure_negatives must be ≥ 1, got 0"),
    ("eta", -1.0, r"debias\.eta must be ≥ 0, got -1\.0"),
    ("clip", 0.0, r"debias\.clip must be > 0, got 0\.0"),
    ("torso_share", 0.9, r"debias\.head_share=0\.2 and debias\.torso_share=0\.9"),
    ("cold_user_max", -1, r"debias\.cold_user_max must be ≥ 0, got -1"),
])
def test_bad_settings_name_the_key(key: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DebiasConfig(**{key: value})


def test_annotate_splits_counts_the_whole_training_block() -> None:
    full_cfg = DataConfig(history_len=3)
    full = prepare(full_cfg)
    sampled_cfg = DataConfig(history_len=3, max_train_examples=50)
    sampled = prepare(sampled_cfg)
    a = annotate_splits(full.splits, full, full_cfg, DebiasConfig())
    b = annotate_splits(sampled.splits, sampled, sampled_cfg, DebiasConfig())
    assert set(DEBIAS_COLUMNS) <= set(a["test"].column_names) and set(DEBIAS_COLUMNS) <= set(a["valid"].column_names)
    assert not set(DEBIAS_COLUMNS) & set(a["train"].column_names)  # the training batches stay as they were
    for name in DEBIAS_COLUMNS:  # a 50-example run is scored with the full block's weights and groups
        assert a["test"][name] == b["test"][name]
    stats = ExposureStats.fit(full.splits["train"], full.items["item_id"], DebiasConfig())
    assert a["test"]["ips_weight"] == pytest.approx(stats.columns(full.splits["test"])["ips_weight"])
    off = annotate_splits(full.splits, full, full_cfg, DebiasConfig(enabled=False))
    assert not set(DEBIAS_COLUMNS) & set(off["test"].column_names)


class _FirstToken(nn.Module):
    """A ctr 'model' whose logit is the example's first token id (scaled)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        del attention_mask
        return SimpleNamespace(logits=input_ids[:, 0].float() / 10.0)


def _rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": [int(rng.integers(1, 50)), 7], "label": int(rng.integers(0, 2)),
             "ips_weight": float(rng.uniform(0.1, 4.0)), "pop_stratum": int(rng.integers(0, 3)),
             "cold_user": int(rng.integers(0, 2)), "cold_item": int(rng.integers(0, 2))} for _ in range(n)]


def test_ctr_evaluator_adds_debiased_and_group_metrics() -> None:
    rows = _rows(200, 0)
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(rows, batch_size=32, collate_fn=BehaviourCollator("ctr", 0)))
    out = evaluate_ctr(_FirstToken(), loader, accelerator)
    y = np.array([r["label"] for r in rows])
    s = np.array([r["input_ids"][0] for r in rows]) / 10.0
    w = np.array([r["ips_weight"] for r in rows])
    assert next(iter(out)) == "auc"  # still the selection metric
    assert out["snips_auc"] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-6)
    assert out["ips_auc"] == pytest.approx(D.ips_auc(y, s, w), abs=1e-6)
    strata = np.array([r["pop_stratum"] for r in rows])
    cold_item = np.array([r["cold_item"] for r in rows]) == 1
    for group, mask in (("head", strata == 0), ("tail", strata == 2), ("cold_item", cold_item)):
        assert out[f"{group}/n_examples"] == mask.sum()
        assert out[f"{group}/auc"] == pytest.approx(roc_auc_score(y[mask], s[mask]))
    assert {f"{g}/auc" for g in GROUPS} <= set(out)
    # An unannotated split gives exactly the plain metrics.
    plain = [{k: r[k] for k in ("input_ids", "label")} for r in rows]
    loader = accelerator.prepare(DataLoader(plain, batch_size=32, collate_fn=BehaviourCollator("ctr", 0)))
    assert set(evaluate_ctr(_FirstToken(), loader, accelerator)) == {"auc", "logloss", "accuracy", "f1", "n_examples"}


class _OneHotRecommender(nn.Module):
    """A next-item 'model': users and items are one-hot codes of their first token (6 items)."""

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        del attention_mask
        return F.one_hot(input_ids[:, 0] % 6, 6).float() + 0.01 * input_ids[:, :1].float()

    def embed_items(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        return torch.cat([self.encode(b["input_ids"], b["attention_mask"]) for b in batches])

    @staticmethod
    def score_all(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T


def test_next_item_evaluator_adds_debiased_and_group_metrics() -> None:
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(6)]
    rows = [{"input_ids": [int(rng.integers(0, 6))], "item_id": ids[int(rng.integers(0, 6))], "history_item_ids": [],
             "ips_weight": float(rng.uniform(0.1, 4.0)), "pop_stratum": int(rng.integers(0, 3)),
             "cold_user": int(rng.integers(0, 2)), "cold_item": int(rng.integers(0, 2))} for _ in range(60)]
    tokens = [[k] for k in range(6)]
    collate = BehaviourCollator("next_item", 0, item_index={i: n for n, i in enumerate(ids)}, item_tokens=tokens)
    items = DataLoader(tokens, batch_size=4, collate_fn=ItemCollator(0))
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(rows, batch_size=16, collate_fn=collate))
    out = make_next_item_eval(items, ks=(1, 3))(_OneHotRecommender(), loader, accelerator)
    hit1 = np.array([float(r["input_ids"][0] == int(r["item_id"][1:])) for r in rows])  # own code scores highest
    w = np.array([r["ips_weight"] for r in rows])
    assert out["hr@1"] == pytest.approx(hit1.mean())
    assert out["snips_recall@1"] == pytest.approx((w * hit1).sum() / w.sum(), rel=1e-6)
    assert out["ips_recall@1"] == pytest.approx((w * hit1).mean(), rel=1e-6)
    assert {"ips_ndcg@3", "snips_ndcg@3", "snips_recall@3"} <= set(out)
    cold = np.array([r["cold_user"] for r in rows]) == 1
    assert out["cold_user/hr@1"] == pytest.approx(hit1[cold].mean())
    assert out["cold_user/n_examples"] == cold.sum()


# ---------------------------------------------------------------------------- IPS-weighted training


def test_weighted_loss_is_the_mean_loss_reweighted() -> None:
    logits, labels = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    plain = F.binary_cross_entropy_with_logits(logits, labels)
    assert weighted_loss(logits, labels, torch.full((3,), 7.0), "ctr") == pytest.approx(float(plain))
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    w = torch.tensor([1.0, 0.0, 3.0])
    assert weighted_loss(logits, labels, w, "ctr") == pytest.approx(float((per[0] + 3 * per[2]) / 4))
    assert weighted_loss(logits, torch.tensor([1.0, 2.0, 3.0]), w, "rating") == pytest.approx((0.7**2 + 3 * 1.0) / 4)
    with pytest.raises(ValueError, match="tasks ctr and rating, not 'next_item'"):
        weighted_loss(logits, labels, w, "next_item")


class _Toy(nn.Module):
    """A bag-of-ids ctr model with the ``cfg.task`` a petrec behaviour model has."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.cfg = SimpleNamespace(task="ctr")
        self.backbone = nn.EmbeddingBag(20, 8, mode="mean")
        self.head = nn.Linear(8, 1)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> SimpleNamespace:
        logits = self.head(self.backbone(input_ids)).squeeze(-1)
        loss = None if labels is None else F.binary_cross_entropy_with_logits(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


def _train_toy(tmp_path: Path, weight_of: Callable[[int], float] | None) -> torch.Tensor:
    """Train the toy on 64 examples (label = first id is even); return its probabilities on them."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (64, 3), generator=g)
    labels = (ids[:, 0] % 2 == 0).float()
    rows = [{"input_ids": i, "labels": y} | ({} if weight_of is None else {"ips_weight": torch.tensor(weight_of(int(y)))})
            for i, y in zip(ids, labels, strict=True)]
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=3, batch_size=8, lr=5e-2, progress=False, trackers=[],
                      mixed_precision="no", ips_weighting=weight_of is not None, seed=3)
    model = _Toy()
    train(model, DataLoader(rows, batch_size=8, shuffle=True), None, cfg,
          evaluate_fn=lambda *a: {}, accelerator=make_accelerator(cfg))
    with torch.no_grad():
        return torch.sigmoid(model(ids).logits)


def test_ips_weighting_changes_training_as_the_weights_say(tmp_path: Path) -> None:
    plain = _train_toy(tmp_path / "a", None)
    # Constant weights: self-normalised, so exactly the unweighted run.
    assert torch.allclose(_train_toy(tmp_path / "b", lambda y: 3.0), plain, atol=1e-6)
    # Positives weighted 10x less: the model predicts clicks less often than without weights.
    down = _train_toy(tmp_path / "c", lambda y: 0.1 if y == 1 else 1.0)
    assert float(down.mean()) < float(plain.mean()) - 0.1


def test_ips_weighting_needs_the_column_and_a_pointwise_model(tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=1, progress=False, trackers=[], mixed_precision="no",
                      ips_weighting=True)
    rows = [{"input_ids": torch.tensor([1, 2]), "labels": torch.tensor(1.0)}] * 4
    with pytest.raises(KeyError, match="training batches carry no 'ips_weight'"):
        train(_Toy(), DataLoader(rows, batch_size=2), None, cfg, evaluate_fn=lambda *a: {},
              accelerator=make_accelerator(cfg))
    model = _Toy()
    model.cfg = SimpleNamespace(task="next_item")
    with pytest.raises(ValueError, match="ips_weighting needs a ctr or rating behaviour model"):
        train(model, DataLoader(rows, batch_size=2), None, cfg, evaluate_fn=lambda *a: {},
              accelerator=make_accelerator(cfg))
    data_cfg = DataConfig(task="next_item", protocol="loo", history_len=3)
    with pytest.raises(ValueError, match=r"not data\.task='next_item'"):
        annotate_splits({}, None, data_cfg, DebiasConfig(), train_weights=True)


def test_run_config_reads_the_debias_section_or_defaults(tmp_path: Path) -> None:
    from petrec.config import ConfigError
    from petrec.runs import read_run_config

    base = "data: {}\nmodel: {}\nmax_length: 32\n"
    (tmp_path / "config.yaml").write_text(base, encoding="utf-8")
    assert read_run_config(tmp_path).debias == DebiasConfig()  # a run written before the section existed
    (tmp_path / "config.yaml").write_text(base + "debias: {eta: 0.5, clip: 20}\n", encoding="utf-8")
    assert read_run_config(tmp_path).debias == DebiasConfig(eta=0.5, clip=20.0)
    (tmp_path / "config.yaml").write_text(base + "debias: {etta: 0.5}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.yaml: unknown key 'debias\.etta'"):
        read_run_config(tmp_path)
