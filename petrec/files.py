"""Files written whole or not at all, and files read with one-line errors that name them.

Every petrec writer of a single file (run metrics, configs, adapters, caches, reports, plots)
goes through :func:`atomic_path`: the content is written to a temporary file beside the target
and moved into place with ``os.replace``, so a reader never sees half a file and a killed
process leaves at worst a hidden ``.NAME.tmp-PID-RANDOM.EXT`` behind. Folders that are swapped
whole (``petrec data prepare``, ``petrec export``, training checkpoints) keep their own logic.

Standard library only: every layer of the package may use it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "check_safetensors", "read_json_object", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The temporary name keeps the target's suffix (``.png``, ``.csv``), so writers that choose a
    format from it work unchanged. On any exception the temporary file is removed and the target
    is left as it was. The parent folder is created if needed.

    Args:
        path: The file to write.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None, allow_nan: bool = True) -> None:
    """Write ``data`` as JSON (and a final newline) to ``path`` atomically.

    Args:
        path: The file to write.
        data: Anything ``json.dumps`` takes.
        indent: Passed to ``json.dumps`` (None: one line).
        default: Converts objects JSON has no type for (e.g. ``float`` for numpy scalars).
        allow_nan: False: refuse NaN / infinity instead of writing non-standard JSON.
    """
    write_text_atomic(path, json.dumps(data, indent=indent, default=default, allow_nan=allow_nan) + "\n")


def read_json_object(path: str | os.PathLike[str], error: type[ValueError],
                     what: str = "a JSON object") -> dict[str, Any]:
    """Read a JSON file that must hold an object, with one-line errors that name the file.

    Args:
        path: The file.
        error: The exception class to raise.
        what: What the file should be, for the message (e.g. ``"the adapter's petrec metadata"``).

    Raises:
        error: Missing, not UTF-8, not JSON (truncated?) or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file is missing; expected {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte offset {exc.start}); expected {what}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc}; truncated?); expected {what}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: holds a JSON {type(data).__name__}; expected {what}")
    return data


def check_safetensors(path: str | os.PathLike[str], error: type[ValueError]) -> None:
    """Check that a safetensors file is whole, reading only its header.

    A safetensors file is an 8-byte little-endian header length, a JSON header that gives every
    tensor's byte range, then the tensor bytes; a complete file ends exactly where the last range
    does. This catches a truncated or corrupt file with a message naming it, where safetensors
    itself raises a ``SafetensorError`` that names no file.

    Args:
        path: The file.
        error: The exception class to raise (``AdapterLoadError`` for an adapter folder, ...).

    Raises:
        error: The file is missing, shorter than its header says, has bytes after the last
            tensor, or its header is not a safetensors JSON header.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file is missing; expected a safetensors file")
    size = path.stat().st_size
    expect = "expected a complete safetensors file (8-byte header length, JSON header, tensor data)"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise error(f"{path}: truncated: {size} bytes; {expect}")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise error(f"{path}: truncated or not safetensors: the header length says {n} bytes but "
                        f"only {size - 8} follow; {expect}")
        try:
            header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise error(f"{path}: corrupt safetensors header (not a JSON map of tensors with "
                        f"data_offsets); {expect}") from None
    want = 8 + n + max(ends, default=0)
    if size != want:
        what = "truncated" if size < want else "has extra bytes"
        raise error(f"{path}: {what}: {size} bytes, its header says {want}; {expect}")
