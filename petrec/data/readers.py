"""Readers: MovieLens (100K, 1M, latest-small), UniSRec/RecBole atomic files, generic logs.

Every reader returns :class:`Tables` — canonical interactions (see :mod:`petrec.data.validate`)
and an item catalogue with ``item_id``, ``title`` and ``text`` (plus any of genres, year,
category, brand). File problems (missing file, wrong separator, wrong encoding, malformed
lines) become one :class:`~petrec.data.errors.DataFileError` that says what is wrong.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from petrec.data.errors import DataFileError, DataSchemaError
from petrec.data.validate import Source, coerce_ids, parse_numeric, parse_time

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
_SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", "::": "'::'"}


@dataclass
class Tables:
    """The two canonical tables of one dataset."""

    interactions: pd.DataFrame
    """user_id, item_id, timestamp, rating, label, _line."""
    items: pd.DataFrame
    """item_id, title, text and optional genres/year/category/brand."""
    source: Source
    """Interaction file, for messages."""
    rating_range: tuple[float, float] | None = None
    """The dataset's documented rating range."""
    has_time: bool = True
    """False when ``timestamp`` is a sequence position rather than a time."""


def _check_file(path: Path) -> None:
    if not path.is_file():
        parent = path.parent
        hint = (f"; {parent} holds {sorted(p.name for p in parent.iterdir())[:12]}"
                if parent.is_dir() else f"; folder {parent} does not exist")
        raise DataFileError(f"file not found: {path}{hint}")


