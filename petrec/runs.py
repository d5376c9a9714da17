"""The run folder: read back what a finished training run wrote, for evaluation, export and serving.

A run folder, as :mod:`petrec.recipes.finetune` writes it, holds ``config.yaml`` (the whole
recipe config), ``adapter/`` (what was trained), ``metrics.json`` and ``train_log.jsonl``
(``behaviour_stats.json`` too for a behaviour-prior model); an export folder holds the same
``config.yaml`` and ``adapter/``. :func:`read_run_config` is the one reader of ``config.yaml``
(:class:`RunConfig`, with the recipe's own defaults) and :func:`load_run` rebuilds the model.
The server and ``petrec.deploy`` read run and export folders through this module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import petrec
from petrec.collate import pad_sequences
from petrec.config import ConfigError, from_dict, merge_dicts, parse_overrides, read_yaml
from petrec.data import DataConfig, DataError
from petrec.data.features import BehaviourStats
from petrec.debias import DebiasConfig
from petrec.methods.errors import AdapterLoadError, PetrecMethodError
from petrec.methods.io import TENSORS_FILE, check_adapter_folder
from petrec.models import BehaviourModel, ModelConfig, load_tokenizer
from petrec.models.build import load_backbone
from petrec.models.collab import CollabSpec
from petrec.recipes.finetune import FinetuneConfig

#: Every error a bad run folder or input file raises with a one-line message naming the file (all
#: are ``ValueError``); the ``petrec evaluate | predict`` commands print them.
RUN_ERRORS: tuple[type[ValueError], ...] = (ConfigError, DataError, PetrecMethodError)
#: The run's config, as the recipe wrote it (an export folder keeps a copy).
CONFIG_FILE = "config.yaml"


@dataclass
class RunConfig:
    """What a run's ``config.yaml`` says about its model: enough to rebuild and feed it.

    The recipe writes its whole :class:`~petrec.recipes.finetune.FinetuneConfig`; these are the
    parts a reloaded model needs. A key the file lacks takes the recipe's default.
    """

    data: DataConfig
    """The behaviour log, task, protocol and text template the run trained on."""
    model: ModelConfig
    """Backbone, pooling, head and PEFT method."""
    max_length: int
    """Token budget of one rendered example."""
    item_max_length: int
    """Token budget of one item's text (next-item models embed the catalogue from text)."""
    debias: DebiasConfig = dataclasses.field(default_factory=DebiasConfig)
    """Debiased metrics and breakdowns the run reported (defaults for a run written before them)."""


@dataclass
class TrainedRun:
    """A trained behaviour model with everything needed to feed it."""

    folder: Path
    data: DataConfig
    model_cfg: ModelConfig
    model: BehaviourModel
    tokenizer: Any
    max_length: int
    stats: BehaviourStats | None = None
    """The behaviour statistics of a model with ``behaviour_prior`` (``behaviour_stats.json``)."""
    collab: CollabSpec | None = None
    """The ID vocabulary of a model with ``collab_tokens`` (``collab_tokens.json``)."""
    debias: DebiasConfig = dataclasses.field(default_factory=DebiasConfig)
    """The run's ``debias`` section: how its debiased metrics and groups were computed."""


def load_run(folder: str | os.PathLike[str], *, data_dir: str | None = None,
             data_overrides: Sequence[str] = ()) -> TrainedRun:
    """Rebuild the run's model (base + saved adapter) in evaluation mode.

    Args:
        folder: A run output folder (``config.yaml`` + ``adapter/``).
        data_dir: Override of ``data.data_dir`` (the data may live elsewhere now).
        data_overrides: ``KEY=VALUE`` changes to the run's data config (:func:`with_data_overrides`),
            checked before the model loads; the run then describes that data.

    Raises:
        ConfigError: The folder is not a run folder, its config does not load or the base model
            it names does not load.
        AdapterLoadError: A missing, truncated or corrupt file in ``adapter/`` (named).
        DataError: A missing or unreadable ``behaviour_stats.json`` (behaviour-prior runs) or
            ``collab_tokens.json`` (collaborative-token runs).
    """
    folder = Path(folder)
    for needed in ("config.yaml", "adapter"):
        if not (folder / needed).exists():
            raise ConfigError(f"{folder} is not a petrec run folder: {needed} is missing")
    cfg = read_run_config(folder, data_dir)
    data = with_data_overrides(cfg.data, data_overrides) if data_overrides else cfg.data
    check_adapter_folder(folder / "adapter")  # before the (slow) base model loads
    # The plain base (backbone + fresh head); load_adapter re-applies the saved method,
    # quantization included, and restores every trained tensor (head too).
    collab = CollabSpec.load(folder) if cfg.model.collab_tokens else None
    backbone, is_decoder = load_base(cfg.model, folder / CONFIG_FILE)
    model = load_adapter_checked(BehaviourModel(backbone, cfg.model, is_decoder=is_decoder, collab=collab),
                                 folder / "adapter")
    model.eval()
    stats = BehaviourStats.load(folder) if cfg.model.behaviour_prior else None
    return TrainedRun(folder, data, cfg.model, model, load_tokenizer(cfg.model), cfg.max_length, stats=stats,
                      debias=cfg.debias, collab=collab)


