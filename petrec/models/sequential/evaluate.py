"""Full-ranking next-item evaluation for the sequential models, written for the Accelerate loop."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from petrec import metrics as M
from petrec.evaluation import EvalFn


def make_seq_eval(ks: tuple[int, ...] = (10, 50), exclude_history: bool = True) -> EvalFn:
    """Rank each user's target against **all** items (no sampled negatives).

    Args:
        ks: Cut-offs; the first key of the result is ``ndcg@{ks[0]}`` (the selection metric).
        exclude_history: Remove the user's history items from the candidates (the target never
            is, even when it repeats a history item).

    Returns:
        ``(model, prepared_loader, accelerator) -> {"ndcg@K", "hr@K", "mrr@K", ...}``, per-user
        values gathered with ``gather_for_metrics`` so each user counts once under DDP.
    """

    @torch.no_grad()
    def evaluate(model: nn.Module, loader: Any, accelerator: Accelerator) -> dict[str, float]:
        model.eval()
        core = accelerator.unwrap_model(model)
        per_user: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            scores = core.score_all(batch).float()
            exclude = batch["history_index"] if exclude_history else None
            values = M.ranking_per_user(scores, batch["target_index"], ks=ks, exclude=exclude)
            for name, tensor in accelerator.gather_for_metrics(values).items():
                per_user.setdefault(name, []).append(tensor.cpu())
        first = f"ndcg@{ks[0]}"
        ordered = [first, *sorted(k for k in per_user if k != first)]
        out = {name: float(torch.cat(per_user[name]).double().mean()) for name in ordered}
        out["users"] = float(sum(len(t) for t in per_user[first]))
        return out

    return evaluate
