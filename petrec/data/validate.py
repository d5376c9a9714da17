"""Schema coercion and validation of canonical interaction tables, with an honest drop report.

Canonical interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64; sequence
position where the source has no time), ``rating`` (float64, NaN when the source has none),
``label`` (float64 0/1, NaN when the source has none) and ``_line`` (where the row came from,
used only in error messages and dropped before examples are built).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from petrec.data.errors import DataSchemaError, DataValueError

CANONICAL = ("user_id", "item_id", "timestamp", "rating", "label", "_line")


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
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    out = pd.to_numeric(values, errors="coerce").astype("float64")
    text = values.astype("string").str.strip()
    bad = out.isna() & text.notna() & (text != "") & ~text.str.lower().isin(["nan", "na", "null", "none"])
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


def coerce_time(values: pd.Series, lines: pd.Series, source: Source) -> pd.Series:
    """Timestamps as int64: numbers are taken as they are, date strings become Unix seconds.

    Raises:
        DataSchemaError: A value is neither a number nor a date.
        DataValueError: A timestamp is missing.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values):
        if values.isna().any():
            i, line = _first_bad(values.isna(), lines)
            raise DataValueError(f"{source.where(line, 'time')}: timestamp is missing")
        return values.astype("float64").round().astype("int64")
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            return numeric.astype("float64").round().astype("int64")
        if numeric.notna().any():  # mostly numbers: the cells that are not are the mistake
            parsed = pd.to_datetime(numeric, errors="coerce", unit="s", utc=True)
        else:
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        if parsed.isna().any():
            i, line = _first_bad(parsed.isna(), lines)
            raise DataSchemaError(
                f"{source.where(line, 'time')}: expected a number or a date, found {values.iloc[i]!r}"
            )
    parsed = pd.to_datetime(parsed, utc=True)
    return (parsed.astype("datetime64[ns, UTC]").astype("int64") // 10**9).astype("int64")


@dataclass
class ValidationReport:
    """What validation kept and dropped."""

    rows_read: int = 0
    """Rows in the source."""
    rows_kept: int = 0
    """Rows that passed."""
    dropped: Counter | None = None
    """Reason → rows dropped (only under policy 'filter' or protocol preprocessing)."""

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {"rows_read": self.rows_read, "rows_kept": self.rows_kept,
                "dropped": dict(sorted((self.dropped or Counter()).items()))}


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
    assert report.dropped is not None
    report.dropped[reason] += n
    return df.loc[~bad].reset_index(drop=True)


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

    Checks, in order: NaN/empty ids, missing or out-of-range ratings, labels other than 0/1,
    duplicate (user, item, timestamp) rows, items absent from the catalogue.

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
        DataValueError: A check fails under policy ``error``.
    """
    report = report or ValidationReport()
    report.dropped = report.dropped if report.dropped is not None else Counter()
    report.rows_read = report.rows_read or len(df)
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
    report.dropped["item_min_interactions"] += int(drop_item.sum())
    report.dropped["user_min_interactions"] += int(drop_user.sum())
    df = df.loc[~(drop_item | drop_user)].reset_index(drop=True)
    report.rows_kept = len(df)
    return df
