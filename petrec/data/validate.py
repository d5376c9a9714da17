"""Schema coercion and validation of canonical interaction tables, with an honest drop report.

Canonical interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64; sequence
position where the source has no time), ``rating`` (float64, NaN when the source has none),
``label`` (float64 0/1, NaN when the source has none) and ``_line`` (where the row came from,
used only in error messages and dropped before examples are built).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from petrec.data.errors import DataError, DataFileError, DataSchemaError, DataValueError

CANONICAL = ("user_id", "item_id", "timestamp", "rating", "label", "_line")
#: Columns a reader adds to rows it could not read: why (a reason key) and the full message.
#: :func:`validate_interactions` raises on them (policy ``error``) or drops and counts them.
PROBLEM_COLUMNS = ("_reason", "_problem")
#: Reason key of an unreadable row → the error raised for it under policy ``error``.
PROBLEM_ERRORS: dict[str, type[DataError]] = {
    "short_row": DataFileError,
    "long_row": DataFileError,
    "timestamp_missing": DataValueError,
    "timestamp_unreadable": DataSchemaError,
    "rating_not_a_number": DataSchemaError,
    "label_not_a_number": DataSchemaError,
}
#: How many row numbers per drop reason the report keeps.
FIRST_DROPPED = 5


@dataclass(frozen=True)
class Source:
    """Where a table came from, for error messages."""

    path: str
    """File name shown to the user."""
    unit: str = "line"
    """``line`` for text files (1-based, header counted) or ``row`` for Parquet (0-based)."""
    columns: tuple[tuple[str, str], ...] = ()
    """Canonical name → column name in the file, where they differ."""

    def where(self, line: int, column: str) -> str:
        """``file, line N, column 'x'`` with the column's name as the file spells it."""
        key = {"user_id": "user", "item_id": "item", "timestamp": "time"}.get(column, column)
        original = dict(self.columns).get(key, column)
        return f"{self.path}, {self.unit} {int(line)}, column {original!r}"


def _first_bad(mask: np.ndarray | pd.Series, lines: pd.Series) -> tuple[int, int]:
    mask = np.asarray(mask, dtype=bool)
    idx = int(np.flatnonzero(mask)[0])
    return idx, int(lines.iloc[idx])


