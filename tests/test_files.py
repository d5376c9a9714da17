"""petrec.files: a file is replaced whole or left as it was; readers name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from petrec.files import atomic_path, read_json_object, write_json_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    write_json_atomic(target, {"auc": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{half", encoding="utf-8")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text(encoding="utf-8")) == {"auc": 0.5}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_the_temporary_keeps_the_suffix_and_hides_beside_the_target(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:  # savefig picks the format from the suffix
        assert tmp.parent == tmp_path and tmp.name.startswith(".plot.tmp-") and tmp.suffix == ".png"
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png" and not tmp.exists()


def test_json_and_text_writers(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": 1.5}, indent=None)
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{"x": 1.5}\n'
    with pytest.raises(ValueError, match="Out of range float"):
        write_json_atomic(tmp_path / "b.json", {"x": float("nan")}, allow_nan=False)
    assert not list(tmp_path.glob(".b*"))
    write_text_atomic(tmp_path / "c.txt", "ünï")
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "ünï"


@pytest.mark.parametrize(("content", "message"), [
    (None, "file is missing; expected the thing"),
    (b"[1, 2]", "holds a JSON list; expected the thing"),
    (b'{"a": ', "not valid JSON"),
    (b"\xff\xfe", "not UTF-8 text"),
])
def test_read_json_object_names_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_json_object(path, ValueError, "the thing")
    assert str(path) in str(info.value)
