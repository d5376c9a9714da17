"""``evaluate``-compatible metric modules that load from petrec itself, offline.

``evaluate.load("roc_auc")`` fetches a script from the Hugging Face Hub and fails offline;
``evaluate.load("/path/to/dir")`` works offline but copies the script into
``HF_MODULES_CACHE`` (``~/.cache/huggingface/modules``), i.e. writes into the home folder,
which may be read-only. So petrec defines each metric as an :class:`evaluate.Metric`
subclass and :func:`load` instantiates it directly: nothing is fetched, nothing is copied,
and the only thing evaluate touches on disk is an (empty) cache folder, which :func:`load`
puts under the system temp folder unless ``cache_dir`` is given. The modules behave like
any evaluate module: ``add_batch`` / ``add`` / ``compute``, ``evaluate.combine``.

The arithmetic lives in :mod:`petrec.metrics.functional` and :mod:`petrec.metrics.ranking`, so the modules and the fast
functions the training loop calls can never disagree.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import datasets
import evaluate
import numpy as np

from petrec.metrics import functional as F
from petrec.metrics.ranking import compute_ranking

__all__ = ["METRICS", "load"]

_CITATION = "petrec (https://github.com/petrec) metric module; see petrec.metrics.functional"

_BINARY_FEATURES = datasets.Features(
    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
)
_REGRESSION_FEATURES = datasets.Features(
    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
)
_RANKING_FEATURES = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Value("float64")),
        "references": datasets.Value("int64"),
    }
)

_BINARY_INPUTS = """
Args:
    predictions: probabilities in [0, 1] (or logits with ``from_logits=True``), one per example.
    references: 0/1 labels.
"""
_REGRESSION_INPUTS = """
Args:
    predictions: predicted ratings.
    references: true ratings.
"""
_RANKING_INPUTS = """
Args:
    predictions: one list of scores over ALL items per user (shape n_users x n_items).
    references: the index of each user's target item.
    k: a cut-off or a list of cut-offs (default 10).
    exclude: optional per-user lists of item ids to drop from the candidates (never the target).
Ties count against the target (pessimistic rank).
"""


class _PetrecMetric(evaluate.Metric):
    """Shared ``_info`` for petrec's metrics; subclasses set the class attributes."""

    description: ClassVar[str] = ""
    features: ClassVar[datasets.Features] = _BINARY_FEATURES
    inputs: ClassVar[str] = _BINARY_INPUTS

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.description,
            citation=_CITATION,
            inputs_description=self.inputs,
            features=self.features,
            # No "numpy" format: evaluate would hand the values over as float32.
            format=None,
        )


class Auc(_PetrecMetric):
    """ROC AUC (nan with a warning for a single class)."""

    description = "Area under the ROC curve; ties get half credit."

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return {"auc": F.roc_auc(references, predictions)}


class Logloss(_PetrecMetric):
    """Binary cross-entropy."""

    description = "Mean binary cross-entropy (nats)."

    def _compute(
        self, predictions: list[float], references: list[float], from_logits: bool = False
    ) -> dict[str, float]:
        return {"logloss": F.log_loss(references, predictions, from_logits=from_logits)}


class Accuracy(_PetrecMetric):
    """Accuracy of thresholded probabilities."""

    description = "Accuracy; positive when probability >= threshold (default 0.5)."

    def _compute(
        self,
        predictions: list[float],
        references: list[float],
        from_logits: bool = False,
        threshold: float = 0.5,
    ) -> dict[str, float]:
        return {
            "accuracy": F.accuracy(
                references, predictions, from_logits=from_logits, threshold=threshold
            )
        }


class F1(_PetrecMetric):
    """F1 of the positive class."""

    description = "F1 of the positive class; positive when probability >= threshold."

    def _compute(
        self,
        predictions: list[float],
        references: list[float],
        from_logits: bool = False,
        threshold: float = 0.5,
    ) -> dict[str, float]:
        return {"f1": F.f1(references, predictions, from_logits=from_logits, threshold=threshold)}


