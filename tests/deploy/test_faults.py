"""Fault injection on the evaluate / predict / export / load paths (runs in CI, ~30-60 s on 2 cores).

Every file petrec reads there is corrupted or truncated in turn (YAML config, safetensors, JSON:
``petrec_adapter.json``, peft's config, ``metrics.json``, ``manifest.json``, ``config.json``,
``tokenizer.json``; Parquet), and ``petrec export`` is killed with SIGKILL at each of its stages.
Each case must end in ONE line that names the file and what was expected (no traceback, rc 2),
or in a consistent state: the target absent or complete, and no work folder left after the next
export.

The killed exports run ``petrec export`` (``petrec.cli.main``) in a forked child of the test
process, stopped at a stage by ``PETREC_EXPORT_PAUSE_AT``: a fresh ``python -m petrec`` spends
11-25 s importing torch / transformers on a 2-core runner, a fork starts with them loaded. The
child is a separate process all the same, and SIGKILL leaves the files exactly as a killed
command would.
"""

from __future__ import annotations

import gzip
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from petrec.cli import main as petrec_main
from petrec.deploy.export import (
    PAUSE_ENV,
    PAUSE_SECONDS_ENV,
    STAGES,
    export_run,
    load_export,
    remove_stale,
)
from petrec.deploy.manifest import verify_export

KILL_TIMEOUT_S = 60  # the most a child may take to reach its stage

Mutation = Callable[[Path], None]


# ----------------------------------------------------------------------------- mutations


def _truncate(rel: str, keep: float = 0.5) -> Mutation:
    def run(root: Path) -> None:
        path = root / rel
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return run


def _write(rel: str, data: bytes) -> Mutation:
    def run(root: Path) -> None:
        (root / rel).write_bytes(data)

    return run


def _remove(rel: str) -> Mutation:
    def run(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return run


def _rename(rel: str, new: str) -> Mutation:
    def run(root: Path) -> None:
        (root / rel).rename((root / rel).with_name(new))

    return run


def _garble(rel: str) -> Mutation:
    """Same size, bytes scrambled (a corrupt, not a short, file)."""

    def run(root: Path) -> None:
        path = root / rel
        path.write_bytes(bytes((b * 7 + 13) % 256 for b in path.read_bytes()))

    return run


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def _drop_yaml_key(key: str) -> Mutation:
    def run(root: Path) -> None:
        path = root / "config.yaml"
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not line.startswith(f"{key}:")))

    return run


# ----------------------------------------------------------------------------- run folders

# (case id, mutation of a copy of the run, text the one error line must contain)
RUN_CASES: list[tuple[str, Mutation, str]] = [
    ("config_empty", _write("config.yaml", b""), "config.yaml: the file is empty"),
    ("config_only_comments", _write("config.yaml", b"# nothing\n"), "config.yaml: the file is empty"),
    ("config_list", _write("config.yaml", b"- data\n- model\n"), "config.yaml: the top level must be a mapping"),
    ("config_truncated", _truncate("config.yaml", 0.4), "config.yaml"),
    ("config_no_max_length", _drop_yaml_key("max_length"), "config.yaml: key 'max_length' is missing"),
    ("config_bad_yaml", _write("config.yaml", b"data: [unclosed\nmodel: {\n"), "config.yaml: not valid YAML"),
    ("config_not_utf8", _write("config.yaml", b"data:\n  dataset: \xff\xfe\n"), "config.yaml: not UTF-8"),
    ("config_section_scalar", _write("config.yaml", b"data: 3\nmodel: {}\nmax_length: 64\n"),
     "config.yaml: section 'data' is not a mapping (got int 3)"),
    ("adapter_folder_missing", _remove("adapter"), "is not a petrec run folder: adapter is missing"),
    ("meta_missing", _remove("adapter/petrec_adapter.json"), "petrec_adapter.json: file is missing"),
    ("meta_truncated", _truncate("adapter/petrec_adapter.json"), "petrec_adapter.json: not valid JSON"),
    ("meta_empty", _write("adapter/petrec_adapter.json", b""), "petrec_adapter.json: not valid JSON"),
    ("meta_not_object", _write("adapter/petrec_adapter.json", b"[1, 2]"), "petrec_adapter.json: holds a JSON list"),
    ("peft_config_truncated", _truncate("adapter/adapter_config.json"), "adapter_config.json: not valid JSON"),
    ("tensors_missing", _remove("adapter/adapter_model.safetensors"), "has no adapter_model.safetensors"),
    ("tensors_only_bin", _rename("adapter/adapter_model.safetensors", "adapter_model.bin"),
     "petrec never unpickles"),
    ("tensors_truncated", _truncate("adapter/adapter_model.safetensors"), "adapter_model.safetensors: truncated"),
    ("tensors_header_cut", _truncate("adapter/adapter_model.safetensors", 0.002),
     "adapter_model.safetensors: truncated"),
    ("tensors_garbled", _garble("adapter/adapter_model.safetensors"), "adapter_model.safetensors: truncated or not"),
    ("tensors_extra_bytes", lambda root: _append(root / "adapter/adapter_model.safetensors", b"\0" * 9),
     "adapter_model.safetensors: has extra bytes"),
]
COMMANDS = ("evaluate", "predict", "export")


