"""Every sequential baseline learns a planted pattern end to end (the shared Accelerate loop).

Sequence models (SASRec CE / BCE, GRU4Rec GRU / LSTM, Caser, the text model, the hybrid text+ID
model) get a deterministic item cycle: HR@1 of the next item must be ≥ 0.95 (chance: 1/12).
BPR-MF and popularity do not see order, so their planted patterns are a per-user favourite
item (BPR) and one globally dominant item (popularity).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petrec.models.sequential import data as D
from petrec.models.sequential.run import SeqModelConfig, SeqRunConfig, build_model, fit
from petrec.train import TrainConfig


def _cfg(tmp_path, model: SeqModelConfig, epochs: int, lr: float = 0.01, batch: int = 32) -> SeqRunConfig:
    train = TrainConfig(output_dir=str(tmp_path), epochs=epochs, batch_size=batch, eval_batch_size=256, lr=lr,
                        warmup_ratio=0.0, weight_decay=0.0, progress=False, trackers=[], log_every_steps=1000,
                        scheduler="constant")
    return SeqRunConfig(model=model, train=train, exclude_history=False, ks=[1])


CYCLE_CASES = {
    "sasrec-ce": (SeqModelConfig(name="sasrec", hidden=32, max_len=16, dropout=0.0), 6),
    "sasrec-bce": (SeqModelConfig(name="sasrec", hidden=32, max_len=16, dropout=0.0, loss="bce", negatives=4), 10),
    "gru4rec-gru": (SeqModelConfig(name="gru4rec", hidden=32, max_len=16, dropout=0.0), 6),
    "gru4rec-lstm": (SeqModelConfig(name="gru4rec", hidden=32, max_len=16, dropout=0.0, cell="lstm"), 8),
    "caser": (SeqModelConfig(name="caser", hidden=32, window=3, dropout=0.0), 3),
    "text": (SeqModelConfig(name="text", hidden=32, max_len=16, dropout=0.0), 6),
    "text-hybrid": (SeqModelConfig(name="text", hidden=32, max_len=16, dropout=0.0, id_embeddings=True), 6),
}


@pytest.mark.parametrize("case", sorted(CYCLE_CASES))
def test_sequence_models_learn_the_item_cycle(tmp_path, case: str) -> None:
    model_cfg, epochs = CYCLE_CASES[case]
    torch.manual_seed(0)
    data = D.cycle_data(n_users=256, n_items=12, length=14, seed=1)
    # Stand-in "text" embeddings: random fixed vectors (the frozen-encoder path is tested elsewhere).
    text = torch.randn(data.n_items, 24, generator=torch.Generator().manual_seed(0))
    model = build_model(model_cfg, data.n_users, data.n_items, text)
    before = fit(_cfg(tmp_path, model_cfg, 1, lr=1e-9), build_model(model_cfg, data.n_users, data.n_items, text), data)
    metrics = fit(_cfg(tmp_path / "run", model_cfg, epochs), model, data)
    assert metrics["test"]["hr@1"] >= 0.95, metrics["test"]
    assert metrics["valid_history"][-1]["hr@1"] >= 0.95
    assert before["test"]["hr@1"] < 0.5  # untrained weights are far from it: the test can fail
    assert metrics["test"]["users"] == 256


def _favourite_data(n_users: int = 128, n_items: int = 20, length: int = 12, seed: int = 0) -> D.SeqData:
    # Each user mostly picks their favourite item (u mod n_items), with 3 random other items
    # in the training prefix; valid and test targets are the favourite. No order to exploit.
    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(n_users):
        fav = u % n_items
        s = np.full(length, fav)
        s[rng.choice(length - 2, size=3, replace=False)] = rng.integers(n_items, size=3)
        seqs.append(s.astype(np.int64))
    return D.SeqData(seqs, np.arange(n_users), np.arange(n_items))


def test_bpr_learns_each_users_favourite_item(tmp_path) -> None:
    torch.manual_seed(0)
    data = _favourite_data()
    cfg = SeqModelConfig(name="bpr", hidden=16)
    metrics = fit(_cfg(tmp_path, cfg, 15, lr=0.05, batch=64), build_model(cfg, data.n_users, data.n_items), data)
    assert metrics["test"]["hr@1"] >= 0.95, metrics["test"]


def test_popularity_ranks_the_dominant_item_first(tmp_path) -> None:
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([rng.integers(1, 10, size=6), [0, 0], [0]]).astype(np.int64) for _ in range(50)]
    for s in seqs:
        s[rng.integers(0, 6, size=3)] = 0  # item 0 is by far the most frequent in training
    data = D.SeqData(seqs, np.arange(50), np.arange(10))
    model = build_model(SeqModelConfig(name="popularity"), data.n_users, data.n_items)
    metrics = fit(_cfg(tmp_path, SeqModelConfig(name="popularity"), 1), model, data)
    assert metrics["test"]["hr@1"] == 1.0
    assert metrics["trainable_params"] == 0
    counts = D.item_counts(data)
    assert int(counts.argmax()) == 0
