"""Typed server configuration, passed to uvicorn workers through one environment variable."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

#: Environment variable holding the JSON of a :class:`ServeConfig` (set by ``petrec serve``).
CONFIG_ENV = "PETREC_SERVE_CONFIG"


class ServeConfigError(ValueError):
    """A server setting is wrong; the message names the setting."""


@dataclass
class ServeConfig:
    """Everything the server reads at start (all overridable by ``petrec serve`` flags)."""

    base: str = "minilm"
    """The frozen base every adapter must have been trained on (alias, folder or cached hub id)."""
    adapters_dir: str = "adapters"
    """Folder of export folders; adapters are only ever loaded from here, by name."""
    load: list[str] | None = None
    """Adapter names to load at start; None = every export folder in ``adapters_dir``."""
    strict: bool = False
    """Fail at start when an adapter is refused (default: log the reason and skip it)."""
    api_keys_file: str | None = None
    """JSON file of API keys (see :mod:`petrec.serve.auth`); else ``$PETREC_API_KEYS``."""
    allow_anonymous: bool = False
    """Serve without any API key configured (every route open). Off by default."""
    max_history: int = 200
    """Most history items in one request."""
    max_candidates: int = 1000
    """Most candidate items in one ``/v1/predict`` request."""
    max_k: int = 1000
    """Largest ``k`` of ``/v1/recommend``."""
    max_text_chars: int = 2000
    """Longest raw item text."""
    max_body_bytes: int = 1 << 20
    """Largest request body (413 above)."""
    max_batch_size: int = 64
    """Examples per forward pass; a micro-batch closes when it has this many."""
    max_batch_wait_ms: float = 5.0
    """How long a micro-batch waits for more requests after its first one."""
    torch_threads: int = 1
    """``torch.set_num_threads`` per worker process."""
    max_request_tokens: int = 8192
    """Cost bound of one request: its rows (candidates, or 1 for ``/v1/recommend``) times the
    adapter's ``max_length`` (the tokens its forward pass may process). Above: 413. 8192 tokens
    of MiniLM take about 3 s on one CPU thread."""
    request_timeout_s: float = 10.0
    """Deadline of one inference request, queueing included; 504 when exceeded (its remaining
    micro-batches are dropped)."""

    def __post_init__(self) -> None:
        for name in ("max_history", "max_candidates", "max_k", "max_text_chars", "max_body_bytes",
                     "max_batch_size", "torch_threads", "max_request_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ServeConfigError(f"ServeConfig.{name}: expected an integer >= 1, got {value!r}")
        if not float(self.max_batch_wait_ms) >= 0.0:
            raise ServeConfigError(f"ServeConfig.max_batch_wait_ms: expected >= 0, got {self.max_batch_wait_ms!r}")
        timeout = self.request_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0.0:
            raise ServeConfigError(
                f"ServeConfig.request_timeout_s: expected seconds > 0, got {self.request_timeout_s!r}")
        if self.load is not None and not isinstance(self.load, list):
            raise ServeConfigError(f"ServeConfig.load: expected a list of names or None, got {self.load!r}")

    def to_json(self) -> str:
        """The JSON text :meth:`from_env` reads back."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """Parse :meth:`to_json` output; unknown keys are an error."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ServeConfigError(f"{CONFIG_ENV}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The config in ``$PETREC_SERVE_CONFIG`` (defaults when unset)."""
        text = os.environ.get(CONFIG_ENV)
        return cls.from_json(text) if text else cls()
