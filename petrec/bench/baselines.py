"""Reference statistics baselines for click/like prediction (BENCHMARKS.md P1), in the same tables.

Three plain-statistics scorers, so a language-model method is always seen next to what
counting achieves:

* ``history-share`` — no training: score = share of liked items in the example's history.
* ``item-rate`` — no training: smoothed like rate of the target item,
  ``(likes_i + m·p) / (n_i + m)`` with ``m`` = :data:`ITEM_PRIOR_STRENGTH` and ``p`` the
  block's like rate.
* ``logreg-counts`` — scikit-learn logistic regression on three features (history like
  share, smoothed item like rate, log(1 + item count)), fitted on the k few-shot examples with
  each one's own label left out of its item's counts (as the recipe's prior,
  :mod:`petrec.data.features`; before 2026-12-04 it was left in, which understated this row:
  P1 k=256 0.7435 then, 0.7509 since).
* ``logreg-content`` — the same plus the item catalogue's fields (genres, decade, category,
  brand) and the user's like share over history items sharing them (:mod:`petrec.bench.content`):
  what the item content adds to the counts without a language model.

Item counts and like rates are taken over the **whole training block** (8,000 examples
under P1), as BENCHMARKS.md defines these reference rows — so ``item-rate`` and
``logreg-counts`` see more labels than k; the report says so. Scores are evaluated with
:func:`petrec.metrics.compute_ctr`, the same function the training loop uses.

The ID-based sequence baselines ``gru4rec-ctr``, ``caser-ctr`` and ``sasrec-ctr`` (trained
neural models, k examples only) live in :mod:`petrec.bench.id_baselines`; :func:`run_baseline`
dispatches to them, so a suite lists them under ``baselines:`` like the statistics rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from petrec.bench.id_baselines import (
    ID_BASELINE_DESCRIPTIONS,
    ID_BASELINES,
    SCORES_KEY,
    run_id_baseline,
)

#: Pseudo-count of the smoothed item like rate.
ITEM_PRIOR_STRENGTH = 10.0

BASELINE_DESCRIPTIONS: dict[str, str] = {
    "history-share": "no training: share of liked items in the history",
    "item-rate": f"no training: smoothed like rate of the target item (prior strength {ITEM_PRIOR_STRENGTH:g}, "
                 "counted over the whole training block)",
    "logreg-counts": "logistic regression on history like share, smoothed item like rate and log item count "
                     "(item statistics over the whole training block, leave-one-out on the k training examples; "
                     "regression fitted on the k examples)",
    "logreg-content": "logistic regression on logreg-counts' three features, the candidate's catalogue tokens "
                      "(genres, decade, category, brand; one-hot) and the user's like share over history items "
                      "sharing a token with it (fitted on the k examples, leave-one-out counts): what item content "
                      "adds without an LM",
    "prior-features": "the behaviour prior alone: logistic regression on petrec.data.features (item statistics "
                      "over the whole training block, leave-one-out on the k training examples; regression "
                      "fitted on the k examples), i.e. the prior head's warm start without a language model",
    "collab-id": "the ID model behind collaborative tokens, alone: GRU4Rec-ctr (width 64) fitted on the examples "
                 "the run's collab_fit names (heldout, the default: the training block's examples outside the k; "
                 "train: the training split), early-stopped on a tenth of them",
    "prior-collab": "prior-features and collab-id stacked without a language model: prior + w * ID logit + b, "
                    "w and b fitted on the validation split (petrec.fusion), the ablation of "
                    "model.collab_in_fusion's mix without its language-model term",
}


class BaselineError(ValueError):
    """A baseline cannot be computed on this data (wrong task, one class only …)."""


@dataclasses.dataclass
class ItemStats:
    """Like counts of target items over a training block."""

    counts: dict[str, int]
    likes: dict[str, int]
    prior: float

    @classmethod
    def from_split(cls, item_ids: list[Any], labels: list[int]) -> ItemStats:
        """Count occurrences and likes per target item."""
        counts: dict[str, int] = {}
        likes: dict[str, int] = {}
        for item, label in zip(item_ids, labels, strict=True):
            key = str(item)
            counts[key] = counts.get(key, 0) + 1
            likes[key] = likes.get(key, 0) + int(label)
        prior = float(np.mean(labels)) if labels else 0.5
        return cls(counts, likes, prior)

    def _counted(self, item: Any, own: int | None) -> tuple[int, int]:
        """(occurrences, likes) of one item; ``own``: a counted example's label, taken back out."""
        key = str(item)
        n, likes = self.counts.get(key, 0), self.likes.get(key, 0)
        if own is not None and n > 0:
            n, likes = n - 1, likes - int(own)
        return n, likes

    def rate(self, item: Any, own: int | None = None) -> float:
        """Smoothed like rate of one item (without the label ``own`` of a counted example)."""
        n, likes = self._counted(item, own)
        return (likes + ITEM_PRIOR_STRENGTH * self.prior) / (n + ITEM_PRIOR_STRENGTH)

    def log_count(self, item: Any, own: int | None = None) -> float:
        """log(1 + occurrences) of one item (without the counted example ``own`` stands for)."""
        return math.log1p(self._counted(item, own)[0])


