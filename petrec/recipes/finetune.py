"""Fine-tune a behaviour model with one PEFT method: config → data → model → train → evaluate → save.

Launch it the Accelerate way, on a CPU, one GPU or many::

    accelerate launch recipes/finetune.py                              # quick-start (synthetic world, MiniLM, LoRA)
    accelerate launch recipes/finetune.py --config recipes/configs/ml100k_ctr_lora.yaml --train.lr 3e-4
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --config ...

Every config value can be overridden with a dotted flag (``--train.lr 3e-4``,
``--model.method dora``, ``--data.few_shot_k 64``). The output folder receives
``config.yaml`` (what ran), ``adapter/`` (only what was trained), ``metrics.json``
(valid / test metrics, trainable parameters, peak memory, samples/s, wall time) and
``train_log.jsonl``.

Continual fine-tuning: ``--init_adapter OUTPUT_DIR_OF_AN_EARLIER_RUN`` starts from that run's
trained adapter and head instead of fresh ones (same base, method and task).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

import petrec
from petrec.collate import LABEL_COLUMN, BehaviourCollator, ItemCollator, longest_first
from petrec.config import ConfigError, load_config, read_yaml, to_dict
from petrec.data import DataConfig, DataError, prepare, tokenize_examples, tokenize_items
from petrec.data.exposure import annotate_splits
from petrec.data.features import BehaviourStats
from petrec.debias import DEBIAS_COLUMNS, DebiasConfig
from petrec.evaluation import evaluator_for
from petrec.files import write_json_atomic, write_text_atomic
from petrec.methods.errors import AdapterLoadError
from petrec.methods.io import (
    META_FILE,
    TENSORS_FILE,
    check_adapter_folder,
    load_adapter_weights,
    read_meta,
)
from petrec.models import BehaviourModel, ModelConfig, PetrecModelError, build_model, load_tokenizer
from petrec.models.collab import COLLAB_COLUMNS, CollabSpec
from petrec.models.sequential.ctr import SequenceCTR
from petrec.paths import resolve_model
from petrec.recipes.collab import (
    MIN_FIT_EXAMPLES,
    fit_id_model,
    heldout_rows,
    id_model_metrics,
    id_model_scores,
)
from petrec.train import TrainConfig, make_accelerator, train


# ---------------------------------------------------------------------------- config
@dataclass
class FinetuneConfig:
    """One fine-tuning run. Its defaults *are* the quick-start (recipes/configs/quickstart.yaml),
    except the quick-start's 2,000-example training sample (:data:`QUICKSTART_DEFAULTS`), which
    applies only when no ``--config`` is given: a config file never inherits a cap on its data."""

    data: DataConfig = field(default_factory=lambda: DataConfig(history_len=5))
    """Which behaviour log, task, protocol and text template."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone, pooling, head, PEFT method and quantization."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(output_dir="outputs/quickstart", epochs=2, lr=2e-3, head_lr=1e-2)
    )
    """Optimisation, evaluation and checkpointing."""
    debias: DebiasConfig = field(default_factory=DebiasConfig)
    """Debiased (IPS / SNIPS) test metrics and popularity / cold-start breakdowns (petrec.debias)."""
    max_length: int = 64
    """Token budget of one rendered example (the oldest history items are dropped first)."""
    item_max_length: int = 32
    """Token budget of one item's text (next-item models embed items from text)."""
    evaluate_test: bool = True
    """Evaluate the best weights on the test split at the end."""
    prior_stats: Literal["block", "train"] = "block"
    """With ``model.behaviour_prior``: count the item / user statistics over the whole training
    split before any ``few_shot_k`` / ``max_train_examples`` sampling (``block``, as the count
    baselines of the benchmark do) or over the sampled training examples only (``train``).
    Either way no valid or test label is read."""
    prior_warm_start: bool = True
    """With ``model.behaviour_prior``: start the prior head's linear branch from a logistic (ctr) /
    ridge (rating) regression fitted on the training examples' features, then train it jointly
    with the adapter (two stages)."""
    collab_fit: Literal["heldout", "train"] = "heldout"
    """With ``model.collab_tokens``: the examples the ID model is fitted on (:mod:`petrec.recipes.collab`):
    ``heldout`` = the training block's examples the language model does not train on (its own
    examples' tokens then come from a model that never saw their labels); ``train`` = the language
    model's own training examples. Either way no valid or test label is read."""
    collab_schedule: Literal["joint", "two_stage"] = "joint"
    """With ``model.collab_tokens``: ``joint`` trains the token projector together with the method's
    adapter and head; ``two_stage`` (CoLLM's schedule) first trains the adapter and head on the text
    alone (tokens left out, ``train.epochs``), then freezes them and trains the projector with the
    tokens in (``collab_projector_epochs``). The checkpoint kept is stage 2's best by validation;
    metrics.json's ``collab.stage1`` holds stage 1's best (the text-only model of the same run)."""
    collab_projector_epochs: int | None = None
    """``collab_schedule: two_stage``: epochs of stage 2 (None = ``train.epochs``)."""
    init_adapter: str | None = None
    """Continual fine-tuning: start from an earlier run's trained weights instead of fresh ones. A run
    folder (holding ``adapter/``) or a saved adapter folder (holding ``petrec_adapter.json``) of the
    same base model, method (same options) and task; its tensors (adapter and head) are loaded into
    the freshly built model before training, so ``train.epochs 0`` scores what that run scored. The
    optimizer, schedule and step count start afresh (``train.resume`` continues an interrupted run
    instead). metrics.json records the adapter folder; a mismatch fails before training."""

    def __post_init__(self) -> None:
        if self.max_length < 8 or self.item_max_length < 4:
            raise ValueError("max_length must be ≥ 8 and item_max_length ≥ 4")
        if self.data.task != self.model.task:
            raise ValueError(f"data.task={self.data.task!r} and model.task={self.model.task!r} differ")
        if self.collab_schedule == "two_stage" and not self.model.collab_tokens:
            raise ValueError("collab_schedule: two_stage needs model.collab_tokens: true")
        if self.collab_schedule == "two_stage" and not self.model.collab_prompt_tokens:
            raise ValueError("collab_schedule: two_stage trains the soft tokens' projector in stage 2; "
                             "model.collab_prompt_tokens: false has none")
        if self.model.lm_target == "residual" and self.model.collab_in_fusion and self.collab_fit == "train":
            raise ValueError("model.lm_target: residual with model.collab_in_fusion needs collab_fit: heldout: the "
                             "offset on a training example must come from an ID model that never trained on it "
                             "(collab_fit: train would hand the language model an over-confident offset)")
        if self.collab_projector_epochs is not None and (
                isinstance(self.collab_projector_epochs, bool) or not isinstance(self.collab_projector_epochs, int)
                or self.collab_projector_epochs < 1):
            raise ValueError(f"collab_projector_epochs: expected an integer ≥ 1 or null, got "
                             f"{self.collab_projector_epochs!r}")