def with_data_overrides(data: DataConfig, overrides: Sequence[str]) -> DataConfig:
    """The run's data config with ``KEY=VALUE`` fields replaced (values read as YAML scalars).

    Scores a run on other data than it trained on, e.g. an earlier period of the ``periods``
    protocol (``period=1``); the fields are checked as in a recipe config.

    Args:
        data: The run's data config.
        overrides: ``KEY=VALUE`` strings naming :class:`~petrec.data.DataConfig` fields.

    Raises:
        ConfigError: A string without ``=``, an unknown key or a value the field refuses (named).
    """
    argv = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or "." in key:
            raise ConfigError(f"data override {item!r}: expected KEY=VALUE with a data field as KEY, e.g. period=1")
        argv.append(f"--{key.strip()}={value}")
    salt = data.anonymize_salt
    fields = merge_dicts(data.to_dict(), parse_overrides(argv))
    out = from_dict(DataConfig, fields, prefix="data.")
    out.anonymize_salt = salt
    return out


def load_base(model_cfg: ModelConfig, config_path: str | os.PathLike[str]) -> tuple[Any, bool]:
    """:func:`petrec.models.build.load_backbone`, with a one-line error naming the config key.

    Args:
        model_cfg: The run's model config.
        config_path: The config file it came from, for the message.

    Raises:
        ConfigError: ``model.backbone`` does not load (missing, truncated or corrupt files).
    """
    from safetensors import SafetensorError

    try:
        return load_backbone(model_cfg)
    except (OSError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{config_path}: model.backbone {model_cfg.backbone!r} does not load "
                          f"({type(exc).__name__}: {first})") from None


def load_adapter_checked(model: BehaviourModel, folder: str | os.PathLike[str]) -> BehaviourModel:
    """:func:`petrec.load_adapter` after :func:`check_adapter_folder`; a safetensors error names the file.

    Raises:
        AdapterLoadError: See :func:`check_adapter_folder` and :func:`petrec.load_adapter`.
    """
    from safetensors import SafetensorError

    folder = Path(folder)
    check_adapter_folder(folder)
    try:
        return petrec.load_adapter(model, folder)
    except SafetensorError as exc:
        raise AdapterLoadError(f"{folder / TENSORS_FILE}: not a readable safetensors file ({exc}); "
                               "expected the complete file petrec.save_adapter wrote") from None


def _recipe_default(key: str) -> object:
    """The recipe's default for a top-level config key (the recipe is what writes config.yaml)."""
    return next(f.default for f in dataclasses.fields(FinetuneConfig) if f.name == key)


def read_run_config(folder: str | os.PathLike[str], data_dir: str | None = None) -> RunConfig:
    """A run's (or an export's) ``config.yaml`` as a :class:`RunConfig`.

    Only the ``model`` and ``data`` sections and the token budgets are read back, each section
    into its own dataclass. An empty file, or one without ``model:`` and ``data:`` mappings or
    ``max_length``, is refused: falling back to defaults would evaluate another model, dataset or
    token budget than the run's (the recipe writes ``max_length`` after every section, so a file
    without it was cut). A missing ``item_max_length`` takes the recipe's default.

    Args:
        folder: Holds ``config.yaml``.
        data_dir: Override of ``data.data_dir`` (the data may live elsewhere now).

    Raises:
        ConfigError: A missing, empty or unreadable file, a missing section or a wrong key (named
            in the message, with the file).
    """
    path = Path(folder) / CONFIG_FILE
    expected = "expected the config the run wrote (a mapping with data:, model: and max_length:)"
    try:
        raw = read_yaml(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start}); {expected}") from None
    except ConfigError as exc:  # a YAML parser error spans lines: one line, as every error here
        raise ConfigError("; ".join(part.strip() for part in str(exc).splitlines() if part.strip())) from None
    if not raw:
        raise ConfigError(f"{path}: the file is empty; {expected}")
    sections = {}
    for key, cls in (("model", ModelConfig), ("data", DataConfig)):  # model first: it names the base
        if not isinstance(raw.get(key), Mapping):
            got = ("missing" if raw.get(key) is None
                   else f"not a mapping (got {type(raw[key]).__name__} {raw[key]!r:.40})")
            raise ConfigError(f"{path}: section {key!r} is {got}; {expected}")
        values = dict(raw[key])
        if key == "data" and data_dir is not None:
            values["data_dir"] = data_dir
        try:
            sections[key] = from_dict(cls, values, prefix=f"{key}.")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if "max_length" not in raw:
        raise ConfigError(f"{path}: key 'max_length' is missing (a truncated file?); {expected}")
    budgets = {"max_length": raw["max_length"],
               "item_max_length": raw.get("item_max_length", _recipe_default("item_max_length"))}
    for key, value in budgets.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{path}: key {key!r} is {value!r}; expected a positive integer")
    debias = raw.get("debias") or {}
    if not isinstance(debias, Mapping):
        raise ConfigError(f"{path}: section 'debias' is not a mapping (got {type(debias).__name__}); {expected}")
    try:
        debias_cfg = from_dict(DebiasConfig, dict(debias), prefix="debias.")
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return RunConfig(data=sections["data"], model=sections["model"], debias=debias_cfg, **budgets)