def _sniff(first_line: str, used: str) -> str | None:
    for sep in ("::", "\t", ",", ";", "|"):
        if sep != used and sep in first_line and not (sep == ":" and "::" in used):
            return sep
    return None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (decompressed for ``.gz``)."""
    import gzip

    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _decode_error(path: Path, encoding: str) -> DataFileError:
    """The one-line error for a file that is not valid ``encoding``: where its first bad byte is.

    pandas' own ``UnicodeDecodeError`` counts from the start of the chunk it was decoding, so
    the file is decoded again here to find the line and byte offset in the file itself.
    """
    raw = _read_bytes(path)
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        start = exc.start
        line = raw.count(b"\n", 0, start) + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        of = " of the decompressed text" if path.suffix == ".gz" else ""
        where = f"byte 0x{raw[start]:02x} at line {line}, column {column}, byte offset {start}{of}"
    except LookupError:
        return DataFileError(f"{path}: unknown text encoding {encoding!r}")
    else:  # pragma: no cover - pandas failed where Python does not
        where = "a byte sequence pandas could not decode"
    return DataFileError(
        f"{path}: not valid {encoding} text ({where}); wrong encoding? MovieLens u.item/movies.dat "
        f"are latin-1 (pass encoding='latin-1')"
    )


@dataclass
class _Rows:
    """A delimited file read row by row: the table, where each row is, and rows that did not fit."""

    df: pd.DataFrame
    lines: np.ndarray
    """1-based line number in the file of each row of ``df``."""
    short: dict[int, int]
    """Row index in ``df`` → fields found, for rows with fewer fields than the header."""
    long: list[tuple[int, int]]
    """``(line, fields found)`` of rows with more fields than the header (not in ``df``)."""


_SKIPPED = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")


def _read_rows(path: Path, *, sep: str, names: list[str] | None, encoding: str,
               n_columns: int | None, quoting: int, collect: bool) -> _Rows:
    """:func:`read_delimited`; with ``collect`` a row with too few / too many fields is recorded
    (to be raised or dropped by validation) instead of raising here, and line numbers count blank
    lines as the file does."""
    _check_file(path)
    header = None if names is not None else "infer"
    caught: list[warnings.WarningMessage] = []
    try:
        if len(sep) > 1:
            # pandas would switch to its slow Python engine for a multi-character separator;
            # re-delimiting the decoded text with a tab keeps the fast C parser.
            raw = _read_bytes(path).decode(encoding)
            if "\t" in raw:
                raise DataFileError(f"{path}: contains tab characters; cannot re-delimit {sep!r}")
            buf: io.StringIO | Path = io.StringIO(raw.replace(sep, "\t"))
            use_sep = "\t"
        else:
            buf, use_sep = path, sep
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(buf, sep=use_sep, header=header, names=names, encoding=encoding,
                             quoting=quoting, engine="c", keep_default_na=True, skipinitialspace=False,
                             skip_blank_lines=not collect, on_bad_lines="warn" if collect else "error")
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataFileError(f"{path}: malformed line ({exc}); wrong separator {sep!r} or quoting?") from None
    long: list[tuple[int, int]] = []
    for w in caught:
        found = [(int(m[0]), int(m[2])) for m in _SKIPPED.findall(str(w.message))]
        if found:
            long.extend(found)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    expected = n_columns if n_columns is not None else (len(names) if names else None)
    with _open_text(path, encoding) as fh:
        first = fh.readline()
    if sep not in first or df.shape[1] == 1 or (expected is not None and df.shape[1] != expected):
        other = _sniff(first, sep)
        if other is not None or (expected is not None and df.shape[1] != expected):
            what = f"it looks {_SEPARATORS.get(other, repr(other))}-separated" if other else (
                f"found {df.shape[1]} columns, expected {expected}")
            raise DataFileError(
                f"{path}: wrong separator? read with {_SEPARATORS.get(sep, repr(sep))} but {what} "
                f"(first line {first.rstrip()[:80]!r})"
            )
    first_line = 1 if names is not None else 2
    skipped = np.array(sorted(line for line, _ in long), dtype=np.int64)
    lines = np.arange(first_line, first_line + len(df) + len(skipped), dtype=np.int64)
    if len(skipped):
        lines = lines[~np.isin(lines, skipped)]
    short: dict[int, int] = {}
    if collect and len(df):
        blank, fields = _count_fields(path, encoding, sep, quoting, df, lines)
        if blank.any():  # blank lines: kept by pandas above only so that line numbers stay right
            keep = np.flatnonzero(~blank)
            df, lines = df.iloc[keep].reset_index(drop=True), lines[keep]
            fields = {int(np.searchsorted(keep, row)): n for row, n in fields.items()}
        short = {row: n for row, n in fields.items() if n < df.shape[1]}
    return _Rows(df, lines, short, long)


def _count_fields(path: Path, encoding: str, sep: str, quoting: int, df: pd.DataFrame,
                  lines: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Blank lines, and the field count of rows that may be short (pandas fills both with NaN).

    Only a row whose last field is empty can be blank or short; those lines are re-read.

    Returns:
        ``(blank, fields)``: a mask of rows that are blank lines, and row index → number of
        fields for the other candidate rows.
    """
    blank = np.zeros(len(df), dtype=bool)
    candidates = np.flatnonzero(df.iloc[:, -1].isna().to_numpy())
    if not len(candidates):
        return blank, {}
    wanted = {int(lines[i]): int(i) for i in candidates}
    last = max(wanted)
    fields: dict[int, int] = {}
    with _open_text(path, encoding) as fh:
        for number, text in enumerate(fh, 1):
            row = wanted.get(number)
            if row is not None:
                text = text.rstrip("\r\n")
                if not text.strip():
                    blank[row] = True
                elif len(sep) > 1:
                    fields[row] = len(text.split(sep))
                else:
                    fields[row] = len(next(csv.reader([text], delimiter=sep, quoting=quoting), []))
            if number >= last:
                break
    return blank, fields


def read_delimited(path: str | Path, *, sep: str, names: list[str] | None = None,
                   encoding: str = "utf-8", n_columns: int | None = None,
                   quoting: int = csv.QUOTE_MINIMAL) -> pd.DataFrame:
    """Read a delimited text file (optionally .gz) with clear errors.

    Args:
        path: The file.
        sep: Field separator (``::`` is supported without pandas' slow Python engine).
        names: Column names for a file without a header line; None → the first line is a header.
        encoding: Text encoding.
        n_columns: Expected number of columns; a different count is reported as a wrong separator.
        quoting: ``csv`` quoting mode.

    Returns:
        The table, with columns as pandas inferred them.

    Raises:
        DataFileError: Missing file, wrong encoding (naming the line and byte offset of the first
            bad byte), wrong separator or malformed line.
    """
    return _read_rows(Path(path), sep=sep, names=names, encoding=encoding, n_columns=n_columns,
                      quoting=quoting, collect=False).df