#: What running the recipe without ``--config`` adds to :class:`FinetuneConfig`'s defaults. Until
#: 2026-11-28 the cap was a dataclass default, so every config file that did not name
#: ``max_train_examples`` silently trained on 2,000 sampled examples (ML-100K P1 "full": 2,000 of
#: 8,000), while the bench's statistics baselines used all of them.
QUICKSTART_DEFAULTS: dict = {"data": {"max_train_examples": 2000}}


def parse_args(argv: list[str]) -> tuple[FinetuneConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: the quick-start)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/checkpoint (same as --train.resume true)")
    args, overrides = parser.parse_known_args(argv)
    if args.resume:
        overrides = [*overrides, "--train.resume", "true"]
    defaults = None if args.config else QUICKSTART_DEFAULTS
    return load_config(FinetuneConfig, args.config, overrides, defaults=defaults), args.print_config


def resolve_init_adapter(cfg: FinetuneConfig) -> Path | None:
    """The adapter folder ``init_adapter`` names, checked against this run's config before any model loads.

    Checks here: the folder holds a complete adapter of ``model.method``; when it sits in a run (or
    export) folder, that folder's ``config.yaml`` names the same ``model.task`` and ``model.backbone``.
    The options, targets, head and base fingerprint are checked when the tensors load
    (:func:`petrec.methods.io.load_adapter_weights`).

    Raises:
        ConfigError: One line naming the path (or file) and what was expected.
    """
    if cfg.init_adapter is None:
        return None
    given = Path(cfg.init_adapter)
    expected = f"expected a run folder (with adapter/) or a saved adapter folder (with {META_FILE})"
    if not given.exists():
        raise ConfigError(f"init_adapter: {str(given)!r} does not exist; {expected}")
    if (given / "adapter").is_dir():
        folder = given / "adapter"
    elif (given / META_FILE).is_file():
        folder = given
    else:
        raise ConfigError(f"init_adapter: {str(given)!r} holds no adapter (neither adapter/ nor {META_FILE}); "
                          f"{expected}")
    run_dir = folder.parent if folder.name == "adapter" else None
    if run_dir is not None and run_dir.resolve() == Path(cfg.train.output_dir).resolve():
        raise ConfigError(f"init_adapter: {str(given)!r} is this run's own train.output_dir (its adapter and "
                          "metrics would be overwritten); expected an earlier run's folder: write the new run "
                          "to another train.output_dir")
    try:
        check_adapter_folder(folder)
        meta = read_meta(folder)
    except AdapterLoadError as exc:
        raise ConfigError(f"init_adapter: {exc}") from None
    if meta["method"] != cfg.model.method:
        raise ConfigError(f"init_adapter: {folder / META_FILE}: adapter method is {meta['method']!r}, "
                          f"expected this run's model.method {cfg.model.method!r}")
    config_file = run_dir / "config.yaml" if run_dir is not None else None
    if config_file is not None and config_file.is_file():
        raw = read_yaml(config_file)
        model = raw.get("model") if isinstance(raw, Mapping) else None
        model = model if isinstance(model, Mapping) else {}
        if model.get("task") not in (None, cfg.model.task):
            raise ConfigError(f"init_adapter: {config_file}: the adapter was trained for model.task "
                              f"{model['task']!r}, expected this run's {cfg.model.task!r}")
        if model.get("backbone") is not None and not _same_backbone(str(model["backbone"]), cfg.model.backbone):
            raise ConfigError(f"init_adapter: {config_file}: the adapter was trained on model.backbone "
                              f"{model['backbone']!r}, expected this run's {cfg.model.backbone!r}")
    return folder