def features(split: Any, stats: ItemStats, *, leave_one_out: bool = False) -> np.ndarray:
    """The three count features of every example of a split (columns: share, rate, log count).

    An example with an empty history gets the block's like rate as its history share.

    Args:
        split: Examples with ``history_labels`` and ``item_id`` (and ``label`` for ``leave_one_out``).
        stats: The block's item counts.
        leave_one_out: The examples are among those ``stats`` counted (the training split): each
            row's own label is taken out of its item's counts, as the recipe's prior does
            (:meth:`petrec.data.features.BehaviourStats.raw_features`). Without it a model fitted on
            these rows learns the label from itself, and trusts the item rate more than it should
            on rows whose label was never counted.
    """
    own = split["label"] if leave_one_out else [None] * len(split["item_id"])
    rows = []
    for hist, item, label in zip(split["history_labels"], split["item_id"], own, strict=True):
        share = float(np.mean(hist)) if len(hist) else stats.prior
        rows.append((share, stats.rate(item, label), stats.log_count(item, label)))
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def _labels(split: Any) -> np.ndarray:
    return np.asarray(split["label"], dtype=float)


def _history_share(train: Any, stats: ItemStats) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    return (lambda x: x[:, 0]), 0


def _item_rate(train: Any, stats: ItemStats) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    return (lambda x: x[:, 1]), 0


def _require_both_classes(y: np.ndarray) -> None:
    if len(np.unique(y)) < 2:
        raise BaselineError(f"logistic regression needs both classes; the {len(y)} training examples are all "
                            f"label {int(y[0]) if len(y) else '?'}")