def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    import gzip

    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors="replace")
    return open(path, encoding=encoding, errors="replace")


def _read_interactions(path: Path, *, sep: str, names: list[str] | None = None, encoding: str = "utf-8",
                       n_columns: int | None = None, quoting: int = csv.QUOTE_MINIMAL) -> _Rows:
    """An interaction file: rows that do not fit are collected for validation, not raised here."""
    return _read_rows(path, sep=sep, names=names, encoding=encoding, n_columns=n_columns,
                      quoting=quoting, collect=True)


def _canonical(df: pd.DataFrame, source: Source, *, lines: pd.Series | np.ndarray, user: str, item: str,
               time: str | None, rating: str | None, label: str | None,
               rows: _Rows | None = None) -> pd.DataFrame:
    """Canonical interactions; a row that cannot be read is flagged (``PROBLEM_COLUMNS``), not raised.

    :func:`~petrec.data.validate.validate_interactions` then raises on the first flagged row
    (policy ``error``) or drops and counts them (``filter``).
    """
    line_no = np.asarray(lines, dtype=np.int64)
    out = pd.DataFrame({"user_id": coerce_ids(df[user]), "item_id": coerce_ids(df[item])})
    out["_line"] = line_no
    reason = np.full(len(df), None, dtype=object)
    problem = np.full(len(df), None, dtype=object)

    def flag(mask: np.ndarray, key: str, message: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask & np.equal(reason, None)):
            reason[i], problem[i] = key, message(int(i))

    if rows is not None and rows.short:
        short = np.zeros(len(df), dtype=bool)
        short[list(rows.short)] = True
        flag(short, "short_row", lambda i: f"{source.path}, {source.unit} {line_no[i]}: expected "
             f"{df.shape[1]} fields, found {rows.short[i]} (a short row)")
    if time is not None:
        out["timestamp"], missing, unreadable = parse_time(df[time])
        flag(missing, "timestamp_missing", lambda i: f"{source.where(line_no[i], 'time')}: timestamp is missing")
        flag(unreadable, "timestamp_unreadable", lambda i: f"{source.where(line_no[i], 'time')}: expected "
             f"a number or a date, found {df[time].iloc[i]!r}")
    else:  # sequence position within the user, in file order
        out["timestamp"] = out.groupby("user_id", sort=False).cumcount().astype("int64").to_numpy()
    for key, col in (("rating", rating), ("label", label)):
        if col is None:
            out[key] = np.full(len(df), np.nan)
            continue
        out[key], bad = parse_numeric(df[col])
        flag(bad, f"{key}_not_a_number", lambda i, key=key, col=col: f"{source.where(line_no[i], key)}: "
             f"expected a number, found {df[col].iloc[i]!r}")
    out = out[["user_id", "item_id", "timestamp", "rating", "label", "_line"]]
    long = rows.long if rows is not None else []
    if not long and not np.not_equal(reason, None).any():
        return out
    out["_reason"], out["_problem"] = reason, problem
    if long:  # rows pandas could not place in the table: kept as flagged placeholders
        n_fields = df.shape[1]
        extra = pd.DataFrame({
            "user_id": pd.array([None] * len(long), dtype="string"),
            "item_id": pd.array([None] * len(long), dtype="string"),
            "timestamp": np.zeros(len(long), dtype="int64"),
            "rating": np.full(len(long), np.nan), "label": np.full(len(long), np.nan),
            "_line": np.array([line for line, _ in long], dtype="int64"),
            "_reason": ["long_row"] * len(long),
            "_problem": [f"{source.path}, {source.unit} {line}: expected {n_fields} fields, found {found} "
                         f"(a long row; a separator inside an unquoted field?)" for line, found in long],
        })
        out = pd.concat([out, extra], ignore_index=True)
    return out


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(r"\((\d{4})\)\s*$", expand=False).fillna("")