def _same_backbone(a: str, b: str) -> bool:
    """Whether two ``model.backbone`` values name the same model (an alias and its folder do)."""
    if a == b:
        return True
    try:
        return os.path.realpath(resolve_model(a)) == os.path.realpath(resolve_model(b))
    except (OSError, ValueError):  # a name that no longer resolves (a moved folder) is simply not the same
        return False


def load_init_adapter(model: BehaviourModel, folder: Path) -> None:
    """Load the checked adapter folder's tensors into the built model (the warm start).

    Raises:
        ConfigError: Options, targets, head, base or tensor shapes differ (one line naming the file).
    """
    from safetensors import SafetensorError

    try:
        load_adapter_weights(model, folder)
    except AdapterLoadError as exc:
        raise ConfigError(f"init_adapter: {exc}") from None
    except SafetensorError as exc:
        raise ConfigError(f"init_adapter: {folder / TENSORS_FILE}: not a readable safetensors "
                          f"file ({exc}); expected the complete file petrec.save_adapter wrote") from None


class _TrainingBlock:
    """The training split before ``few_shot_k`` / ``max_train_examples`` sampling, prepared once when first asked."""

    def __init__(self, data_cfg: DataConfig) -> None:
        self._cfg = data_cfg.unsampled()
        self._split: object | None = None

    def get(self) -> object:
        if self._split is None:
            self._split = prepare(self._cfg).splits["train"]
        return self._split


def fit_behaviour_stats(cfg: FinetuneConfig, train_split: object, block: _TrainingBlock | None = None
                        ) -> BehaviourStats:
    """Statistics of the prior path: counts over the training block (or examples), scaler on the examples."""
    block = block or _TrainingBlock(cfg.data)
    counted = block.get() if cfg.prior_stats == "block" and cfg.data.sampled else train_split
    return BehaviourStats.fit(counted, cfg.data.task, scaler_rows=train_split)


