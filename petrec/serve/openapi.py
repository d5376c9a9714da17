"""Print the server's OpenAPI spec (default limits): ``python -m petrec.serve.openapi > docs/openapi.json``."""

from __future__ import annotations

import json
from typing import Any


def spec() -> dict[str, Any]:
    """The OpenAPI document of an app with the default :class:`ServeConfig` (no model loads)."""
    from petrec.serve.app import create_app
    from petrec.serve.auth import KeyRing
    from petrec.serve.config import ServeConfig

    return create_app(ServeConfig(), keys=KeyRing()).openapi()


def render() -> str:
    """The spec as the committed text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
