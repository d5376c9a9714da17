"""ASGI middlewares: request-body limit (413), Prometheus request metrics, the worker header."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from petrec.serve.metrics import Metrics

Scope = dict[str, Any]


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413 when ``Content-Length`` or the streamed body exceeds ``max_bytes``.

    The body (at most ``max_bytes``) is read here and replayed to the app.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body larger than {self.max_bytes} bytes"
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                if not value.isdigit():
                    await _reply(send, 400, "invalid Content-Length")
                    return
                if int(value) > self.max_bytes:
                    await _reply(send, 413, too_big)
                    return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Count every request by route template (not raw path), method and status; time it."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unrouted"
            self.metrics.observe_request(route, scope.get("method", "?"), status, time.perf_counter() - start)


#: Response header naming the worker process that answered (its pid).
WORKER_HEADER = "X-Petrec-Worker"


class WorkerHeader:
    """Add ``X-Petrec-Worker: <pid>`` to every HTTP response (which worker process answered).

    With ``--workers N`` each worker is its own process; the header tells them apart (e.g. to
    check that all of them answer the same). It is read at response time, so it is the pid of
    the process that served the request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []),
                           (WORKER_HEADER.lower().encode(), str(os.getpid()).encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)
