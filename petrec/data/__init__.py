"""Behaviour data: readers, validation, splits, task examples, prompt text and the synthetic world.

Typical use::

    from petrec.data import DataConfig, prepare
    data = prepare(DataConfig.preset("P1", data_dir="/path/to/data"))
    data.save("out/p1")
    tok = data.tokenize(tokenizer, max_length=256)
"""

from petrec.data.config import PRESETS, DataConfig
from petrec.data.errors import (
    DataConfigError,
    DataError,
    DataFileError,
    DataSchemaError,
    DataValueError,
)
from petrec.data.prepare import PreparedData, load_prepared, load_tables, prepare
from petrec.data.readers import (
    Tables,
    read_catalogue,
    read_log,
    read_ml1m,
    read_ml100k,
    read_ml_latest_small,
    read_unisrec,
)
from petrec.data.synthetic import synthetic_world
from petrec.data.text import render_one
from petrec.data.tokenize import catalogue_names, tokenize_examples, tokenize_items, tokenize_rows

__all__ = [
    "PRESETS",
    "DataConfig",
    "DataConfigError",
    "DataError",
    "DataFileError",
    "DataSchemaError",
    "DataValueError",
    "PreparedData",
    "Tables",
    "catalogue_names",
    "load_prepared",
    "load_tables",
    "prepare",
    "read_catalogue",
    "read_log",
    "read_ml1m",
    "read_ml100k",
    "read_ml_latest_small",
    "read_unisrec",
    "render_one",
    "synthetic_world",
    "tokenize_examples",
    "tokenize_items",
    "tokenize_rows",
]
