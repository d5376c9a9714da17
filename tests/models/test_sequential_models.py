"""The uniform interface, SASRec's masking, adapters on SASRec, the frozen text path and evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

import petrec
from petrec.models.sequential import data as D
from petrec.models.sequential.baselines import Popularity
from petrec.models.sequential.evaluate import make_seq_eval
from petrec.models.sequential.run import SeqModelConfig, build_model, train_dataset
from petrec.models.sequential.sasrec import SASRec, SASRecConfig
from petrec.models.sequential.text import encode_item_texts

NAMES = ["popularity", "bpr", "gru4rec", "caser", "sasrec", "text"]


@pytest.mark.parametrize("name", NAMES)
def test_every_model_trains_and_scores_all_items(name: str) -> None:
    torch.manual_seed(0)
    data = D.cycle_data(n_users=8, n_items=7, length=9)
    cfg = SeqModelConfig(name=name, hidden=8, max_len=6, window=3)
    model = build_model(cfg, data.n_users, data.n_items, torch.randn(7, 5))
    batch = next(iter(DataLoader(train_dataset(cfg, data), batch_size=4)))
    out = model(**batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    if name != "popularity":
        out.loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    ev = next(iter(DataLoader(D.eval_dataset(data, "test", 6), batch_size=5)))
    model.eval()
    with torch.no_grad():
        scores = model.score_all(ev)
    assert scores.shape == (5, 7)


@pytest.mark.parametrize("block,init", [("pre_ln", "torch"), ("pmixer", "normal")])
def test_sasrec_is_causal_and_ignores_left_padding(block: str, init: str) -> None:
    torch.manual_seed(0)
    cfg = SASRecConfig(hidden=16, max_len=12, blocks=2, heads=2, dropout=0.0, block=block, init=init)
    model = SASRec(20, cfg).eval()
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        base = model.encode(x)
        changed = model.encode(torch.tensor([[0, 0, 3, 4, 5, 6, 7, 19]]))
        padded = model.encode(torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1))
    assert torch.equal(base[:, :-1], changed[:, :-1])  # the future never reaches the past
    assert not torch.allclose(base[:, -1], changed[:, -1])
    torch.testing.assert_close(padded[:, -6:], base[:, -6:], rtol=1e-5, atol=1e-6)
    # Padded positions carry nothing: their stream is zeroed after every block, so each comes out
    # as final_norm of the zero vector (exactly 0 here: a fresh LayerNorm's bias is 0), whatever
    # the items and however much padding precedes them.
    with torch.no_grad():
        empty = model.final_norm(torch.zeros(16))
    assert torch.count_nonzero(empty) == 0
    assert torch.equal(base[0, :2], empty.expand(2, -1)) and torch.equal(changed[0, :2], empty.expand(2, -1))
    assert torch.equal(padded[0, :6], empty.expand(6, -1))


def test_sasrec_normal_init_scales_every_table_and_keeps_padding_zero() -> None:
    torch.manual_seed(0)
    old = SASRec(500, SASRecConfig(hidden=32, max_len=200, init="torch"))
    model = SASRec(500, SASRecConfig(hidden=32, max_len=200))  # init="normal", init_std=0.02 by default
    assert old.position.weight.std() > 0.5  # nn.Embedding's N(0, 1)
    for table in (model.position.weight, model.items.table()[1:], model.blocks[0].attn.q.weight):
        assert abs(float(table.detach().std()) - 0.02) < 0.003
    assert torch.count_nonzero(model.items.table()[0]) == 0
    assert torch.count_nonzero(model.blocks[0].ffn[0].bias) == 0
    with pytest.raises(ValueError):
        SASRecConfig(block="post_ln")
    with pytest.raises(ValueError, match="accepted: normal, torch"):
        SASRecConfig(init="default")


def test_sasrec_caches_the_item_table_only_in_no_grad_eval() -> None:
    model = build_model(SeqModelConfig(name="text", hidden=8, max_len=4), 3, 10, torch.randn(10, 5))
    model.eval()
    with torch.no_grad():
        first = model.item_table()
        assert model.item_table() is first  # computed once per evaluation
    assert model.item_table() is not first  # with gradients: always fresh
    model.train()
    assert model._cache == {} and model.item_table() is not first
    assert not any("cache" in k for k in model.state_dict())


@pytest.mark.parametrize("method,kwargs,trainable", [
    ("lora", {"targets": r"blocks\.\d+\.(attn\.(q|k|v|out)|ffn\.(0|3))", "r": 4}, 2 * 6 * 4 * (16 + 16)),
    ("adapter", {"targets": r"blocks\.\d+\.(attn\.out|ffn\.3)", "reduction_factor": 4}, 2 * 2 * (16 * 4 + 4 + 4 * 16 + 16)),
])
def test_petrec_attach_reaches_sasrec_linear_layers(method: str, kwargs: dict, trainable: int) -> None:
    torch.manual_seed(0)
    model = SASRec(30, SASRecConfig(hidden=16, max_len=8, blocks=2, dropout=0.0))
    x = torch.randint(0, 31, (3, 8))
    model.eval()
    with torch.no_grad():
        before = model.score_all({"input_ids": x})
    petrec.attach(model, method, **kwargs)
    model.eval()
    with torch.no_grad():
        after = model.score_all({"input_ids": x})
    torch.testing.assert_close(after, before)  # adapters start as the identity
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    assert not any(n.startswith(("items.", "position.")) for n in names)
    model.train()
    model(input_ids=x, labels=x).loss.backward()


def test_popularity_full_ranking_with_and_without_history_exclusion() -> None:
    data = D.SeqData([np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 2])], np.array([0]), np.arange(5))
    model = Popularity(5).fit(D.item_counts(data))  # training prefix s[:9]: 0→4, 1→3, 2→2
    assert model.counts.tolist() == [4.0, 3.0, 2.0, 0.0, 0.0]
    acc = Accelerator(cpu=True)
    loader = acc.prepare(DataLoader(D.eval_dataset(data, "test", 5), batch_size=1))
    # Target 2 ranks 3rd among all items; with the history {0, 1, 2, 3} excluded but the target
    # kept, it ties with item 4 (count 0 < 2): rank 1.
    kept = make_seq_eval((1, 10), exclude_history=False)(model, loader, acc)
    assert kept["ndcg@10"] == pytest.approx(1 / math.log2(4)) and kept["hr@1"] == 0.0
    excluded = make_seq_eval((1, 10), exclude_history=True)(model, loader, acc)
    assert excluded["hr@1"] == 1.0 and excluded["users"] == 1.0
    assert next(iter(excluded)) == "ndcg@1"


def test_frozen_text_embeddings_are_cached(minilm_dir, tmp_path) -> None:
    texts = ["Digital caliper. Tools. Mitutoyo.", "Nitrile gloves. Safety.", "Nitrile gloves. Safety."]
    first = encode_item_texts(texts, minilm_dir, cache_dir=tmp_path)
    assert first.shape == (3, 384)
    torch.testing.assert_close(first[1], first[2])
    assert not torch.allclose(first[0], first[1])
    (_cache,) = tmp_path.glob("item_text_*.safetensors")
    again = encode_item_texts(texts, minilm_dir, cache_dir=tmp_path)
    assert torch.equal(first, again) and len(list(tmp_path.iterdir())) == 1


def test_eval_weights_evaluates_saved_weights_without_training(tmp_path) -> None:
    from safetensors.torch import save_file

    from petrec.models.sequential.run import SeqRunConfig, fit
    from petrec.train import TrainConfig

    data = D.cycle_data(n_users=16, n_items=6, length=8)
    cfg = SeqModelConfig(name="sasrec", hidden=8, max_len=6, dropout=0.0)
    torch.manual_seed(1)
    trained = build_model(cfg, data.n_users, data.n_items)
    path = tmp_path / "w.safetensors"
    save_file({n: p.detach().clone() for n, p in trained.named_parameters()}, str(path))
    acc = Accelerator(cpu=True)
    loader = acc.prepare(DataLoader(D.eval_dataset(data, "test", 6), batch_size=4))
    expected = make_seq_eval((10,), exclude_history=False)(trained, loader, acc)
    torch.manual_seed(2)
    run = SeqRunConfig(model=cfg, exclude_history=False, ks=[10], eval_weights=str(path),
                       train=TrainConfig(output_dir=str(tmp_path / "o"), progress=False, trackers=[]))
    got = fit(run, build_model(cfg, data.n_users, data.n_items), data)
    assert got["test"] == expected and got["steps"] == 0