def fit_residual_offset(model: Any, train_rows: Any, task: str, id_part: tuple[Any, Any, Any] | None
                        ) -> tuple[float, float]:
    """``model.lm_target: residual``: fit and store the offset ``prior + w * id + b`` on the training rows.

    The prior scores the rows' leave-one-out features (their own label is not in their counts);
    the ID model (``id_part``: model, spec, the unrendered training split) was fitted outside
    them (``collab_fit: heldout``). ``w`` and ``b`` are a logistic (ctr) / least-squares (rating)
    fit of the labels with the prior as the offset, :func:`petrec.fusion.fit_fusion_weights`.
    Without the ID model the offset is the prior itself (``w = b = 0``): the warm start already
    fitted it to these rows.

    Returns:
        ``(w, b)`` as stored in the prior head.
    """
    weight, bias = 0.0, 0.0
    if id_part is not None:
        import torch

        from petrec.fusion import fit_fusion_weights

        with torch.no_grad():
            prior = model.prior(torch.as_tensor(np.asarray(train_rows["features"]),
                                                dtype=model.prior.linear.weight.dtype)).float().numpy()
        id_model, spec, examples = id_part
        _, id_logits = id_model_scores(id_model, spec, examples)
        if len(id_logits) != len(prior):
            raise PetrecModelError(f"residual offset: {len(id_logits)} ID-model scores for {len(prior)} training rows")
        target = np.asarray(train_rows[LABEL_COLUMN[task]], dtype=float)
        weights, bias = fit_fusion_weights(id_logits.reshape(-1, 1), prior, target, task)
        weight = float(weights[0])
    model.prior.set_residual(weight, bias)
    return weight, bias


def fit_collab(cfg: FinetuneConfig, train_split: object, block: _TrainingBlock | None = None
               ) -> tuple[SequenceCTR, CollabSpec]:
    """The ID model of the collaborative tokens, fitted on the examples ``collab_fit`` names.

    Raises:
        ConfigError: ``heldout`` with no training examples outside the language model's own.
    """
    examples = train_split
    if cfg.collab_fit == "heldout":
        examples = heldout_rows((block or _TrainingBlock(cfg.data)).get(), train_split, cfg.data)
        if len(examples) < MIN_FIT_EXAMPLES:
            raise ConfigError(
                f"collab_fit: heldout leaves {len(examples)} training examples outside the {len(train_split)} the "
                f"language model trains on (at least {MIN_FIT_EXAMPLES} needed): sample the training split "
                "(data.few_shot_k / data.max_train_examples) or set collab_fit: train (the ID model then "
                "sees the language model's own training labels)"
            )
    return fit_id_model(examples, encoder=cfg.model.collab_encoder, hidden=cfg.model.collab_dim,
                        history_len=cfg.data.history_len, seed=cfg.train.seed, fit=cfg.collab_fit)


def _add_columns(split: object, columns: Mapping[str, list]) -> object:
    for name, values in columns.items():
        split = split.add_column(name, values)
    return split