def _movie_text(items: pd.DataFrame) -> pd.Series:
    genres = items["genres"].str.replace("|", ", ", regex=False)
    return (items["title"] + ". Genres: " + genres + ".").where(genres != "", items["title"] + ".")


def read_ml100k(folder: str | Path) -> Tables:
    """MovieLens 100K raw files: ``u.data`` (tab) and ``u.item`` (``|``, latin-1, 19 genre flags)."""
    folder = Path(folder)
    rows = _read_interactions(folder / "u.data", sep="\t", names=["user", "item", "rating", "time"])
    src = Source(str(folder / "u.data"))
    inter = _canonical(rows.df, src, lines=rows.lines, user="user", item="item", time="time",
                       rating="rating", label=None, rows=rows)
    names = ["item", "title", "release", "video", "url", *ML100K_GENRES]
    it = read_delimited(folder / "u.item", sep="|", names=names, encoding="latin-1",
                        quoting=csv.QUOTE_NONE)
    flags = it[list(ML100K_GENRES)].to_numpy(dtype=bool)
    genre_names = np.array(ML100K_GENRES, dtype=object)
    genres = ["|".join(genre_names[row]) for row in flags]  # 1,682 rows, once per dataset
    items = pd.DataFrame({"item_id": coerce_ids(it["item"]), "title": it["title"].fillna("").astype("string"),
                          "genres": pd.array(genres, dtype="string")})
    items["year"] = it["release"].fillna("").astype("string").str[-4:]
    items["text"] = _movie_text(items)
    return Tables(inter, items, src, rating_range=(1.0, 5.0))


def read_ml1m(folder: str | Path) -> Tables:
    """MovieLens 1M: ``ratings.dat`` (``::``) if present, else ``ratings_chrono.tsv.gz``; ``movies.dat``.

    The chronological file has no timestamps: ``timestamp`` is its ``seq_pos`` (per-user order).
    """
    folder = Path(folder)
    dat = folder / "ratings.dat"
    if dat.is_file():
        rows = _read_interactions(dat, sep="::", names=["user", "item", "rating", "time"], encoding="latin-1")
        src, has_time = Source(str(dat)), True
    else:
        path = folder / "ratings_chrono.tsv.gz"
        rows = _read_interactions(path, sep="\t", n_columns=4)
        missing = {"user_id", "movie_id", "rating", "seq_pos"} - set(rows.df.columns)
        if missing:
            raise DataSchemaError(f"{path}: missing columns {sorted(missing)}; found {list(rows.df.columns)}")
        rows.df = rows.df.rename(columns={"user_id": "user", "movie_id": "item", "seq_pos": "time"})
        src, has_time = Source(str(path)), False
    inter = _canonical(rows.df, src, lines=rows.lines, user="user", item="item", time="time",
                       rating="rating", label=None, rows=rows)
    mv = read_delimited(folder / "movies.dat", sep="::", names=["item", "title", "genres"],
                        encoding="latin-1")
    items = pd.DataFrame({"item_id": coerce_ids(mv["item"]), "title": mv["title"].astype("string"),
                          "genres": mv["genres"].fillna("").astype("string")})
    items["year"] = _year_from_title(items["title"])
    items["text"] = _movie_text(items)
    return Tables(inter, items, src, rating_range=(1.0, 5.0), has_time=has_time)


def read_ml_latest_small(folder: str | Path) -> Tables:
    """MovieLens latest-small: ``ratings.csv`` and ``movies.csv`` (UTF-8, CRLF line ends)."""
    folder = Path(folder)
    rows = _read_interactions(folder / "ratings.csv", sep=",", n_columns=4)
    src = Source(str(folder / "ratings.csv"))
    _require(rows.df, ["userId", "movieId", "rating", "timestamp"], src.path)
    inter = _canonical(rows.df, src, lines=rows.lines, user="userId", item="movieId", time="timestamp",
                       rating="rating", label=None, rows=rows)
    mv = read_delimited(folder / "movies.csv", sep=",", n_columns=3)
    _require(mv, ["movieId", "title", "genres"], str(folder / "movies.csv"))
    genres = mv["genres"].fillna("").astype("string").replace("(no genres listed)", "")
    items = pd.DataFrame({"item_id": coerce_ids(mv["movieId"]), "title": mv["title"].astype("string"),
                          "genres": genres})
    items["year"] = _year_from_title(items["title"].str.strip())
    items["text"] = _movie_text(items)
    return Tables(inter, items, src, rating_range=(0.5, 5.0))


