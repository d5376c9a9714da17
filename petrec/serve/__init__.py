"""HTTP model server for exported adapters: ``petrec serve --base B --adapters DIR``.

One frozen base model in memory; each adapter of ``DIR`` (a ``petrec export`` folder) is a
thin module tree that shares the base's tensors and adds only its own. Requests are
micro-batched per adapter. Importing this package does not import FastAPI; the app lives in
:mod:`petrec.serve.app` (``create_app``), which needs the ``serve`` extra
(``pip install -e ".[serve]"``).
"""

from __future__ import annotations

from petrec.serve.config import ServeConfig

__all__ = ["ServeConfig"]