# ---------------------------------------------------------------------------- run
def main(argv: list[str] | None = None) -> dict:
    cfg, print_only = parse_args(sys.argv[1:] if argv is None else argv)
    if print_only:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return {}
    init_folder = resolve_init_adapter(cfg)  # before anything is written: it may read an earlier config.yaml
    accelerator = make_accelerator(cfg.train)
    out = Path(cfg.train.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))

    # 1. Data: read + validate + split + build examples, then render and tokenise (cached).
    tokenizer = load_tokenizer(cfg.model)
    with accelerator.main_process_first():
        data = prepare(cfg.data)
        # task= renders a rating model's history with its ratings (left out, rating runs were
        # trained on like / dislike prompts while `petrec evaluate` rendered ratings).
        splits = tokenize_examples(data.splits, tokenizer, max_length=cfg.max_length, items=data.items,
                                   template=cfg.data.template, task=cfg.data.task)
        item_tokens = (tokenize_items(data.items, tokenizer, max_length=cfg.item_max_length)
                       if cfg.data.task == "next_item" else None)
        block = _TrainingBlock(cfg.data)  # prepared only if the prior or the tokens need it
        if cfg.model.behaviour_prior:  # the prior path: behaviour features from the training split only
            stats = fit_behaviour_stats(cfg, data.splits["train"], block)
            # training rows leave their own label out of the item counts (petrec.data.features)
            splits = {name: split.add_column("features", stats.features(split, leave_one_out=name == "train").tolist())
                      for name, split in splits.items()}
            if accelerator.is_main_process:
                stats.save(out)
        collab = None
        if cfg.model.collab_tokens:  # the ID model, from training examples only (petrec.recipes.collab)
            id_model, collab = fit_collab(cfg, data.splits["train"], block)
            columns = {name: collab.columns(split) for name, split in data.splits.items()}
            splits = {name: _add_columns(split, columns[name]) for name, split in splits.items()}
            if accelerator.is_main_process:
                collab.save(out)
            # The ID model alone, as a reference beside the run (labels read for this number only).
            id_alone = id_model_metrics(id_model, collab, data.splits)
        splits = annotate_splits(splits, data, cfg.data, cfg.debias, train_weights=cfg.train.ips_weighting)
    accelerator.print(f"data: {', '.join(f'{k}={len(v)}' for k, v in splits.items())}")

    # 2. Model: frozen backbone + PEFT method + task head (seeded: same init on every run).
    set_seed(cfg.train.seed)
    model = build_model(cfg.model, collab=collab)
    if collab is not None:  # the fitted ID model (frozen unless model.collab_tune)
        model.collab.id_model.load_state_dict(id_model.state_dict())
        accelerator.print(f"collaborative tokens: {cfg.model.collab_encoder} fitted on {collab.fitted_on} examples "
                          f"({cfg.collab_fit}), held-out AUC {collab.id_metrics.get('auc', float('nan')):.4f}")
    if init_folder is not None:  # continual fine-tuning: the earlier run's adapter and head
        load_init_adapter(model, init_folder)
        accelerator.print(f"warm start from {init_folder}")
    elif cfg.model.behaviour_prior and cfg.prior_warm_start:  # stage one: the count model
        train_rows = splits["train"]
        model.prior.warm_start(np.asarray(train_rows["features"]),
                               np.asarray(train_rows[LABEL_COLUMN[cfg.data.task]], dtype=float), cfg.data.task)
    stacked = cfg.model.prior_fusion == "stacked"  # ModelConfig refuses it without behaviour_prior
    if stacked:  # the fitted count model stays fixed; the mix is fitted on validation (petrec.fusion)
        model.prior.freeze_fit()
    offset = None
    if cfg.model.lm_target == "residual":  # the language model trains beside this fixed offset
        offset = fit_residual_offset(model, splits["train"], cfg.data.task,
                                     (id_model, collab, data.splits["train"]) if cfg.model.collab_in_fusion else None)
        accelerator.print(f"residual target: offset = prior + {offset[0]:.3f} * id + {offset[1]:.3f} "
                          "(fitted on the training examples)")
    accelerator.print(petrec.trainable_report(model))
    if cfg.model.pooling == "auto" and accelerator.is_main_process:
        # Record what "auto" resolved to, so reloading this run never depends on the rule.
        written = to_dict(cfg)
        written["model"]["pooling"] = model.pooling
        write_text_atomic(out / "config.yaml", yaml.safe_dump(written, sort_keys=False))

    # 3. Loaders.
    item_loader, collate_kwargs = None, {}
    if item_tokens is not None:  # next-item: the catalogue, embedded once per evaluation
        collate_kwargs = {"item_index": {i: n for n, i in enumerate(data.items["item_id"])},
                          "item_tokens": item_tokens["input_ids"]}
        item_loader = DataLoader(list(item_tokens["input_ids"]), batch_size=cfg.train.eval_batch_size,
                                 collate_fn=ItemCollator(tokenizer.pad_token_id, tokenizer.padding_side))
    collate = BehaviourCollator(cfg.data.task, tokenizer.pad_token_id, tokenizer.padding_side, **collate_kwargs)
    columns = ["input_ids", "label", "rating", "item_id", "history_item_ids", "features", *COLLAB_COLUMNS,
               *DEBIAS_COLUMNS]

    def loader(split: str, shuffle: bool) -> DataLoader:
        ds = splits[split].select_columns([c for c in columns if c in splits[split].column_names])
        if not shuffle and cfg.train.eval_sort_by_length:  # evaluation: less padding per batch
            ds = longest_first(ds)
        bs = cfg.train.batch_size if shuffle else cfg.train.eval_batch_size
        return DataLoader(ds, batch_size=bs, shuffle=shuffle, collate_fn=collate, num_workers=cfg.train.num_workers)

    # 4. Train with early stopping on the validation split; the best adapter is saved as it improves.
    evaluate_fn = evaluator_for(cfg.data.task, item_loader)
    # Stacked fusion fits its mix on the validation split at every evaluation, never on test.
    valid_fn = functools.partial(evaluate_fn, calibrate=True) if stacked else evaluate_fn
    stage1 = None
    if cfg.collab_schedule == "two_stage":  # stage 1: the text alone, in its own folder (no adapter saved)
        model.collab_stage(1)
        stage1 = train(model, loader("train", True), loader("valid", False),
                       dataclasses.replace(cfg.train, output_dir=str(out / "stage1")), evaluate_fn=valid_fn,
                       accelerator=accelerator, tracker_config=to_dict(cfg))
        accelerator.print(f"stage 1 (text alone): best valid {cfg.train.metric_for_best} {stage1.best_metric} "
                          f"at step {stage1.best_step}; stage 2 trains the token projector")
        model.collab_stage(2)
    stage_cfg = cfg.train if stage1 is None else dataclasses.replace(
        cfg.train, epochs=cfg.collab_projector_epochs or cfg.train.epochs)
    result = train(model, loader("train", True), loader("valid", False), stage_cfg, evaluate_fn=valid_fn,
                   accelerator=accelerator, save_best=petrec.save_adapter, tracker_config=to_dict(cfg))
    if stage1 is not None:
        accelerator.unwrap_model(model).restore_trainable()

    # 5. Test the best weights; time inference.
    test_metrics, infer_per_s = {}, 0.0
    if cfg.evaluate_test:
        tick = time.perf_counter()
        test_metrics = evaluate_fn(model, accelerator.prepare(loader("test", False)), accelerator)
        infer_per_s = len(splits["test"]) / (time.perf_counter() - tick)

    # 6. Save: the adapter (only what was trained) and every measurement.
    report = petrec.trainable_report(accelerator.unwrap_model(model))
    metrics = {
        # Validation metrics of the weights that were kept (the best evaluation, not the last).
        "valid": next((h for h in result.valid_history if h["step"] == result.best_step), {}),
        "valid_best": {"metric": cfg.train.metric_for_best, "value": result.best_metric, "step": result.best_step},
        "test": test_metrics,
        "examples": {split: len(rows) for split, rows in splits.items()},
        "trainable_params": report.trainable,
        "total_params": report.total,
        "trainable_percent": report.percent,
        "peak_memory": result.peak_memory,
        "train_samples_per_s": result.train_samples_per_s,
        "inference_samples_per_s": infer_per_s,
        "steps": result.global_step,
        "stopped_early": result.stopped_early,
        "time_budget_hit": result.time_budget_hit,
        "wall_seconds": result.wall_seconds,
        "num_processes": accelerator.num_processes,
        # The adapter this run started from (continual fine-tuning); None = fresh weights.
        "init_adapter": str(init_folder.resolve()) if init_folder is not None else None,
    }
    if offset is not None:  # model.lm_target: residual, the training loss's fixed offset
        metrics["residual_offset"] = {"collab_weight": offset[0], "bias": offset[1]}
    if collab is not None:  # what the tokens were made from (collab_tokens.json holds the vocabulary)
        metrics["collab"] = {"encoder": collab.encoder, "fit": collab.fit, "fitted_on": collab.fitted_on,
                             "id_model_heldout": collab.id_metrics, "vocab_items": len(collab.items),
                             "id_model_valid_auc": id_alone["valid"].get("auc"),
                             "id_model_test_auc": id_alone["test"].get("auc"), "schedule": cfg.collab_schedule}
        if stage1 is not None:  # the same run's text-only model, before the projector trained
            metrics["collab"]["stage1"] = {
                "valid_best": {"metric": cfg.train.metric_for_best, "value": stage1.best_metric,
                               "step": stage1.best_step},
                "steps": stage1.global_step, "wall_seconds": stage1.wall_seconds}
            metrics["steps"] = stage1.global_step + result.global_step
            metrics["wall_seconds"] = stage1.wall_seconds + result.wall_seconds
    if accelerator.is_main_process:
        petrec.save_adapter(accelerator.unwrap_model(model), out / "adapter")
        write_json_atomic(out / "metrics.json", metrics, default=float)
        accelerator.print(json.dumps({"test": test_metrics, "valid": metrics["valid"]}, default=float))
    accelerator.end_training()
    return metrics


#: Bad input (config, data, model, a missing file) that ends the recipe with one line, no traceback.
RECIPE_ERRORS = (ConfigError, DataError, PetrecModelError, FileNotFoundError)

if __name__ == "__main__":
    try:
        main()
    except RECIPE_ERRORS as exc:
        sys.exit(f"petrec: {type(exc).__name__}: {exc}")
