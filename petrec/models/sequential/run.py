"""Next-item entry point: config → sequences → model → the Accelerate loop → full-ranking test.

::

    python -m petrec.models.sequential.run --config benchmarks/suites/configs/ml1m_sasrec.yaml
    python -m petrec.models.sequential.run --data.dataset scientific --model.name sasrec --train.epochs 50

Writes ``metrics.json`` (valid history, test metrics, trainable / total parameters, peak
memory, throughput, wall time), ``config.yaml`` and ``model.safetensors`` (final weights)
into ``train.output_dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from petrec.config import ConfigError, load_config, to_dict
from petrec.files import atomic_path, write_json_atomic, write_text_atomic
from petrec.models.sequential import data as D
from petrec.models.sequential.baselines import BPRMF, Popularity
from petrec.models.sequential.caser import Caser
from petrec.models.sequential.evaluate import make_seq_eval
from petrec.models.sequential.rnn import GRU4Rec
from petrec.models.sequential.sasrec import SASRec, SASRecConfig
from petrec.models.sequential.text import TextItemEmbedding, encode_item_texts
from petrec.train import TrainConfig, make_accelerator, train

MODELS = ("popularity", "bpr", "gru4rec", "caser", "sasrec", "text")


@dataclass
class SeqDataConfig:
    """Which interactions become sequences."""

    dataset: str = "ml-1m"
    """ml-1m (P3), scientific (P4) or cycle (planted deterministic item cycle, for tests)."""
    data_dir: str | None = None
    """Folder holding the dataset folders; None → $PETREC_DATA_DIR."""
    min_item_interactions: int | None = None
    """Drop rarer items (counted once); None → the protocol's value (ml-1m 5, scientific 0)."""
    users: str = "all"
    """all, even or odd: keep users at even / odd positions of the sorted user ids (transfer split)."""
    cycle_users: int = 64
    """cycle dataset: users."""
    cycle_items: int = 12
    """cycle dataset: items."""

    def __post_init__(self) -> None:
        if self.dataset not in ("ml-1m", "scientific", "cycle"):
            raise ValueError(f"data.dataset={self.dataset!r}; accepted: ml-1m, scientific, cycle")
        if self.users not in ("all", "even", "odd"):
            raise ValueError(f"data.users={self.users!r}; accepted: all, even, odd")


@dataclass
class SeqModelConfig:
    """Which model and its shape."""

    name: str = "sasrec"
    """popularity, bpr, gru4rec, caser, sasrec (ID) or text (SASRec over frozen item-text embeddings)."""
    hidden: int = 64
    """Embedding / model width."""
    max_len: int = 200
    """Most recent history items read by sequence models."""
    blocks: int = 2
    """SASRec / text: transformer blocks."""
    heads: int = 1
    """SASRec / text: attention heads."""
    dropout: float = 0.2
    """Dropout rate."""
    loss: str = "ce"
    """SASRec: ce (all items) or bce (sampled negatives)."""
    negatives: int = 1
    """SASRec bce: negatives per position."""
    init: str = "normal"
    """SASRec / text: normal (every weight N(0, init_std), zero biases: the RecSys 2023 code) or
    torch (torch's inits, position table N(0, 1); the default before 2026-11-28)."""
    init_std: float = 0.02
    """SASRec / text: standard deviation of init=normal."""
    block: str = "pre_ln"
    """SASRec / text: pre_ln (standard pre-norm block) or pmixer (SASRec.pytorch's block)."""
    cell: str = "gru"
    """GRU4Rec: gru or lstm."""
    layers: int = 1
    """GRU4Rec: recurrent layers."""
    window: int = 5
    """Caser: last L items convolved."""
    id_embeddings: bool = False
    """text: add learned item-ID embeddings to the text embeddings (hybrid)."""
    text_model: str | None = None
    """text: local encoder folder; None → MiniLM-L6 (petrec.paths.minilm_path)."""
    text_max_length: int = 32
    """text: token budget per item text for the frozen encoder."""
    text_cache_dir: str = "/tmp/petrec_text_cache"
    """text: where the frozen item-text embeddings are cached."""
    init_from: str = ""
    """Start from these weights (a run's ``model.safetensors``); "" = random initialisation."""
    method: str = "full"
    """full (train everything), lora or adapter (``petrec.attach`` on the transformer blocks; the
    text adaptor stays trainable as the head)."""
    lora_r: int = 8
    """lora: rank."""
    adapter_reduction: int = 4
    """adapter: bottleneck width = hidden // adapter_reduction."""

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"model.name={self.name!r}; accepted: {', '.join(MODELS)}")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"model.cell={self.cell!r}; accepted: gru, lstm")
        if min(self.hidden, self.max_len, self.window, self.layers, self.lora_r, self.adapter_reduction) < 1:
            raise ValueError("model.hidden, max_len, window, layers, lora_r and adapter_reduction must be ≥ 1")
        if self.method not in ("full", "lora", "adapter"):
            raise ValueError(f"model.method={self.method!r}; accepted: full, lora, adapter")
        if self.method != "full" and self.name not in ("sasrec", "text"):
            raise ValueError(f"model.method={self.method!r} needs a transformer model (sasrec or text)")