@torch.no_grad()
def score_examples(run: TrainedRun, examples: Any, *, items: Any = None, batch_size: int = 64) -> np.ndarray:
    """Scores of pointwise examples: click/like probabilities (ctr) or predicted ratings.

    Args:
        run: From :func:`load_run`.
        examples: A ``datasets.Dataset`` of examples (the columns ``petrec.data`` builds).
        items: The catalogue, to render history item texts.
        batch_size: Examples per forward pass.
    """
    if run.model_cfg.task not in ("ctr", "rating"):
        raise ValueError(f"scoring needs a ctr or rating model, this run is {run.model_cfg.task!r}")
    tokens = petrec.data.tokenize_examples(examples, run.tokenizer, max_length=run.max_length, items=items,
                                           template=run.data.template, task=run.model_cfg.task)
    features = run.stats.features(examples) if run.stats is not None else None
    collab = run.collab.columns(examples) if run.collab is not None else None
    return score_token_ids(run.model, run.model_cfg.task, tokens["input_ids"], run.tokenizer,
                           batch_size=batch_size, features=features, collab=collab).cpu().numpy()


@torch.no_grad()
def score_token_ids(model: BehaviourModel, task: str, seqs: Sequence[Sequence[int]], tokenizer: Any, *,
                    batch_size: int = 64, features: np.ndarray | None = None,
                    collab: Mapping[str, Sequence[Any]] | None = None) -> torch.Tensor:
    """Click probabilities (ctr) or predicted ratings of token-id lists, in order.

    The one scoring pass behind :func:`score_examples`, ``petrec.deploy.load.score_requests``
    and the server: pad each batch on the tokenizer's side, forward, sigmoid for ctr.

    Args:
        model: A ctr / rating behaviour model (its device is used).
        task: ``ctr`` or ``rating``.
        seqs: Token ids per example.
        tokenizer: Gives ``pad_token_id`` and ``padding_side``.
        batch_size: Examples per forward pass.
        features: ``(len(seqs), n_features)`` behaviour features, for a model with a behaviour prior.
        collab: The collaborative tokens' ID inputs (:meth:`petrec.models.collab.CollabSpec.columns`),
            for a model with ``collab_tokens``.
    """
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        ids = pad_sequences(chunk, tokenizer.pad_token_id, tokenizer.padding_side)
        mask = pad_sequences([[1] * len(s) for s in chunk], 0, tokenizer.padding_side)
        extra = {}
        if features is not None:
            extra["features"] = torch.as_tensor(features[start:start + batch_size], device=device)
        for name, values in (collab or {}).items():
            extra[name] = torch.as_tensor(values[start:start + batch_size], dtype=torch.long, device=device)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits.reshape(-1).float()
        out.append(torch.sigmoid(logits) if task == "ctr" else logits)
    return torch.cat(out) if out else torch.zeros(0)


def read_candidates_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read (history, candidate) rows for ``petrec predict --csv``.

    Columns: ``user_id``, ``history_item_ids`` (space-separated, oldest first),
    ``history_labels`` (space-separated 0/1, same length; optional, default all 1),
    ``item_id`` (the candidate).

    Raises:
        DataError: Missing file or columns, or a row whose lists differ in length.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"candidates file {str(path)!r} not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); expected a CSV of user_id, "
                        "history_item_ids, item_id") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; expected a header line user_id,history_item_ids,item_id") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None
    missing = [c for c in ("user_id", "history_item_ids", "item_id") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected user_id, history_item_ids, item_id"
                        " [, history_labels]")
    hist = df["history_item_ids"].str.split()
    labels = (df["history_labels"].str.split() if "history_labels" in df.columns
              else hist.map(lambda h: ["1"] * len(h)))
    mismatch = np.flatnonzero(hist.str.len().to_numpy() != labels.str.len().to_numpy())
    if mismatch.size:
        row = int(mismatch[0])
        raise DataError(f"{path}, line {row + 2}: {len(hist[row])} history items but "
                        f"{len(labels[row])} history labels")
    return pd.DataFrame({
        "user_id": df["user_id"],
        "history_item_ids": hist,
        "history_labels": labels.map(lambda xs: [int(x) for x in xs]),
        "history_ratings": labels.map(lambda xs: [float(x) for x in xs]),
        "item_id": df["item_id"],
        "label": 0,
        "rating": 0.0,
        "timestamp": np.arange(len(df), dtype=np.int64),
    })