def _require(df: pd.DataFrame, cols: list[str], path: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataSchemaError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def read_unisrec(folder: str | Path, name: str = "Scientific") -> Tables:
    """UniSRec/RecBole atomic files: ``{name}.{train,valid,test}.inter``, ``.text``, index files.

    Each user's full sequence is rebuilt from the leave-one-out rows: the first history item of
    the user's shortest train row, the train targets (the file lists them longest history first),
    then the valid and test targets. ``timestamp`` is the position in that sequence.
    """
    folder = Path(folder)
    q = csv.QUOTE_NONE
    parts = {}
    for split in ("train", "valid", "test"):
        path = folder / f"{name}.{split}.inter"
        df = read_delimited(path, sep="\t", n_columns=3, quoting=q)
        _require(df, ["user_id:token", "item_id_list:token_seq", "item_id:token"], str(path))
        df.columns = ["user", "hist", "item"]
        df["split"], df["row"] = split, np.arange(len(df))
        parts[split] = df
    train = parts["train"].sort_values(["user", "row"], ascending=[True, False], kind="stable")
    first = train.drop_duplicates("user", keep="first")  # shortest history = earliest target
    first = pd.DataFrame({"user": first["user"].to_numpy(),
                          "item": first["hist"].astype(str).str.split(" ", n=1).str[0].astype("int64"),
                          "order": 0})
    rest = pd.concat([train.assign(order=1), parts["valid"].assign(order=2), parts["test"].assign(order=3)])
    seq = pd.concat([first, rest[["user", "item", "order"]]], ignore_index=True)
    seq = seq.sort_values(["user", "order"], kind="stable").reset_index(drop=True)
    seq["time"] = seq.groupby("user", sort=False).cumcount()
    u2i = read_delimited(folder / f"{name}.user2index", sep="\t", names=["raw", "idx"], quoting=q)
    i2i = read_delimited(folder / f"{name}.item2index", sep="\t", names=["raw", "idx"], quoting=q)
    user_raw = pd.Series(u2i["raw"].astype(str).to_numpy(), index=u2i["idx"].to_numpy())
    item_raw = pd.Series(i2i["raw"].astype(str).to_numpy(), index=i2i["idx"].to_numpy())
    seq["user_raw"] = user_raw.reindex(seq["user"].to_numpy()).to_numpy()
    seq["item_raw"] = item_raw.reindex(seq["item"].to_numpy()).to_numpy()
    src = Source(str(folder / f"{name}.train.inter"), unit="sequence position")
    inter = _canonical(seq, src, lines=seq["time"], user="user_raw", item="item_raw", time="time",
                       rating=None, label=None)
    txt = read_delimited(folder / f"{name}.text", sep="\t", n_columns=2, quoting=q)
    _require(txt, ["item_id:token", "text:token_seq"], str(folder / f"{name}.text"))
    text = txt["text:token_seq"].fillna("").astype("string").str.strip()
    items = pd.DataFrame({"item_id": coerce_ids(txt["item_id:token"]), "title": text, "text": text})
    return Tables(inter, items, src, rating_range=None, has_time=False)


def _read_any(path: Path, sep: str | None, encoding: str, *, collect: bool = False) -> tuple[_Rows, str]:
    """Read by extension; returns the rows (with their line / row numbers) and the position unit.

    Args:
        path: The file (.csv, .tsv, .parquet, .jsonl, .json; optionally .gz).
        sep: Separator for text files (None: from the extension).
        encoding: Text encoding.
        collect: Record text rows with too few / too many fields instead of raising (see
            :func:`_read_rows`).
    """
    _check_file(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataFileError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        return _Rows(df, np.arange(len(df), dtype=np.int64), {}, []), "row"
    if ext in (".jsonl", ".ndjson", ".json"):
        try:
            df = pd.read_json(path, lines=ext != ".json", encoding=encoding, dtype=False)
        except UnicodeDecodeError:
            raise _decode_error(path, encoding) from None
        except ValueError as exc:
            raise DataFileError(f"{path}: not valid JSON lines ({exc})") from None
        return _Rows(df, np.arange(1, len(df) + 1, dtype=np.int64), {}, []), "line"
    use = sep if sep is not None else ("\t" if ext in (".tsv", ".tab") else ",")
    return _read_rows(path, sep=use, names=None, encoding=encoding, n_columns=None,
                      quoting=csv.QUOTE_MINIMAL, collect=collect), "line"


def _map_columns(df: pd.DataFrame, mapping: dict[str, str], path: Path, required: tuple[str, ...]) -> None:
    for key in required:
        if key not in mapping:
            raise DataSchemaError(f"{path}: no column given for {key!r} (columns={mapping})")
    missing = {k: v for k, v in mapping.items() if v not in df.columns}
    if missing:
        key, col = next(iter(missing.items()))
        raise DataSchemaError(
            f"{path}: missing column {col!r} (mapped to {key}); the file has columns {list(df.columns)[:20]}"
        )


def read_log(path: str | Path, columns: dict[str, str], *, sep: str | None = None,
             encoding: str = "utf-8") -> Tables:
    """A generic interaction log (CSV, TSV, Parquet, JSON lines; optionally gzip) with a column map.

    Args:
        path: The log file.
        columns: Canonical key (user, item, time, rating, label) → column in the file; user and
            item are required; without ``time`` the file order within each user is the sequence.
        sep: Separator for text files (None: tab for .tsv, comma otherwise).
        encoding: Text encoding.

    Returns:
        Tables with an empty catalogue (see :func:`read_catalogue`).
    """
    path = Path(path)
    rows, unit = _read_any(path, sep, encoding, collect=True)
    df = rows.df
    _map_columns(df, columns, path, ("user", "item"))
    src = Source(str(path), unit=unit, columns=tuple(sorted(columns.items())))
    inter = _canonical(df, src, lines=rows.lines, user=columns["user"], item=columns["item"],
                       time=columns.get("time"), rating=columns.get("rating"), label=columns.get("label"),
                       rows=rows)
    empty = pd.DataFrame({"item_id": pd.Series(dtype="string"), "title": pd.Series(dtype="string"),
                          "text": pd.Series(dtype="string")})
    return Tables(inter, empty, src, has_time="time" in columns)


def read_catalogue(path: str | Path, columns: dict[str, str] | None = None, *, sep: str | None = None,
                   encoding: str = "utf-8") -> pd.DataFrame:
    """An item catalogue: item id plus text fields (title, genres, year, category, brand, text).

    Without a ``text`` column the item text is ``title. field: value. ...`` from the fields given.

    Raises:
        DataSchemaError: Missing column; DataValueError: duplicate or empty item ids.
    """
    from petrec.data.errors import DataValueError

    path = Path(path)
    rows, unit = _read_any(path, sep, encoding)
    df = rows.df
    columns = dict(columns or {})
    columns.setdefault("item", "item_id")
    for key in ("title", "genres", "year", "category", "brand", "text"):
        if key not in columns and key in df.columns:
            columns[key] = key
    _map_columns(df, columns, path, ("item",))
    ids = coerce_ids(df[columns["item"]])
    bad = ids.isna() | (ids.fillna("") == "") | ids.duplicated()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValueError(f"{path}, {unit} {rows.lines[i]}, column {columns['item']!r}: item id "
                             f"{df[columns['item']].iloc[i]!r} is empty or duplicated in the catalogue")
    items = pd.DataFrame({"item_id": ids})
    for key in ("title", "genres", "year", "category", "brand", "text"):
        if key in columns:
            items[key] = df[columns[key]].astype("string").fillna("").str.strip().to_numpy()
    if "title" not in items:
        items["title"] = items["text"] if "text" in items else items["item_id"]
    if "text" not in items:
        text = items["title"].copy()
        for key in ("genres", "year", "category", "brand"):
            if key in items:
                text = text + ("." + " " + key.capitalize() + ": " + items[key]).where(items[key] != "", "")
        items["text"] = text + "."
    return items
