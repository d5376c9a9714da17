"""Fit the ID model behind collaborative tokens (:mod:`petrec.models.collab`) on training examples only.

Which training examples (the recipe's ``collab_fit``):

* ``heldout`` (default): the training block's examples that the language model does *not*
  train on (under ``few_shot_k`` / ``max_train_examples`` sampling). The ID model has then never
  seen a label of the LM's own training examples, so the tokens the LM learns from are as
  out-of-sample as the ones it is tested with. Without such a remainder (the LM trains on the
  whole block) this is refused: an ID model fitted on the LM's own examples hands it tokens that
  already "know" their labels, which it would learn to trust more than it should on test.
* ``train``: the LM's own training examples (that risk accepted; e.g. the whole block).

Early stopping reads a seeded tenth of those examples, never the validation or test split, so no
valid / test label reaches the ID model (tests/models/test_collab.py flips them).

The optimisation is the ID baselines' (:func:`petrec.recipes.id_ctr.train_id_ctr`,
:class:`~petrec.recipes.id_ctr.IDCTRConfig` defaults, one thread).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from petrec.data.errors import DataError
from petrec.models.collab import CollabSpec
from petrec.models.sequential.ctr import SequenceCTR

__all__ = ["MIN_FIT_EXAMPLES", "fit_id_model", "heldout_rows", "id_model_metrics", "id_model_scores"]

#: Fewest examples an ID model is fitted on (a tenth of them decides early stopping).
MIN_FIT_EXAMPLES = 100


def heldout_rows(block: Any, train: Any, data_cfg: Any) -> Any:
    """The training block's examples outside the run's sampled training split.

    Args:
        block: The training split before ``max_train_examples`` / ``few_shot_k`` sampling.
        train: The run's training split (the block, sampled as :func:`petrec.data.prepare` does).
        data_cfg: The run's data config (its sampling sizes and seed).

    Raises:
        DataError: The training split is not the block's sample (e.g. ``period_replay`` added rows).
    """
    from petrec.data.splits import sample_indices

    rows = np.arange(len(block))
    for k in (data_cfg.max_train_examples, data_cfg.few_shot_k):
        rows = rows[sample_indices(len(rows), k, data_cfg.seed)]
    picked = block.select(rows)
    same = len(picked) == len(train) and all(
        list(picked[c]) == list(train[c]) for c in ("user_id", "item_id", "label"))
    if not same:
        raise DataError("collab_fit: heldout: the training split is not a sample of the training block "
                        "(data.period_replay adds earlier periods' rows?); use collab_fit: train")
    return block.select(np.setdiff1d(np.arange(len(block)), rows))


def fit_id_model(examples: Any, *, encoder: str, hidden: int, history_len: int, seed: int,
                 fit: str, threads: int = 1) -> tuple[SequenceCTR, CollabSpec]:
    """Train an ID click model on ``examples`` (90%), early-stopped on a seeded tenth of them.

    Args:
        examples: ctr training examples (``history_item_ids``, ``history_labels``, ``item_id``, ``label``).
        encoder: ``gru4rec``, ``sasrec`` or ``caser``.
        hidden: Embedding width.
        history_len: History positions read.
        seed: Seeds the split, the weights and the shuffling.
        fit: Recorded in the spec (``heldout`` or ``train``).
        threads: torch threads while it trains.

    Returns:
        The trained model (eval mode) and its :class:`CollabSpec` (vocabulary = items of the
        fitting examples; ``id_metrics`` = its AUC etc. on the held-out tenth).

    Raises:
        DataError: Too few examples, one class only, or malformed histories (named).
    """
    from petrec.models.sequential.ctr import ItemVocab, SequenceCTRConfig, encode_examples
    from petrec.recipes.id_ctr import IDCTRConfig, train_id_ctr

    n = len(examples)
    if n < MIN_FIT_EXAMPLES:
        raise DataError(f"collaborative tokens: the ID model would be fitted on {n} examples (collab_fit: {fit}); "
                        f"expected at least {MIN_FIT_EXAMPLES}")
    labels = np.asarray(examples["label"], dtype=float)
    if len(np.unique(labels)) < 2:
        raise DataError(f"collaborative tokens: the {n} examples the ID model is fitted on hold one class only")
    order = np.random.default_rng(seed).permutation(n)
    n_stop = max(1, n // 10)
    parts = {"train": examples.select(np.sort(order[n_stop:])), "valid": examples.select(np.sort(order[:n_stop]))}
    vocab = ItemVocab.from_examples(list(parts["train"]["history_item_ids"]), list(parts["train"]["item_id"]))
    try:
        tensors = {name: encode_examples(part, vocab, history_len) for name, part in parts.items()}
    except ValueError as exc:
        raise DataError(f"collaborative tokens: {exc}") from None
    cfg = replace(IDCTRConfig(), hidden=hidden, threads=threads)
    model_cfg = SequenceCTRConfig(encoder=encoder, hidden=hidden, max_len=history_len)  # type: ignore[arg-type]
    model, result, _, _ = train_id_ctr(tensors, vocab.n_tokens, model_cfg, cfg, seed)
    model.cpu().eval()  # inside a GPU recipe the shared Accelerate state trained it on the device
    best = next((h for h in result.valid_history if h["step"] == result.best_step), {})
    metrics = {k: float(v) for k, v in best.items() if k in ("auc", "logloss", "accuracy")}
    spec = CollabSpec(items=vocab.items, encoder=encoder, hidden=hidden, history_len=history_len, fit=fit,
                      fitted_on=n, id_metrics=metrics)
    return model, spec


def id_model_scores(model: SequenceCTR, spec: CollabSpec, examples: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, logits)`` of the ID model alone on labelled examples: a reference row for reports,
    never an input of the tokens."""
    import torch

    from petrec.models.sequential.ctr import encode_examples

    tensors = encode_examples(examples, spec.vocab, spec.history_len)
    with torch.no_grad():
        logits = model.eval()(**tensors).logits
    return tensors["labels"].numpy().astype(np.int64), logits.float().numpy()


def id_model_metrics(model: SequenceCTR, spec: CollabSpec, splits: Any,
                     names: tuple[str, ...] = ("valid", "test")) -> dict[str, dict[str, float]]:
    """The ID model's own ctr metrics on labelled splits (the recipe's reference, the ``collab-id`` baseline)."""
    from petrec.metrics import compute_ctr

    return {name: compute_ctr(*id_model_scores(model, spec, splits[name]), from_logits=True) for name in names}
