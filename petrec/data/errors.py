"""Exceptions for bad behaviour data: every one names the file, row/line and column at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Base class of every bad-input error raised by :mod:`petrec.data`."""


class DataFileError(DataError):
    """A file is missing, unreadable, has the wrong separator or the wrong text encoding."""


class DataSchemaError(DataError):
    """A required column is missing or holds values of the wrong type."""


class DataValueError(DataError):
    """Values break a rule: NaN/empty ids, ratings out of range, duplicates, unknown items, short histories."""


class DataConfigError(DataError):
    """A :class:`~petrec.data.DataConfig` field holds a value that is not accepted."""