@dataclass
class SeqRunConfig:
    """One next-item run."""

    data: SeqDataConfig = field(default_factory=SeqDataConfig)
    """Sequences."""
    model: SeqModelConfig = field(default_factory=SeqModelConfig)
    """Model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation (the shared Accelerate loop)."""
    exclude_history: bool = True
    """Remove history items from each user's ranking (the target never is)."""
    ks: list[int] = field(default_factory=lambda: [10, 50])
    """Cut-offs; the first selects the best epoch via NDCG."""
    evaluate_test: bool = True
    """Evaluate the best weights on the test targets."""
    threads: int = 0
    """torch intra-op threads; 0 = torch's default (1 is faster on a CPU shared with other jobs)."""
    eval_weights: str = ""
    """Skip training: load these trained weights (e.g. an interrupted run's
    ``best_trainable.safetensors``) over the built model and evaluate valid and test."""


def load_sequences(cfg: SeqDataConfig) -> D.SeqData:
    """The configured sequences (with the even / odd user selection applied)."""
    if cfg.dataset == "cycle":
        data = D.cycle_data(cfg.cycle_users, cfg.cycle_items)
    else:
        data = D.load(cfg.dataset, cfg.data_dir, cfg.min_item_interactions)
    if cfg.users != "all":
        data = data.subset(np.arange(data.n_users)[(0 if cfg.users == "even" else 1)::2])
    return data


def item_texts(cfg: SeqDataConfig, data: D.SeqData) -> list[str]:
    """Catalogue text of every item code, through the petrec.data readers."""
    from petrec.data import DataConfig, load_tables

    if cfg.dataset == "cycle":
        return [f"item number {i}" for i in range(data.n_items)]
    items = load_tables(DataConfig(dataset=cfg.dataset, data_dir=cfg.data_dir)).items
    text = dict(zip(items["item_id"].astype(str), items["text"].astype(str), strict=True))
    missing = [i for i in data.item_ids if str(i) not in text]
    if missing:
        raise D.SeqDataError(f"{len(missing)} item(s) have no catalogue text, e.g. {missing[0]!r}")
    return [text[str(i)] for i in data.item_ids]


def build_model(cfg: SeqModelConfig, n_users: int, n_items: int,
                text_embeddings: torch.Tensor | None = None) -> nn.Module:
    """A model of the uniform interface (``forward(**batch).loss``, ``score_all(batch)``)."""
    if cfg.name == "popularity":
        return Popularity(n_items)
    if cfg.name == "bpr":
        return BPRMF(n_users, n_items, cfg.hidden)
    if cfg.name == "gru4rec":
        return GRU4Rec(n_items, cfg.hidden, cfg.layers, cfg.dropout, cfg.cell)
    if cfg.name == "caser":
        return Caser(n_users, n_items, cfg.hidden, cfg.window, dropout=cfg.dropout)
    sas = SASRecConfig(cfg.hidden, cfg.max_len, cfg.blocks, cfg.heads, cfg.dropout, cfg.loss, cfg.negatives,
                       init=cfg.init, init_std=cfg.init_std, block=cfg.block)
    if cfg.name == "sasrec":
        return SASRec(n_items, sas)
    if text_embeddings is None:
        raise ValueError("model.name='text' needs the item-text embeddings")
    return SASRec(n_items, sas, TextItemEmbedding(text_embeddings, cfg.hidden, cfg.id_embeddings, cfg.dropout))


LORA_TARGETS = r"blocks\.\d+\.(attn\.(q|k|v|out)|ffn\.(0|3))"
ADAPTER_TARGETS = r"blocks\.\d+\.(attn\.out|ffn\.3)"


def init_and_adapt(model: nn.Module, cfg: SeqModelConfig) -> nn.Module:
    """Load ``cfg.init_from`` (every key must match in name and shape), then attach ``cfg.method``."""
    if cfg.init_from:
        from safetensors.torch import load_file

        state = load_file(cfg.init_from)
        own = model.state_dict()
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if bad or missing:
            raise ValueError(f"model.init_from={cfg.init_from}: mismatched keys {bad[:5]}, missing {missing[:5]}")
        model.load_state_dict(state)
    if cfg.method != "full":
        import petrec

        head = "items" if cfg.name == "text" else None
        if cfg.method == "lora":
            petrec.attach(model, "lora", targets=LORA_TARGETS, head=head, r=cfg.lora_r, alpha=2 * cfg.lora_r)
        else:
            petrec.attach(model, "adapter", targets=ADAPTER_TARGETS, head=head, reduction_factor=cfg.adapter_reduction)
    return model


