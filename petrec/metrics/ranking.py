"""Full-ranking metrics with one held-out target per user: HR@K, NDCG@K, MRR@K.

Computed with torch on whatever device the scores live on, in user chunks. Policies:

* **Ranking ties are pessimistic**: the rank of the target is the number of candidate items
  whose score is ``>=`` the target's score (the target included). An item tied with the
  target therefore counts *against* it, so a model that scores everything equally gets the
  worst rank, never a lucky one.
* **Ranking candidates**: all items, minus the optional ``exclude`` items of each user
  (typically their history); the target is never excluded even when it is in the history.
  ``K`` larger than the number of candidates is allowed: every target is then inside the
  top K (HR@K = 1).
* **One target per user** (leave-one-out protocol): HR@K = 1[rank <= K],
  NDCG@K = 1 / log2(rank + 1) if rank <= K else 0, MRR@K = 1 / rank if rank <= K else 0,
  each averaged over users.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from petrec.metrics.functional import PetrecMetricError

__all__ = ["compute_ranking", "ranking_per_user", "target_ranks"]


def _as_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PetrecMetricError(f"{name}: expected an array, got {type(x).__name__}") from exc
    return t.to(device=device, dtype=dtype)


def _exclusion_mask(exclude: Any, n_users: int, n_items: int, device: torch.device) -> torch.Tensor:
    """Boolean (n_users, n_items) mask from one of the three accepted ``exclude`` forms.

    * a **boolean** array / tensor of the scores' shape (True = excluded);
    * an **integer** array / tensor ``(n_users, max_history)`` of item indices padded with
      negative values (what :class:`petrec.collate.BehaviourCollator` gives as
      ``history_index``, padded with -1);
    * a sequence of per-user iterables of item indices (ragged lists).
    """
    if isinstance(exclude, (torch.Tensor, np.ndarray)):
        is_bool = (
            exclude.dtype == torch.bool
            if isinstance(exclude, torch.Tensor)
            else exclude.dtype == np.bool_
        )
        if is_bool:
            mask = _as_tensor(exclude, "exclude", torch.bool, device)
            if tuple(mask.shape) != (n_users, n_items):
                raise PetrecMetricError(
                    f"exclude: a boolean mask must have the scores' shape {(n_users, n_items)}, "
                    f"got {tuple(mask.shape)}"
                )
            return mask.clone()
        index = _as_tensor(exclude, "exclude", torch.long, device)
        if index.ndim != 2 or index.shape[0] != n_users:
            raise PetrecMetricError(
                f"exclude: an index tensor must have shape ({n_users}, max_history) padded with -1, "
                f"got {tuple(index.shape)}"
            )
        if index.numel() and int(index.max()) >= n_items:
            user, col = torch.nonzero(index >= n_items)[0].tolist()
            raise PetrecMetricError(
                f"exclude[{user}]: item id {int(index[user, col])} is outside [0, {n_items})"
            )
        mask = torch.zeros(n_users, n_items + 1, dtype=torch.bool, device=device)
        # padding (negative) goes to a spare last column that is dropped
        mask.scatter_(1, torch.where(index < 0, n_items, index), True)
        return mask[:, :n_items]
    if not isinstance(exclude, Sequence) or len(exclude) != n_users:
        got = len(exclude) if isinstance(exclude, Sequence) else type(exclude).__name__
        raise PetrecMetricError(
            f"exclude: expected a boolean mask, a padded index tensor or one list of item ids per "
            f"user ({n_users}), got {got}"
        )
    rows: list[int] = []
    cols: list[int] = []
    for user, items in enumerate(exclude):
        if not isinstance(items, Iterable):
            raise PetrecMetricError(f"exclude[{user}]: expected a list of item ids, got {items!r}")
        for item in items:
            item_i = int(item)
            if not 0 <= item_i < n_items:
                raise PetrecMetricError(
                    f"exclude[{user}]: item id {item_i} is outside [0, {n_items})"
                )
            rows.append(user)
            cols.append(item_i)
    mask = torch.zeros(n_users, n_items, dtype=torch.bool, device=device)
    if rows:
        mask[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    return mask


def target_ranks(
    scores: Any, targets: Any, exclude: Any = None, *, chunk_size: int = 4096
) -> torch.Tensor:
    """Pessimistic 1-based rank of each user's target among all non-excluded items.

    Args:
        scores: ``(n_users, n_items)`` scores (numpy array or torch tensor, any device).
        targets: ``(n_users,)`` integer item index of each user's target.
        exclude: Optional items to leave out of each user's candidates: a boolean
            ``(n_users, n_items)`` mask, or one iterable of item ids per user. The target
            is never excluded.
        chunk_size: Users processed at once (bounds the temporary memory).

    Returns:
        Long tensor ``(n_users,)`` on the scores' device: number of candidates scored
        ``>=`` the target (the target included).
    """
    device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
    # Comparisons within one dtype are exact, so floating scores keep theirs (no float64
    # copy of an n_users x n_items matrix); integer scores become float64.
    try:
        raw = scores if isinstance(scores, torch.Tensor) else np.asarray(scores)
    except (TypeError, ValueError) as exc:  # ragged lists
        raise PetrecMetricError(
            f"scores: expected a (n_users, n_items) array, got {type(scores).__name__} ({exc})"
        ) from exc
    floating = raw.is_floating_point() if isinstance(raw, torch.Tensor) else raw.dtype.kind == "f"
    dtype = (
        (raw.dtype if isinstance(raw, torch.Tensor) else torch.from_numpy(raw[:0]).dtype)
        if floating
        else torch.float64
    )
    s = _as_tensor(raw, "scores", dtype, device)
    if s.ndim != 2:
        raise PetrecMetricError(f"scores: expected shape (n_users, n_items), got {tuple(s.shape)}")
    n_users, n_items = s.shape
    if n_users == 0 or n_items == 0:
        raise PetrecMetricError(f"scores: empty shape {tuple(s.shape)}")
    if torch.isnan(s).any():
        where = torch.nonzero(torch.isnan(s))[0].tolist()
        raise PetrecMetricError(f"scores: nan at (user, item) = {tuple(where)}")
    t_raw = targets.detach().cpu() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    t_np = np.asarray(t_raw)
    if t_np.ndim != 1 or t_np.shape[0] != n_users:
        raise PetrecMetricError(
            f"targets: expected shape ({n_users},) (one per user), got {tuple(t_np.shape)}"
        )
    if not np.issubdtype(t_np.dtype, np.integer):
        raise PetrecMetricError(f"targets: expected integer item ids, got dtype {t_np.dtype}")
    bad = np.flatnonzero((t_np < 0) | (t_np >= n_items))
    if bad.size:
        raise PetrecMetricError(
            f"targets: item id {int(t_np[bad[0]])} for user {int(bad[0])} is outside [0, {n_items})"
        )
    t = torch.as_tensor(t_np, dtype=torch.long, device=device)
    mask = None if exclude is None else _exclusion_mask(exclude, n_users, n_items, device)
    ranks = torch.empty(n_users, dtype=torch.long, device=device)
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        block = s[start:stop]
        rows = torch.arange(stop - start, device=device)
        target_score = block[rows, t[start:stop]].unsqueeze(1)
        at_least = block >= target_score
        if mask is not None:
            keep = ~mask[start:stop]
            keep[rows, t[start:stop]] = True  # the target is never excluded
            at_least &= keep
        ranks[start:stop] = at_least.sum(dim=1)
    return ranks


def _check_ks(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if len(ks) == 0 or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 for k in ks
    ):
        raise PetrecMetricError(f"ks: expected positive integers, got {list(ks)!r}")
    return tuple(int(k) for k in ks)


def ranking_per_user(
    scores: Any,
    targets: Any,
    ks: Sequence[int] = (10, 50),
    exclude: Any = None,
) -> dict[str, torch.Tensor]:
    """Per-user HR@K, NDCG@K and MRR@K, as float tensors on the scores' device.

    Meant for distributed evaluation: gather these per-user values across processes
    (``accelerator.gather_for_metrics``), then average; see :func:`compute_ranking` for the
    arguments and policies.

    Returns:
        ``{"hr@K", "ndcg@K", "mrr@K"}`` for every K, each a float32 tensor ``(n_users,)``.
    """
    ks = _check_ks(ks)
    ranks = target_ranks(scores, targets, exclude).to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        inside = ranks <= k
        out[f"hr@{k}"] = inside.to(torch.float32)
        out[f"ndcg@{k}"] = torch.where(inside, 1.0 / torch.log2(ranks + 1.0), 0.0).to(torch.float32)
        out[f"mrr@{k}"] = torch.where(inside, 1.0 / ranks, 0.0).to(torch.float32)
    return out


def compute_ranking(
    scores: Any,
    targets: Any,
    ks: Sequence[int] = (10, 50),
    exclude: Any = None,
) -> dict[str, float]:
    """Full-ranking HR@K, NDCG@K and MRR@K with one target per user.

    Args:
        scores: ``(n_users, n_items)`` scores over **all** items (numpy or torch, any device).
        targets: ``(n_users,)`` index of each user's held-out item.
        ks: Cut-offs; any positive integer (larger than the item count is fine).
        exclude: Optional per-user items to remove from the candidates, e.g. the user's
            history: a boolean ``(n_users, n_items)`` mask, an integer ``(n_users, h)``
            index tensor padded with -1, or one list of item ids per user. The target is
            never removed.

    Returns:
        ``{"hr@K", "ndcg@K", "mrr@K"}`` for every K, averaged over users (float64 mean).
        Ties count against the target (pessimistic; see the module docstring).
    """
    ks = _check_ks(ks)
    ranks = target_ranks(scores, targets, exclude).to("cpu", torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        inside = ranks <= k
        out[f"hr@{k}"] = float(inside.double().mean())
        out[f"ndcg@{k}"] = float(torch.where(inside, 1.0 / torch.log2(ranks + 1.0), 0.0).mean())
        out[f"mrr@{k}"] = float(torch.where(inside, 1.0 / ranks, 0.0).mean())
    return out