@pytest.fixture(scope="module")
def run_copies(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Mutation], Path]:
    """A mutated copy of the run per case (made once, shared by the three commands)."""
    root = tmp_path_factory.mktemp("fault-runs")
    made: dict[str, Path] = {}

    def get(case: str, mutate: Mutation) -> Path:
        if case not in made:
            folder = root / case
            shutil.copytree(lora_run, folder)
            mutate(folder)
            made[case] = folder
        return made[case]

    return get


def _argv(command: str, run: Path, out: Path) -> list[str]:
    if command == "evaluate":
        return ["evaluate", "--run", str(run)]
    if command == "predict":
        return ["predict", "--run", str(run), "--out", str(out / "preds.csv")]
    return ["export", str(run), str(out / "export")]


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"petrec {command}: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("case", "mutate", "expected"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_broken_run_folder_is_one_error_line(run_copies: Callable[[str, Mutation], Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], command: str, case: str,
                                             mutate: Mutation, expected: str) -> None:
    run = run_copies(case, mutate)
    assert petrec_main(_argv(command, run, tmp_path)) == 2
    line = _one_error_line(capsys, command)
    assert expected in line, line
    assert str(run) in line  # the file is named with its folder
    assert list(tmp_path.iterdir()) == []  # nothing half-written: no predictions, no export, no temp