def parse_numeric(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """A column as float64, and which cells hold text that is not a number.

    Empty cells and the words ``nan``, ``na``, ``null``, ``none`` are missing values (NaN), not
    mistakes.

    Args:
        values: The column as read.

    Returns:
        ``(float64 values, bad)``: NaN where the cell was empty or unreadable; ``bad`` is a
        boolean array marking the unreadable cells.
    """
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64"), np.zeros(len(values), dtype=bool)
    out = pd.to_numeric(values, errors="coerce").astype("float64")
    text = values.astype("string").str.strip()
    bad = out.isna() & text.notna() & (text != "") & ~text.str.lower().isin(["nan", "na", "null", "none"])
    return out, bad.to_numpy(dtype=bool)


def coerce_numeric(values: pd.Series, lines: pd.Series, source: Source, column: str) -> pd.Series:
    """Turn a column into float64; a non-empty value that is not a number is a schema error.

    Args:
        values: The column as read.
        lines: Line/row numbers of the rows.
        source: For the error message.
        column: Canonical column name.

    Returns:
        float64 values (NaN where the cell was empty).

    Raises:
        DataSchemaError: A cell holds text that is not a number.
    """
    out, bad = parse_numeric(values)
    if bad.any():
        i, line = _first_bad(bad, lines)
        raise DataSchemaError(
            f"{source.where(line, column)}: expected a number, found {values.iloc[i]!r} "
            f"({int(bad.sum())} such rows)"
        )
    return out


def coerce_ids(values: pd.Series) -> pd.Series:
    """Ids as strings; integral floats (an int column with gaps) lose their ``.0``; NaN stays NaN."""
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    out = values.astype("string")
    return out.str.strip()


def parse_time(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Timestamps as int64 (numbers as they are, date strings as Unix seconds), and the bad cells.

    Args:
        values: The column as read.

    Returns:
        ``(int64 values, missing, unreadable)``: 0 where a cell is missing or unreadable;
        ``missing`` marks empty cells, ``unreadable`` cells that are neither a number nor a date.
    """
    n = len(values)
    none = np.zeros(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        missing = values.isna().to_numpy(dtype=bool)
        return values.fillna(0).astype("float64").round().astype("int64"), missing, none
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
        missing, unreadable = values.isna().to_numpy(dtype=bool), none
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            return numeric.astype("float64").round().astype("int64"), none, none
        text = values.astype("string").str.strip()
        missing = (text.isna() | (text == "")).to_numpy(dtype=bool)
        if numeric.notna().any():  # mostly numbers: the cells that are not are the mistake
            parsed = pd.to_datetime(numeric, errors="coerce", unit="s", utc=True)
        else:
            parsed = pd.to_datetime(values.where(~missing), errors="coerce", utc=True, format="mixed")
        unreadable = parsed.isna().to_numpy(dtype=bool) & ~missing
    parsed = pd.to_datetime(parsed, utc=True)
    seconds = parsed.astype("datetime64[ns, UTC]").astype("int64") // 10**9
    out = pd.Series(np.where(missing | unreadable, 0, seconds), index=values.index, dtype="int64")
    return out, missing, unreadable


def coerce_time(values: pd.Series, lines: pd.Series, source: Source) -> pd.Series:
    """Timestamps as int64: numbers are taken as they are, date strings become Unix seconds.

    Raises:
        DataSchemaError: A value is neither a number nor a date.
        DataValueError: A timestamp is missing.
    """
    out, missing, unreadable = parse_time(values)
    first_missing = int(np.argmax(missing)) if missing.any() else len(values)
    first_bad = int(np.argmax(unreadable)) if unreadable.any() else len(values)
    if first_missing < first_bad:
        raise DataValueError(f"{source.where(int(lines.iloc[first_missing]), 'time')}: timestamp is missing")
    if first_bad < len(values):
        raise DataSchemaError(
            f"{source.where(int(lines.iloc[first_bad]), 'time')}: expected a number or a date, "
            f"found {values.iloc[first_bad]!r}"
        )
    return out


@dataclass
class ValidationReport:
    """What validation kept and dropped."""

    rows_read: int = 0
    """Rows in the source."""
    rows_kept: int = 0
    """Rows that passed."""
    dropped: Counter | None = None
    """Reason → rows dropped (only under policy 'filter' or protocol preprocessing)."""
    first_dropped: dict[str, list[int]] | None = None
    """Reason → the first few (:data:`FIRST_DROPPED`) line / row numbers dropped for it."""
    unit: str = "line"
    """What those numbers count: ``line`` (text files, 1-based), ``row`` (Parquet, 0-based) or
    ``sequence position``."""

    def note(self, reason: str, n: int, lines: pd.Series | np.ndarray) -> None:
        """Count ``n`` rows dropped for ``reason`` and keep the first few of their ``lines``."""
        if self.dropped is None:
            self.dropped = Counter()
        if self.first_dropped is None:
            self.first_dropped = {}
        self.dropped[reason] += n
        have = self.first_dropped.setdefault(reason, [])
        room = FIRST_DROPPED - len(have)
        if room > 0:
            have.extend(int(x) for x in np.asarray(lines)[:room])
        if not have:
            del self.first_dropped[reason]

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable form (``first_dropped``: reason → ``["line 3", "line 9"]``)."""
        first = {k: [f"{self.unit} {x}" for x in v] for k, v in sorted((self.first_dropped or {}).items())}
        return {"rows_read": self.rows_read, "rows_kept": self.rows_kept,
                "dropped": dict(sorted((self.dropped or Counter()).items())),
                "first_dropped": first}

    def describe(self) -> str:
        """:func:`describe_drops` of :meth:`as_dict`."""
        return describe_drops(self.as_dict())


def describe_drops(interactions: Mapping[str, Any]) -> str:
    """One line from a report's :meth:`ValidationReport.as_dict` (``summary["interactions"]``).

    Returns:
        ``dropped 3 of 10 rows: 2 short_row (line 4, line 7); 1 ...``, or ``""`` if none were.
    """
    counts = {k: int(v) for k, v in sorted(dict(interactions.get("dropped") or {}).items()) if v}
    if not counts:
        return ""
    first = dict(interactions.get("first_dropped") or {})
    parts = []
    for reason, n in counts.items():
        where = list(first.get(reason) or [])
        more = ", ..." if n > len(where) else ""
        parts.append(f"{n} {reason}" + (f" ({', '.join(where)}{more})" if where else ""))
    return f"dropped {sum(counts.values())} of {interactions.get('rows_read')} rows: {'; '.join(parts)}"


def _apply(df: pd.DataFrame, bad: pd.Series | np.ndarray, reason: str, message: str,
           column: str, source: Source, policy: str, report: ValidationReport) -> pd.DataFrame:
    bad = np.asarray(bad, dtype=bool)
    n = int(bad.sum())
    if n == 0:
        return df
    if policy == "error":
        i, line = _first_bad(bad, df["_line"])
        value = df[column].iloc[i] if column in df.columns else None
        value = value.item() if hasattr(value, "item") else value
        raise DataValueError(
            f"{source.where(line, column)}: {message} (value {value!r}); {n} such rows. "
            f"Fix the data or pass policy='filter' (--filter) to drop them with a count"
        )
    report.note(reason, n, df["_line"].to_numpy()[bad])
    return df.loc[~bad].reset_index(drop=True)


def _apply_problems(df: pd.DataFrame, policy: str, report: ValidationReport) -> pd.DataFrame:
    """Rows a reader could not read (see :data:`PROBLEM_COLUMNS`): raise on the first or drop them."""
    if "_reason" not in df.columns:
        return df
    reasons = df["_reason"]
    bad = reasons.notna().to_numpy()
    if bad.any():
        if policy == "error":
            lines = df["_line"].to_numpy()
            i = int(np.flatnonzero(bad)[np.argmin(lines[bad])])  # the first in the file
            reason = str(reasons.iloc[i])
            n = int((reasons == reason).sum())
            raise PROBLEM_ERRORS.get(reason, DataValueError)(
                f"{df['_problem'].iloc[i]} ({n} such rows). Fix the data or pass policy='filter' "
                f"(--filter) to drop unreadable rows with a count"
            )
        order = np.argsort(df["_line"].to_numpy(), kind="stable")
        ordered = df.iloc[order]
        for reason in sorted(set(reasons[bad])):
            hit = (ordered["_reason"] == reason).to_numpy()
            report.note(reason, int(hit.sum()), ordered["_line"].to_numpy()[hit])
        df = df.loc[~bad].reset_index(drop=True)
    return df.drop(columns=list(PROBLEM_COLUMNS))


def validate_interactions(
    df: pd.DataFrame,
    source: Source,
    *,
    policy: str = "error",
    rating_range: tuple[float, float] | None = None,
    catalogue: pd.Series | None = None,
    require_rating: bool = False,
    report: ValidationReport | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check a canonical interaction table row by row (vectorised) and apply the policy.

    Checks, in order: rows the reader could not read (a short or long row, a rating, label or
    timestamp that is not a number / date: the :data:`PROBLEM_COLUMNS` a reader adds), NaN/empty
    ids, missing or out-of-range ratings, labels other than 0/1, duplicate (user, item, timestamp)
    rows, items absent from the catalogue.

    Args:
        df: Canonical interactions (see module docstring).
        source: Where they came from (for messages).
        policy: ``error`` raises on the first failing check; ``filter`` drops and counts.
        rating_range: Allowed inclusive (low, high), or None for no range check.
        catalogue: Known item ids; interactions with other items fail.
        require_rating: Ratings must be present (explicit-feedback tasks).
        report: Report to add to (a fresh one when None).

    Returns:
        The kept rows (index reset) and the report.

    Raises:
        DataError: A check fails under policy ``error`` (:class:`DataValueError`; a
            :data:`PROBLEM_ERRORS` class for an unreadable row).
    """
    report = report or ValidationReport()
    report.dropped = report.dropped if report.dropped is not None else Counter()
    report.rows_read = report.rows_read or len(df)
    report.unit = source.unit
    df = _apply_problems(df, policy, report)
    for col in ("user_id", "item_id"):
        ids = df[col]
        bad = ids.isna() | (ids.fillna("") == "")
        df = _apply(df, bad, f"missing_{col}", f"{col.replace('_id', '')} id is NaN or empty",
                    col, source, policy, report)
    if require_rating:
        df = _apply(df, df["rating"].isna(), "missing_rating", "rating is missing", "rating",
                    source, policy, report)
    if rating_range is not None:
        r = df["rating"]
        bad = r.notna() & ((r < rating_range[0]) | (r > rating_range[1]))
        df = _apply(df, bad, "rating_out_of_range",
                    f"rating outside [{rating_range[0]:g}, {rating_range[1]:g}]", "rating",
                    source, policy, report)
    lab = df["label"]
    df = _apply(df, lab.notna() & ~lab.isin([0.0, 1.0]), "bad_label", "label is not 0 or 1",
                "label", source, policy, report)
    dup = df.duplicated(subset=["user_id", "item_id", "timestamp"], keep="first")
    df = _apply(df, dup, "duplicate", "duplicate (user, item, timestamp) row", "item_id",
                source, policy, report)
    if catalogue is not None:
        unknown = ~df["item_id"].isin(pd.Index(catalogue))
        df = _apply(df, unknown, "unknown_item", "item has no entry in the item catalogue",
                    "item_id", source, policy, report)
    report.rows_kept = len(df)
    return df, report


def check_history_lengths(df: pd.DataFrame, source: Source, min_len: int, policy: str,
                          report: ValidationReport, why: str) -> pd.DataFrame:
    """Users with fewer than ``min_len`` interactions: error (naming one) or drop them."""
    counts = df.groupby("user_id", sort=False)["item_id"].transform("size")
    bad = (counts < min_len).to_numpy()
    if bad.any() and policy == "error":
        i, line = _first_bad(bad, df["_line"])
        n_users = df.loc[bad, "user_id"].nunique()
        raise DataValueError(
            f"{source.where(line, 'user_id')}: user {df['user_id'].iloc[i]!r} has only "
            f"{int(counts.iloc[i])} interactions but {why} needs at least {min_len}; "
            f"{n_users} such users. Pass policy='filter' (--filter) to drop them with a count"
        )
    df = _apply(df, bad, "user_too_short", "", "user_id", source, "filter", report)
    report.rows_kept = len(df)
    return df


def min_count_filter(df: pd.DataFrame, min_user: int, min_item: int,
                     report: ValidationReport) -> pd.DataFrame:
    """Protocol preprocessing: drop users/items with too few interactions, counted ONCE on the full log.

    (SASRec's ml-1m preprocessing counts once, not iteratively, which gives 999,611 rows.)
    """
    if min_user <= 0 and min_item <= 0:
        return df
    ucount = df.groupby("user_id", sort=False)["item_id"].transform("size")
    icount = df.groupby("item_id", sort=False)["user_id"].transform("size")
    drop_item = (icount < min_item).to_numpy()
    drop_user = (ucount < min_user).to_numpy() & ~drop_item
    assert report.dropped is not None
    lines = df["_line"].to_numpy()
    report.note("item_min_interactions", int(drop_item.sum()), lines[drop_item])
    report.note("user_min_interactions", int(drop_user.sum()), lines[drop_user])
    df = df.loc[~(drop_item | drop_user)].reset_index(drop=True)
    report.rows_kept = len(df)
    return df
