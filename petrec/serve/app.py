"""The FastAPI application: ``create_app`` (a uvicorn factory reading ``$PETREC_SERVE_CONFIG``).

Routes: ``POST /v1/predict``, ``POST /v1/recommend``, ``POST /v1/explain``, ``GET /v1/adapters``,
``POST|DELETE /v1/adapters/{name}`` (admin keys, their own adapters), ``GET /healthz``,
``GET /readyz`` (no key), ``GET /metrics`` (admin key for all adapters), ``GET /openapi.json``,
``/docs``, ``/redoc`` (any key). Every error answers JSON ``{"detail": ...}``.

Robustness: a bad export never stops the server (it is marked unavailable, with the reason,
and counted in ``petrec_adapter_load_failures_total``; ``--strict`` fails fast instead);
admin operations on one name run one at a time, in arrival order; a request above
``max_request_tokens`` is answered 413 before any work, one past ``request_timeout_s`` 504;
adapters share the inference thread round-robin, one micro-batch each (see
:mod:`petrec.serve.batching`).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route annotations, and the
# request classes are local to ``create_app`` (built with the config's limits).

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional

import torch
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

import petrec
from petrec.explain import prior_parts, rank_by_magnitude, split_score
from petrec.serve.auth import KeyRing, Principal, load_keys, presented_key
from petrec.serve.batching import BatcherClosedError, Scheduler
from petrec.serve.config import ServeConfig
from petrec.serve.engine import (
    BadInputError,
    ItemNotFoundError,
    RequestTooCostlyError,
    build_job,
    build_occlusion_job,
    check_cost,
    job_inputs,
    run_batch,
)
from petrec.serve.metrics import Metrics
from petrec.serve.middleware import BodyLimit, RequestMetrics, WorkerHeader
from petrec.serve.registry import AdapterError, LoadedAdapter, Registry, check_name
from petrec.serve.schemas import (
    AdaptersOut,
    AdapterStatus,
    ErrorOut,
    ExplainOut,
    RecommendOut,
    ScoreOut,
    build_schemas,
)

log = logging.getLogger("petrec.serve")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422)}
#: Inference routes may also answer 503 (adapter being replaced) and 504 (deadline).
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422, 503, 504)}


class ServerState:
    """What one worker process holds: config, keys, registry, metrics, the inference thread."""

    def __init__(self, cfg: ServeConfig, keys: KeyRing) -> None:
        self.cfg = cfg
        self.keys = keys
        self.metrics = Metrics()
        self.registry = Registry(cfg, on_failure=self.metrics.load_failed)
        # One inference thread per worker process: torch runs --torch-threads inside it, and the
        # tokenizers shared between adapters are only ever used from it (they are not thread-safe).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="petrec-infer")
        self.scheduler = self.new_scheduler()
        self._admin_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.ready = False

    def new_scheduler(self) -> Scheduler:
        """A scheduler feeding the inference thread (one per running event loop)."""
        return Scheduler(self.executor, max_rows=self.cfg.max_batch_size,
                         max_wait_s=self.cfg.max_batch_wait_ms / 1000.0, on_batch=self.metrics.observe_batch)

    def activate(self, adapter: LoadedAdapter) -> None:
        """Give ``adapter`` its scheduler lane and serve it (closing the lane it replaces)."""
        run = functools.partial(run_batch, adapter, max_rows=self.cfg.max_batch_size)
        adapter.batcher = self.scheduler.lane(adapter.name, run)
        old = self.registry.install(adapter)
        if old is not None and old is not adapter and old.batcher is not None:
            old.batcher.close()
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        """Model memory and adapter gauges."""
        base = self.registry.base
        self.metrics.set_models(base.bytes if base else 0, self.registry.snapshot(),
                                len(self.registry.unavailable()))

    @asynccontextmanager
    async def admin_lock(self, name: str) -> AsyncIterator[None]:
        """Serialise admin operations on ``name`` in arrival order (FIFO lock per name).

        A load that takes seconds and a DELETE sent meanwhile end in the DELETE's state; locks
        of names nobody waits for are dropped.
        """
        lock, users = self._admin_locks.setdefault(name, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._admin_locks.pop(name, None)

    async def submit(self, name: str, make_job: Any) -> tuple[LoadedAdapter, Any]:
        """Run one job on the adapter currently served as ``name`` (retrying across a hot swap),
        within the request deadline.

        Raises:
            HTTPException: 504 past ``request_timeout_s`` (the job's remaining work is dropped),
                503 when the adapter kept being replaced.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.request_timeout_s
        for _ in range(5):
            adapter = self.registry.get(name)
            job = make_job(adapter)
            try:
                result = await asyncio.wait_for(adapter.batcher.submit(job), max(deadline - loop.time(), 1e-3))
            except BatcherClosedError:
                continue
            except asyncio.TimeoutError:
                self.metrics.deadline_exceeded.labels(name).inc()
                raise HTTPException(
                    504, f"request exceeded its deadline request_timeout_s={self.cfg.request_timeout_s:g} s "
                         "(queueing included); its remaining work was dropped") from None
            return adapter, result
        raise HTTPException(503, f"adapter {name!r} is being replaced; retry")


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(AdapterError)
    async def _adapter_error(_: Request, exc: AdapterError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ItemNotFoundError)
    async def _item_error(_: Request, exc: ItemNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(BadInputError)
    async def _bad_input(_: Request, exc: BadInputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestTooCostlyError)
    async def _too_costly(_: Request, exc: RequestTooCostlyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)


def create_app(cfg: Optional[ServeConfig] = None, *, keys: Optional[KeyRing] = None) -> FastAPI:  # noqa: UP045
    """Build the app (models load in its lifespan, i.e. when the server starts).

    Args:
        cfg: Server config; default ``ServeConfig.from_env()`` (how ``petrec serve`` passes it
            to each uvicorn worker).
        keys: API keys; default from ``cfg.api_keys_file`` or ``$PETREC_API_KEYS``.

    Raises:
        AuthConfigError: No keys configured (and not ``allow_anonymous``), or a malformed key file.
    """
    cfg = cfg or ServeConfig.from_env()
    state = ServerState(cfg, keys if keys is not None else load_keys(cfg.api_keys_file,
                                                                       allow_anonymous=cfg.allow_anonymous))
    schemas = build_schemas(cfg)
    PredictIn, RecommendIn, ExplainIn = schemas.PredictIn, schemas.RecommendIn, schemas.ExplainIn  # noqa: N806

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(cfg.torch_threads)
        state.scheduler = state.new_scheduler()  # bound to this event loop
        # Non-strict: a bad export is recorded as unavailable and skipped (never raised here).
        await asyncio.to_thread(state.registry.startup)
        for adapter in list(state.registry.snapshot().values()):
            state.activate(adapter)
        state.refresh_gauges()
        state.ready = True
        yield
        state.ready = False
        for adapter in state.registry.snapshot().values():
            if adapter.batcher is not None:
                adapter.batcher.close()
        state.scheduler.stop()
        state.executor.shutdown(wait=False, cancel_futures=True)

    # The spec and its pages need a key like every other route: registered below, not here.
    app = FastAPI(title="petrec serve", version=getattr(petrec, "__version__", "0"), lifespan=lifespan,
                  description="Scores and recommendations from petrec adapters on one shared frozen base.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.petrec = state
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    app.add_middleware(WorkerHeader)  # outermost: every answer says which process gave it
    _install_handlers(app)

    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def maybe_principal(x_api_key: Annotated[Optional[str], Security(header_key)] = None,  # noqa: UP045
                        auth: Annotated[Optional[HTTPAuthorizationCredentials], Security(bearer)] = None,  # noqa: UP045
                        ) -> Optional[Principal]:  # noqa: UP045
        """The presented key's principal, or None (no key / an unknown key)."""
        return state.keys.check(x_api_key or (auth.credentials if auth else None))

    def principal(found: Annotated[Optional[Principal], Depends(maybe_principal)]) -> Principal:  # noqa: UP045
        if found is None:
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
        return found

    Key = Annotated[Principal, Depends(principal)]  # noqa: N806

    def allowed(p: Principal, name: str) -> None:
        if not p.allows(name):
            raise HTTPException(403, f"this API key may not use adapter {name!r}")

    def admin(p: Key) -> Principal:
        if not p.admin:
            raise HTTPException(403, "this route needs an admin API key")
        return p

    Admin = Annotated[Principal, Depends(admin)]  # noqa: N806

    def manage(p: Principal, name: str) -> None:
        """Admin rights cover only the key's own adapters (a key without a list: all)."""
        check_name(name)
        if not p.may_manage(name):
            raise HTTPException(403, f"this admin API key may not manage adapter {name!r}")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_spec(_: Key) -> JSONResponse:
        """The OpenAPI document (any valid key)."""
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger_docs(_: Key) -> HTMLResponse:
        """Swagger UI over ``/openapi.json`` (any valid key)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False)
    async def redoc_docs(_: Key) -> HTMLResponse:
        """ReDoc over ``/openapi.json`` (any valid key)."""
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """Liveness: the process answers (no key needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorOut}})
    async def readyz(request: Request) -> Response:
        """Readiness: the base is loaded and the start-up adapters were tried (no key needed).

        ``adapters`` counts the served adapters; when some are unavailable (their load failed)
        ``unavailable`` counts them, and with an admin key ``unavailable_adapters`` gives the
        reason of each (of the key's adapters). The server is ready while it serves the others.
        """
        if not state.ready:
            return JSONResponse({"detail": "loading"}, status_code=503)
        body: dict[str, Any] = {"status": "ready", "adapters": len(state.registry.snapshot())}
        down = state.registry.unavailable()
        if down:
            body["unavailable"] = len(down)
            # The key is optional here (read by hand, so the spec does not mark the route as keyed).
            p = state.keys.check(presented_key(request.headers.get("authorization"), request.headers.get("x-api-key")))
            if p is not None and p.admin:
                body["unavailable_adapters"] = {n: r for n, r in down.items() if p.allows(n)}
        return JSONResponse(body)

    @app.get("/metrics", tags=["health"], response_class=Response, responses=_ERRORS)
    async def metrics(p: Key) -> Response:
        """Prometheus metrics of this worker process (an admin key for all adapters: the labels
        name every adapter)."""
        if not (p.admin and p.unrestricted):
            raise HTTPException(403, "/metrics needs an admin API key for all adapters (its labels name "
                                     "every adapter)")
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.post("/v1/predict", tags=["inference"], responses=_INFER_ERRORS)
    async def predict(body: PredictIn, p: Key) -> ScoreOut:  # type: ignore[valid-type]
        """CTR probabilities or predicted ratings of the candidates, in order."""
        allowed(p, body.adapter)

        def make(adapter: LoadedAdapter) -> Any:
            if adapter.task == "next_item":
                raise HTTPException(422, f"adapter {adapter.name!r} is a next_item model; use /v1/recommend")
            check_cost(adapter, len(body.candidates), cfg.max_request_tokens)
            return build_job(adapter, body.history, body.candidates)

        adapter, scores = await state.submit(body.adapter, make)
        return ScoreOut(adapter=adapter.name, task=adapter.task, scores=scores)

    @app.post("/v1/explain", tags=["inference"], responses=_INFER_ERRORS)
    async def explain(body: ExplainIn, p: Key) -> ExplainOut:  # type: ignore[valid-type]
        """Each history item's occlusion effect on the candidate's score: the score with the full
        history minus the score without that item (ctr / rating adapters; petrec.explain)."""
        allowed(p, body.adapter)
        jobs: list[Any] = []  # the occlusion job `make` builds, for the prior's features below

        def make(adapter: LoadedAdapter) -> Any:
            if adapter.task == "next_item":
                raise HTTPException(422, f"adapter {adapter.name!r} is a next_item model; /v1/explain is for "
                                         "ctr and rating adapters")
            check_cost(adapter, len(body.history) + 1, cfg.max_request_tokens, "rows (history items + 1)")
            jobs.append(build_occlusion_job(adapter, body.history, body.candidate))
            return jobs[-1]

        adapter, scores = await state.submit(body.adapter, make)
        effects = [scores[0] - s for s in scores[1:]]
        parts: dict[str, float] = {}
        if adapter.stats is not None:  # the prior's share, as `petrec explain` reports it (petrec.explain)
            features, _ = job_inputs(adapter, jobs[-1], 0, 1)
            prior = float(prior_parts(adapter.model, features)[0])
            parts = dict(zip(("prior", "lm", "prior_share"), split_score(adapter.task, scores[0], prior), strict=True))
        return ExplainOut(adapter=adapter.name, task=adapter.task, score=scores[0], ranking=rank_by_magnitude(effects),
                          effects=[{"position": j, "item_id": h.item_id, "effect": e}
                                   for j, (h, e) in enumerate(zip(body.history, effects, strict=True))], **parts)

    @app.post("/v1/recommend", tags=["inference"], responses=_INFER_ERRORS)
    async def recommend(body: RecommendIn, p: Key) -> RecommendOut:  # type: ignore[valid-type]
        """Top-k catalogue items for the history (next-item adapters), best first."""
        allowed(p, body.adapter)

        def make(adapter: LoadedAdapter) -> Any:
            if adapter.task != "next_item":
                raise HTTPException(422, f"adapter {adapter.name!r} is a {adapter.task} model; use /v1/predict")
            check_cost(adapter, 1, cfg.max_request_tokens)
            return build_job(adapter, body.history, None, k=body.k, exclude_seen=body.exclude_seen)

        adapter, rows = await state.submit(body.adapter, make)
        return RecommendOut(adapter=adapter.name, items=[{"item_id": i, "score": s} for i, s in rows[0]])

    @app.get("/v1/adapters", tags=["adapters"], responses=_ERRORS)
    async def list_adapters(p: Key) -> AdaptersOut:
        """Loaded adapters this key may use; admin keys also see, for their own adapters, the
        folders available, failed loads (``refused``) and each one's ``status``."""
        snap = state.registry.snapshot()
        loaded = [a.describe() for n, a in sorted(snap.items()) if p.allows(n)]
        if not p.admin:
            return AdaptersOut(loaded=loaded, available=[], refused={})
        errors = {n: r for n, r in sorted(state.registry.errors.items()) if p.allows(n)}
        available = [n for n in state.registry.available() if p.allows(n)]
        names = sorted({*(n for n in snap if p.allows(n)), *errors, *available})
        status = [AdapterStatus(name=n, reason=errors.get(n),
                                status="loaded" if n in snap else "unavailable" if n in errors else "available")
                  for n in names]
        return AdaptersOut(loaded=loaded, available=available, refused=errors, status=status)

    @app.post("/v1/adapters/{name}", tags=["adapters"], responses=_ERRORS)
    async def load_adapter(name: str, p: Admin) -> dict:
        """Load (or replace) adapter ``name`` from the configured adapters directory only.

        Admin operations on one name run one at a time, in arrival order. A bad export answers
        422 naming the file (404 when there is no such folder); a replaced adapter keeps serving.
        """
        manage(p, name)
        async with state.admin_lock(name):
            try:
                adapter = await asyncio.to_thread(state.registry.build, name)
            except AdapterError as exc:
                state.refresh_gauges()
                log.warning("adapter %s not loaded: %s", name, exc)
                raise
            replaced = name in state.registry.snapshot()
            state.activate(adapter)
        log.info("adapter %s %s", name, "replaced" if replaced else "loaded")
        return {"loaded": name, "replaced": replaced, "adapter": adapter.describe()}

    @app.delete("/v1/adapters/{name}", tags=["adapters"], responses=_ERRORS)
    async def unload_adapter(name: str, p: Admin) -> dict:
        """Stop serving ``name`` (requests already queued for it still finish); waits for an
        admin operation on the same name that arrived before."""
        manage(p, name)
        async with state.admin_lock(name):
            old = state.registry.remove(name)
            if old.batcher is not None:
                old.batcher.close()
            state.refresh_gauges()
        log.info("adapter %s removed", name)
        return {"removed": name}

    return app