def _logreg(train: Any, stats: ItemStats) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = _labels(train)
    _require_both_classes(y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(features(train, stats, leave_one_out=True), y)
    return (lambda x: model.predict_proba(x)[:, 1]), 4


def _logreg_content(train: Any, stats: ItemStats, items: Any) -> tuple[Callable[[Any], np.ndarray], int]:
    """The ``logreg-content`` row (:mod:`petrec.bench.content`): split → like probability, parameter count."""
    from petrec.bench.content import ItemContent, fit_content_logreg

    _require_both_classes(_labels(train))
    try:
        content = ItemContent.from_catalogue(items)
    except ValueError as exc:
        raise BaselineError(f"logreg-content: {exc}") from None
    return fit_content_logreg(train, lambda split, loo: features(split, stats, leave_one_out=loo), content, stats.prior)


#: name → fit(train split, item stats) → (score function over features, trained parameter count).
STATS_BASELINES: dict[str, Callable[[Any, ItemStats], tuple[Callable[[np.ndarray], np.ndarray], int]]] = {
    "history-share": _history_share,
    "item-rate": _item_rate,
    "logreg-counts": _logreg,
}

#: Every baseline a suite may list under ``baselines:`` → its one-line description: the
#: statistics scorers above and the ID-based sequence models of :mod:`petrec.bench.id_baselines`.
BASELINES: dict[str, str] = {**BASELINE_DESCRIPTIONS, **ID_BASELINE_DESCRIPTIONS}
#: Baselines that train an ID-based sequence model (the rest are plain statistics / a count model).
TRAINED_BASELINES = frozenset({*ID_BASELINE_DESCRIPTIONS, "collab-id", "prior-collab"})


_CACHE: dict[str, Any] = {}


def _prepared(cfg: Any, prepare: Callable[[Any], Any]) -> Any:
    """``prepare(cfg)``, memoised per config within this process (baselines share data)."""
    import json

    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = prepare(cfg)
    return _CACHE[key]


def _add_breakdowns(out: dict[str, Any], data: Any, data_cfg: Any, debias: Any) -> dict[str, Any]:
    """The recipe's debiased metrics and group breakdowns (``snips_auc``, ``tail/auc``, ...) on the
    baseline's valid / test scores, from the same exposure columns a model run gets."""
    from petrec.config import from_dict
    from petrec.data.exposure import annotate_splits
    from petrec.debias import DEBIAS_COLUMNS, DebiasConfig, pointwise_breakdown

    scores = out.pop(SCORES_KEY)
    cfg = from_dict(DebiasConfig, dict(debias or {}), prefix="debias.")
    if not cfg.enabled:
        return out
    annotated = annotate_splits({s: data.splits[s] for s in scores}, data, data_cfg, cfg)
    for split, logits in scores.items():
        extras = {c: np.asarray(annotated[split][c], dtype=np.float64) for c in DEBIAS_COLUMNS}
        out[split].update(pointwise_breakdown("ctr", _labels(annotated[split]).astype(np.float64),
                                              np.asarray(logits, dtype=np.float64), extras))
    return out


def _prior_features(splits: Any, block: Any) -> dict[str, Any]:
    """The ``prior-features`` row: the recipe's prior warm start, scored without a language model."""
    from petrec.data.features import FEATURE_NAMES, BehaviourStats
    from petrec.metrics import compute_ctr
    from petrec.models.behaviour import PriorHead

    stats = BehaviourStats.fit(block, "ctr", scaler_rows=splits["train"])
    head = PriorHead(len(FEATURE_NAMES), 0)
    y = _labels(splits["train"])
    if len(np.unique(y)) < 2:
        raise BaselineError(f"the prior needs both classes; the {len(y)} training examples have one")
    head.warm_start(stats.features(splits["train"], leave_one_out=True), y, "ctr")
    import torch

    out: dict[str, Any] = {SCORES_KEY: {}}
    for split in ("valid", "test"):
        with torch.no_grad():
            logits = head(torch.as_tensor(stats.features(splits[split]))).numpy()
        out[split] = compute_ctr(_labels(splits[split]).astype(np.int64), logits, from_logits=True)
        out[SCORES_KEY][split] = logits
    out["valid_best"] = {"metric": "auc", "value": out["valid"].get("auc"), "step": 0}
    out.update(trainable_params=len(FEATURE_NAMES) + 1, total_params=None, trainable_percent=None, steps=0,
               labels=[f"baseline: {BASELINE_DESCRIPTIONS['prior-features']}"],
               train_examples=len(splits["train"]), item_stat_examples=len(block))
    return out


def _collab_id(splits: Any, data_cfg: Any, prepare: Callable[[Any], Any], fit: str = "heldout") -> dict[str, Any]:
    """The ``collab-id`` row: the recipe's collaborative-token ID model (default shape), scored alone.

    ``fit`` is the run config's ``collab_fit``: ``heldout`` (the training block's examples outside
    the training split) or ``train`` (the training split itself, where nothing is held out).
    """
    from petrec.data.errors import DataError
    from petrec.metrics import compute_ctr
    from petrec.recipes.collab import fit_id_model, heldout_rows, id_model_scores

    if fit not in ("heldout", "train"):
        raise BaselineError(f"collab-id: collab_fit: expected 'heldout' or 'train', got {fit!r}")
    try:
        examples = splits["train"]
        if fit == "heldout":
            examples = heldout_rows(_whole_block(data_cfg, prepare), examples, data_cfg)
        model, spec = fit_id_model(examples, encoder="gru4rec", hidden=64, history_len=int(data_cfg.history_len),
                                   seed=int(data_cfg.seed), fit=fit)
    except DataError as exc:
        raise BaselineError(f"collab-id: {exc}") from None
    scored = {name: id_model_scores(model, spec, splits[name]) for name in ("valid", "test")}
    out: dict[str, Any] = {name: compute_ctr(y, logits, from_logits=True) for name, (y, logits) in scored.items()}
    out[SCORES_KEY] = {name: logits for name, (_, logits) in scored.items()}
    out["valid_best"] = {"metric": "auc", "value": out["valid"].get("auc"), "step": 0}
    out.update(trainable_params=sum(p.numel() for p in model.parameters()), total_params=None,
               trainable_percent=None, steps=0, labels=[f"baseline: {BASELINE_DESCRIPTIONS['collab-id']}"],
               train_examples=spec.fitted_on, id_heldout=spec.id_metrics)
    return out


def _prior_collab(splits: Any, block: Any, data_cfg: Any, prepare: Callable[[Any], Any],
                  fit: str = "heldout") -> dict[str, Any]:
    """The ``prior-collab`` row: the two rows above mixed on validation, as the stacked model mixes them."""
    from petrec.fusion import fit_fusion
    from petrec.metrics import compute_ctr

    prior, ids = _prior_features(splits, block), _collab_id(splits, data_cfg, prepare, fit)
    y = {split: _labels(splits[split]).astype(np.int64) for split in ("valid", "test")}
    weight, bias = fit_fusion(ids[SCORES_KEY]["valid"], prior[SCORES_KEY]["valid"], y["valid"], "ctr")
    out: dict[str, Any] = {SCORES_KEY: {}}
    for split in ("valid", "test"):
        out[SCORES_KEY][split] = prior[SCORES_KEY][split] + weight * ids[SCORES_KEY][split] + bias
        out[split] = compute_ctr(y[split], out[SCORES_KEY][split], from_logits=True)
    out["valid"].update(fusion_collab_weight=weight, fusion_bias=bias)
    out["valid_best"] = {"metric": "auc", "value": out["valid"].get("auc"), "step": 0}
    out.update(trainable_params=prior["trainable_params"] + ids["trainable_params"] + 2, total_params=None,
               trainable_percent=None, steps=0, labels=[f"baseline: {BASELINE_DESCRIPTIONS['prior-collab']}"],
               train_examples=len(splits["train"]), item_stat_examples=len(block), id_heldout=ids["id_heldout"])
    return out


def _counted_block(data_cfg: Any, train: Any, prior_stats: Any, prepare: Callable[[Any], Any]) -> Any:
    """The examples the statistics rows count items over: the same block the recipe's prior counts.

    ``prior_stats`` is the run config's: ``block`` (the default) is the whole training split before
    ``few_shot_k`` / ``max_train_examples`` sampling, ``train`` the sampled training examples alone.
    """
    prior_stats = str(prior_stats or "block")
    if prior_stats not in ("block", "train"):
        raise BaselineError(f"prior_stats: expected 'block' or 'train', got {prior_stats!r}")
    return train if prior_stats == "train" else _whole_block(data_cfg, prepare)


def _whole_block(data_cfg: Any, prepare: Callable[[Any], Any]) -> Any:
    """The training split before ``few_shot_k`` / ``max_train_examples`` sampling (the recipe's block)."""
    return _prepared(data_cfg.unsampled(), prepare).splits["train"]


def run_baseline(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Compute one baseline on the data a run config describes (its ``data`` section).

    Args:
        name: A key of :data:`BASELINES`.
        config: A run config; ``config["data"]`` holds :class:`petrec.data.DataConfig` fields
            (``few_shot_k`` and ``seed`` select the same k examples the model runs train on);
            the ID baselines (:data:`petrec.bench.id_baselines.ID_BASELINES`) also read an
            optional ``config["id_ctr"]`` (:class:`petrec.recipes.id_ctr.IDCTRConfig` fields)
            and use ``data.seed`` as their training seed.

    Returns:
        A ``metrics.json``-shaped dict: ``valid``, ``test`` (ctr metrics), ``valid_best``,
        ``trainable_params``, ``total_params``, ``trainable_percent``, ``labels``.

    Raises:
        BaselineError: Not a ctr task, or the baseline cannot be fitted.
    """
    from petrec.data import DataConfig, prepare
    from petrec.metrics import compute_ctr

    if name not in BASELINES:
        raise BaselineError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    data_cfg = DataConfig(**(config.get("data") or {}))
    if data_cfg.task != "ctr":
        raise BaselineError(f"baseline {name!r} needs data.task='ctr', got {data_cfg.task!r}")
    data = _prepared(data_cfg, prepare)
    splits = data.splits
    debias = config.get("debias")
    if name in ID_BASELINES:
        return _add_breakdowns(run_id_baseline(name, data_cfg, splits, config.get("id_ctr"), BaselineError),
                               data, data_cfg, debias)
    block = _counted_block(data_cfg, splits["train"], config.get("prior_stats"), prepare)
    if name == "prior-features":
        return _add_breakdowns(_prior_features(splits, block), data, data_cfg, debias)
    fit = str(config.get("collab_fit") or "heldout")  # the ID model's examples, as the recipe picks them
    if name == "collab-id":
        return _add_breakdowns(_collab_id(splits, data_cfg, prepare, fit), data, data_cfg, debias)
    if name == "prior-collab":
        return _add_breakdowns(_prior_collab(splits, block, data_cfg, prepare, fit), data, data_cfg, debias)
    stats = ItemStats.from_split(list(block["item_id"]), [int(v) for v in block["label"]])
    if name == "logreg-content":
        score, n_params = _logreg_content(splits["train"], stats, data.items)
    else:
        fitted, n_params = STATS_BASELINES[name](splits["train"], stats)
        score = lambda split: fitted(features(split, stats))  # noqa: E731
    out: dict[str, Any] = {SCORES_KEY: {}}
    for split in ("valid", "test"):
        out[SCORES_KEY][split] = score(splits[split])
        out[split] = compute_ctr(_labels(splits[split]), out[SCORES_KEY][split])
    out["valid_best"] = {"metric": "auc", "value": out["valid"].get("auc"), "step": 0}
    # A share of "total" parameters means nothing for a statistics scorer: left empty on purpose.
    out.update(trainable_params=n_params, total_params=None, trainable_percent=None,
               steps=0, labels=[f"baseline: {BASELINE_DESCRIPTIONS[name]}"],
               train_examples=len(splits["train"]), item_stat_examples=len(block))
    return _add_breakdowns(out, data, data_cfg, debias)