class Rmse(_PetrecMetric):
    """Root mean squared error."""

    description = "Root mean squared error of predicted ratings."
    features = _REGRESSION_FEATURES
    inputs = _REGRESSION_INPUTS

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return {"rmse": F.rmse(references, predictions)}


class Mae(_PetrecMetric):
    """Mean absolute error."""

    description = "Mean absolute error of predicted ratings."
    features = _REGRESSION_FEATURES
    inputs = _REGRESSION_INPUTS

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return {"mae": F.mae(references, predictions)}


class _RankingMetric(_PetrecMetric):
    """Full-ranking metric; ``key`` selects hr / ndcg / mrr from :func:`compute_ranking`."""

    features = _RANKING_FEATURES
    inputs = _RANKING_INPUTS
    key: ClassVar[str] = "hr"

    def _compute(
        self,
        predictions: list[list[float]],
        references: list[int],
        k: int | list[int] = 10,
        exclude: Any = None,
    ) -> dict[str, float]:
        lengths = {len(p) for p in predictions}
        if len(lengths) > 1:
            raise F.PetrecMetricError(
                f"predictions: every user needs scores for all items; got lengths {sorted(lengths)[:5]}"
            )
        ks = [k] if isinstance(k, int) else list(k)
        res = compute_ranking(
            np.asarray(predictions, dtype=np.float64),
            np.asarray(references, dtype=np.int64),
            ks=ks,
            exclude=exclude,
        )
        return {name: v for name, v in res.items() if name.split("@")[0] == self.key}


class HitRate(_RankingMetric):
    """HR@K (hit rate / recall@K with one target)."""

    description = "HR@K: share of users whose target ranks within the top K."
    key = "hr"


class Ndcg(_RankingMetric):
    """NDCG@K with one target."""

    description = "NDCG@K with a single relevant item: 1/log2(rank+1) inside the top K."
    key = "ndcg"


class Mrr(_RankingMetric):
    """MRR@K with one target."""

    description = "MRR@K: 1/rank inside the top K, else 0."
    key = "mrr"


#: Name -> module class; the one registry of petrec's metric modules.
METRICS: dict[str, type[_PetrecMetric]] = {
    "auc": Auc,
    "logloss": Logloss,
    "accuracy": Accuracy,
    "f1": F1,
    "rmse": Rmse,
    "mae": Mae,
    "hit_rate": HitRate,
    "ndcg": Ndcg,
    "mrr": Mrr,
}

_ALIASES = {"roc_auc": "auc", "log_loss": "logloss", "hr": "hit_rate", "hit": "hit_rate"}


def load(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any
) -> evaluate.Metric:
    """Instantiate one of petrec's evaluate modules, offline.

    Args:
        name: One of :data:`METRICS` (or an alias: ``roc_auc``, ``log_loss``, ``hr``, ``hit``).
        cache_dir: Folder for evaluate's bookkeeping (defaults to a ``petrec-evaluate``
            folder in the system temp folder; nothing is written to the home folder).
        **kwargs: Passed to :class:`evaluate.EvaluationModule` (``num_process``,
            ``process_id``, ``experiment_id``, ``keep_in_memory``...). ``keep_in_memory``
            defaults to True for single-process use.

    Returns:
        The metric module.

    Raises:
        PetrecMetricError: ``name`` is not a petrec metric.
    """
    key = _ALIASES.get(name, name)
    if key not in METRICS:
        raise F.PetrecMetricError(
            f"unknown metric {name!r}; accepted: {sorted(METRICS)} (aliases {sorted(_ALIASES)})"
        )
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "petrec-evaluate")
    kwargs.setdefault("keep_in_memory", kwargs.get("num_process", 1) == 1)
    return METRICS[key](cache_dir=str(cache_dir), **kwargs)