def test_broken_metrics_json_fails_the_export_before_any_output(lora_run: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    for data, expected in ((None, "metrics.json: not valid JSON"), (b'["valid"]', "metrics.json: holds a JSON list")):
        if data is None:
            _truncate("metrics.json")(run)
        else:
            (run / "metrics.json").write_bytes(data)
        assert petrec_main(["export", str(run), str(tmp_path / "out")]) == 2
        assert expected in _one_error_line(capsys, "export")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ----------------------------------------------------------------------------- export folders


@pytest.fixture(scope="module")
def clean_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fault-export") / "exp"
    export_run(lora_run, out, merged=True, notice=None)
    return out


# (case id, variant to load, mutation of a copy of the export, text the error must contain)
EXPORT_CASES: list[tuple[str, str, Mutation, str]] = [
    ("manifest_missing", "adapter", _remove("manifest.json"), "manifest.json: not found"),
    ("manifest_truncated", "adapter", _truncate("manifest.json"), "manifest.json: not valid JSON"),
    ("manifest_empty", "merged", _write("manifest.json", b""), "manifest.json: not valid JSON"),
    ("manifest_not_utf8", "adapter", _write("manifest.json", b'{"format": "\xff"}'), "manifest.json: not UTF-8"),
    ("catalogue_truncated", "adapter", _truncate("items.parquet"), "catalogue.sha256 mismatch"),
    ("catalogue_missing", "merged", _remove("items.parquet"), "catalogue.file 'items.parquet' is missing"),
    ("config_empty", "merged", _write("config.yaml", b""), "config.yaml: the file is empty"),
    ("config_truncated", "adapter", _truncate("config.yaml", 0.4), "config.yaml"),
    ("adapter_tensors_truncated", "adapter", _truncate("adapter/adapter_model.safetensors"),
     "adapter_model.safetensors: truncated"),
    ("adapter_meta_truncated", "adapter", _truncate("adapter/petrec_adapter.json"),
     "petrec_adapter.json: not valid JSON"),
    ("merged_weights_truncated", "merged", _truncate("merged/model.safetensors"), "model.safetensors: truncated"),
    ("merged_weights_garbled", "merged", _garble("merged/model.safetensors"), "model.safetensors: truncated or not"),
    ("merged_only_bin", "merged", _rename("merged/model.safetensors", "pytorch_model.bin"),
     "petrec never unpickles"),
    ("merged_config_truncated", "merged", _truncate("merged/config.json"), "config.json: not valid JSON"),
    ("merged_tokenizer_truncated", "merged", _truncate("merged/tokenizer.json"), "tokenizer.json: not valid JSON"),
    ("merged_head_truncated", "merged", _truncate("merged/head.safetensors"), "head.safetensors: truncated"),
    ("merged_head_missing", "merged", _remove("merged/head.safetensors"), "head.safetensors"),
    ("merged_folder_missing", "merged", _remove("merged"), "lists folder 'merged', which is missing"),
]


@pytest.mark.parametrize(("case", "variant", "mutate", "expected"), EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_broken_export_folder_is_one_error_line(clean_export: Path, tmp_path: Path, case: str, variant: str,
                                                mutate: Mutation, expected: str) -> None:
    export = tmp_path / "exp"
    shutil.copytree(clean_export, export)
    mutate(export)
    with pytest.raises(ValueError) as info:  # every petrec error is a ValueError
        load_export(export, variant)
    message = str(info.value)
    assert expected in message and str(export) in message, message
    assert "\n" not in message and info.value.__cause__ is None, message


def test_merged_variant_never_falls_back_to_a_pickle(clean_export: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``from_pretrained`` is called with ``use_safetensors=True`` (the check above aside)."""
    from transformers import AutoModel

    seen: dict[str, object] = {}
    original = AutoModel.from_pretrained

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    load_export(clean_export, "merged")
    assert seen.get("use_safetensors") is True


# ----------------------------------------------------------------------------- data files


def test_broken_data_files_are_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    log = pd.DataFrame({"uid": ["u1"] * 4 + ["u2"] * 4, "sku": list("abcdabcd"), "when": list(range(8)),
                        "stars": [4.0, 2, 5, 3, 1, 4, 2, 5]})
    log.to_parquet(tmp_path / "log.parquet")
    _truncate("log.parquet", 0.6)(tmp_path)
    text = tmp_path / "log.csv.gz"
    text.write_bytes(gzip.compress(b"uid,sku,when,stars\n" + b"u1,a,1,4\n" * 46 + b"u\xfc,b,2,5\n"))
    cols = "user=uid,item=sku,time=when,rating=stars"
    for path, expected in ((tmp_path / "log.parquet", "log.parquet: not a readable Parquet file"),
                           (text, "(byte 0xfc at line 48, column 2, byte offset")):
        argv = ["data", "prepare", "--dataset", "csv", "--interactions", str(path), "--columns", cols,
                "--out", str(tmp_path / "out")]
        assert petrec_main(argv) == 2
        line = _one_error_line(capsys, "data prepare")
        assert expected in line and str(path) in line, line
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- kill -9


def _pause_and_kill(argv: list[str], stage: str, while_paused: Callable[[], None]) -> int:
    """Run ``petrec ARGV`` in a forked child stopped at ``stage``; call ``while_paused``; SIGKILL it.

    Returns:
        The child's pid (dead and reaped).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.close(read_end)
            os.dup2(write_end, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            # pytest's capture replaced sys.stderr / sys.stdout: write to the fds themselves.
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - until os._exit
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            import torch

            torch.set_num_threads(1)  # the parent's OpenMP pool does not survive a fork
            os.environ[PAUSE_ENV] = stage
            os.environ[PAUSE_SECONDS_ENV] = str(KILL_TIMEOUT_S)
            code = petrec_main(argv)
        except BaseException:  # anything: report it, then leave
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    seen = b""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while b"paused at stage" not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(left, 0))
            chunk = os.read(read_end, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"the export did not reach stage {stage!r}: {seen.decode(errors='replace')}")
            seen += chunk
        while_paused()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
    return pid


def _work_folders(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# (stage, export argv extras, whether a complete export is already at the target)
KILL_CASES = [
    ("started", [], False),
    ("catalogue", [], False),
    ("adapter", ["--force"], True),
    ("merged", ["--merged"], False),
    ("manifest", ["--merged", "--force"], True),
    ("replaced", ["--force"], True),
    ("published", ["--force", "--merged"], True),
]
assert {c[0] for c in KILL_CASES} == set(STAGES)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize(("stage", "extra", "existing"), KILL_CASES, ids=[f"kill_at_{c[0]}" for c in KILL_CASES])
def test_killed_export_leaves_a_consistent_state_and_the_next_run_cleans_up(
    lora_run: Path, clean_export: Path, tmp_path: Path, stage: str, extra: list[str], existing: bool
) -> None:
    parent = tmp_path / "exports"
    target = parent / "exp"
    parent.mkdir()
    if existing:
        shutil.copytree(clean_export, target)
    before = verify_export(target) if existing else None

    def live_writer_is_left_alone() -> None:
        assert _work_folders(parent)  # the child's temporary folder
        assert remove_stale(parent) == ([], [])  # its writer is alive: not stale

    pid = _pause_and_kill(["export", str(lora_run), str(target), *extra], stage, live_writer_is_left_alone)
    # The killed writer's folders are named after it; the target is absent or complete.
    left = _work_folders(parent)
    assert left and all(f"-{pid}-" in name for name in left), left
    if target.exists():
        manifest = verify_export(target)
        assert manifest == before or stage == "published"  # the old export, or the new whole one
    else:
        assert stage == "replaced" or not existing
    notices: list[str] = []
    if stage == "published":  # the new export is in place; a plain re-export refuses but cleans
        with pytest.raises(ValueError, match="already exists"):
            export_run(lora_run, target, notice=notices.append)
    else:
        export_run(lora_run, target, force=True, notice=notices.append)
    assert len(notices) == 1 and "removed" in notices[0] and all(name in notices[0] for name in left), notices
    assert _work_folders(parent) == [] and [p.name for p in parent.iterdir()] == ["exp"]
    assert verify_export(target).name == "run"


def test_live_writer_other_host_and_legacy_folders_are_left_alone(
    lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from petrec.deploy import export as export_mod

    parent = tmp_path / "exports"
    parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    names = {
        "dead": f".exp.tmp-{dead_pid}-{export_mod._HOST}-00aa11bb",
        "dead_old": f".other.old-{dead_pid}-{export_mod._HOST}-00aa11bc",
        "live": f".exp.tmp-{os.getppid()}-{export_mod._HOST}-00aa11bd",
        "other_host": f".exp.tmp-{dead_pid}-{'0' * 8 if export_mod._HOST != '0' * 8 else '1' * 8}-00aa11be",
        "legacy": ".exp.tmp-k3j_9x2a",
        "unrelated": ".exp.tmp-notes",
    }
    for name in names.values():
        (parent / name).mkdir()
        (parent / name / "manifest.json").write_text("{}")
    assert petrec_main(["export", str(lora_run), str(parent / "exp")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("petrec export:")]
    assert len(err) == 2, err
    assert "removed 2 stale export work folder(s)" in err[0] and names["dead"] in err[0] and names["dead_old"] in err[0]
    assert "record no writer" in err[1] and names["legacy"] in err[1]
    assert _work_folders(parent) == sorted(names[k] for k in ("live", "other_host", "legacy", "unrelated"))
    assert remove_stale(parent) == ([], [parent / names["legacy"]])