def train_dataset(cfg: SeqModelConfig, data: D.SeqData) -> Dataset:
    """The training rows each model reads (never the valid / test positions)."""
    if cfg.name == "bpr":
        return D.pair_dataset(data)
    if cfg.name == "caser":
        return D.window_dataset(data, cfg.window)
    return D.sequence_dataset(data, cfg.max_len)


def param_counts(model: nn.Module) -> dict[str, Any]:
    """Trainable / total parameters and the trainable share in percent."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total,
            "trainable_percent": 100.0 * trainable / total if total else 0.0}


def fit(cfg: SeqRunConfig, model: nn.Module, data: D.SeqData, *, test_data: D.SeqData | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data``'s training prefixes, select on valid, evaluate test; return metrics."""
    accelerator = make_accelerator(cfg.train)
    evaluate_fn = make_seq_eval(tuple(cfg.ks), cfg.exclude_history)
    ev = cfg.train.eval_batch_size

    def eval_loader(split: str) -> DataLoader:
        return DataLoader(D.eval_dataset(test_data or data, split, cfg.model.max_len), batch_size=ev)

    tick = time.perf_counter()
    if isinstance(model, Popularity) or cfg.eval_weights:
        if isinstance(model, Popularity):
            model.fit(D.item_counts(data))
        else:
            from safetensors.torch import load_file

            state = load_file(cfg.eval_weights)
            params = dict(model.named_parameters())
            unknown = [k for k in state if k not in params]
            if unknown:
                raise ValueError(f"eval_weights={cfg.eval_weights}: unknown parameters {unknown[:5]}")
            with torch.no_grad():
                for name, value in state.items():
                    params[name].copy_(value)
        valid = evaluate_fn(model, accelerator.prepare(eval_loader("valid")), accelerator)
        result_info: dict[str, Any] = {"valid_history": [valid], "steps": 0, "train_seconds": 0.0,
                                       "train_samples_per_s": 0.0, "peak_memory": {}}
    else:
        loader = DataLoader(train_dataset(cfg.model, data), batch_size=cfg.train.batch_size, shuffle=True,
                            num_workers=cfg.train.num_workers)
        result = train(model, loader, eval_loader("valid"), cfg.train, evaluate_fn=evaluate_fn,
                       accelerator=accelerator, tracker_config=to_dict(cfg))
        result_info = {"valid_history": result.valid_history, "steps": result.global_step,
                       "best_step": result.best_step, "best_valid": result.best_metric,
                       "train_seconds": result.train_seconds, "train_samples_per_s": result.train_samples_per_s,
                       "peak_memory": result.peak_memory, "stopped_early": result.stopped_early,
                       "time_budget_hit": result.time_budget_hit}
    test: dict[str, float] = {}
    infer_s = 0.0
    if cfg.evaluate_test:
        t0 = time.perf_counter()
        test = evaluate_fn(model, accelerator.prepare(eval_loader("test")), accelerator)
        infer_s = time.perf_counter() - t0
    core = accelerator.unwrap_model(model)
    return {"test": test, **result_info, **param_counts(core), "test_eval_seconds": infer_s,
            "wall_seconds": time.perf_counter() - tick, "n_users": data.n_users, "n_items": data.n_items,
            "n_interactions": data.n_interactions, "exclude_history": cfg.exclude_history,
            "torch_threads": torch.get_num_threads()}


def save_weights(model: nn.Module, path: Path) -> None:
    """All parameters (not buffers) as safetensors, atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``--config`` + dotted overrides, run, write ``metrics.json``; returns the metrics."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with data / model / train sections")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    cfg = load_config(SeqRunConfig, args.config, overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    data = load_sequences(cfg.data)
    text = None
    if cfg.model.name == "text":
        text = encode_item_texts(item_texts(cfg.data, data), cfg.model.text_model,
                                 max_length=cfg.model.text_max_length, cache_dir=cfg.model.text_cache_dir)
    torch.manual_seed(cfg.train.seed)
    model = init_and_adapt(build_model(cfg.model, data.n_users, data.n_items, text), cfg.model)
    metrics = fit(cfg, model, data)
    metrics["config"] = to_dict(cfg)
    save_weights(model, out / "model.safetensors")
    write_json_atomic(out / "metrics.json", metrics, default=float)
    print(json.dumps({"test": metrics["test"], **{k: metrics[k] for k in ("trainable_params", "wall_seconds")}}))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, ValueError) as exc:
        sys.exit(f"error: {exc}")
