"""The FastAPI application: ``create_app`` (a uvicorn factory reading ``$PETREC_SERVE_CONFIG``).

Routes: ``POST /v1/predict``, ``POST /v1/recommend``, ``GET /v1/adapters``,
``POST|DELETE /v1/adapters/{name}`` (admin keys), ``GET /healthz``, ``GET /readyz``
(no key), ``GET /metrics``. Every error answers JSON ``{"detail": ...}``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route annotations, and the
# request classes are local to ``create_app`` (built with the config's limits).

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional

import torch
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

import petrec
from petrec.serve.auth import KeyRing, Principal, load_keys
from petrec.serve.batching import BatcherClosedError, MicroBatcher
from petrec.serve.config import ServeConfig
from petrec.serve.engine import BadInputError, ItemNotFoundError, build_job, run_batch
from petrec.serve.metrics import Metrics
from petrec.serve.middleware import BodyLimit, RequestMetrics
from petrec.serve.registry import AdapterError, LoadedAdapter, Registry, check_name
from petrec.serve.schemas import AdaptersOut, ErrorOut, RecommendOut, ScoreOut, build_schemas

log = logging.getLogger("petrec.serve")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422)}


class ServerState:
    """What one worker process holds: config, keys, registry, metrics, the inference thread."""

    def __init__(self, cfg: ServeConfig, keys: KeyRing) -> None:
        self.cfg = cfg
        self.keys = keys
        self.registry = Registry(cfg)
        self.metrics = Metrics()
        # One inference thread per worker process: torch runs --torch-threads inside it, and the
        # tokenizers shared between adapters are only ever used from it (they are not thread-safe).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="petrec-infer")
        self.ready = False

    def activate(self, adapter: LoadedAdapter) -> None:
        """Give ``adapter`` its micro-batcher and serve it (closing the one it replaces)."""
        run = functools.partial(run_batch, adapter, max_rows=self.cfg.max_batch_size)
        adapter.batcher = MicroBatcher(
            run, self.executor, max_rows=self.cfg.max_batch_size,
            max_wait_s=self.cfg.max_batch_wait_ms / 1000.0,
            on_batch=functools.partial(self.metrics.observe_batch, adapter.name))
        old = self.registry.install(adapter)
        if old is not None and old is not adapter and old.batcher is not None:
            old.batcher.close()
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        """Model memory and adapter gauges."""
        base = self.registry.base
        self.metrics.set_models(base.bytes if base else 0, self.registry.snapshot())

    async def submit(self, name: str, make_job: Any) -> tuple[LoadedAdapter, Any]:
        """Run one job on the adapter currently served as ``name`` (retrying across a hot swap)."""
        for _ in range(5):
            adapter = self.registry.get(name)
            job = make_job(adapter)
            try:
                return adapter, await adapter.batcher.submit(job)
            except BatcherClosedError:
                continue
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
    PredictIn, RecommendIn = schemas.PredictIn, schemas.RecommendIn  # noqa: N806

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        torch.set_num_threads(cfg.torch_threads)
        await asyncio.to_thread(state.registry.startup)
        for adapter in list(state.registry.snapshot().values()):
            state.activate(adapter)
        state.ready = True
        yield
        state.ready = False
        for adapter in state.registry.snapshot().values():
            if adapter.batcher is not None:
                adapter.batcher.close()
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="petrec serve", version=getattr(petrec, "__version__", "0"), lifespan=lifespan,
                  description="Scores and recommendations from petrec adapters on one shared frozen base.")
    app.state.petrec = state
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    _install_handlers(app)

    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def principal(x_api_key: Annotated[Optional[str], Security(header_key)] = None,  # noqa: UP045
                  auth: Annotated[Optional[HTTPAuthorizationCredentials], Security(bearer)] = None,  # noqa: UP045
                  ) -> Principal:
        found = state.keys.check(x_api_key or (auth.credentials if auth else None))
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

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """Liveness: the process answers (no key needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorOut}})
    async def readyz() -> Response:
        """Readiness: the base and the start-up adapters are loaded (no key needed)."""
        if not state.ready:
            return JSONResponse({"detail": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "adapters": len(state.registry.snapshot())})

    @app.get("/metrics", tags=["health"], response_class=Response, responses=_ERRORS)
    async def metrics(_: Key) -> Response:
        """Prometheus metrics of this worker process."""
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.post("/v1/predict", tags=["inference"], responses=_ERRORS)
    async def predict(body: PredictIn, p: Key) -> ScoreOut:  # type: ignore[valid-type]
        """CTR probabilities or predicted ratings of the candidates, in order."""
        allowed(p, body.adapter)

        def make(adapter: LoadedAdapter) -> Any:
            if adapter.task == "next_item":
                raise HTTPException(422, f"adapter {adapter.name!r} is a next_item model; use /v1/recommend")
            return build_job(adapter, body.history, body.candidates)

        adapter, scores = await state.submit(body.adapter, make)
        return ScoreOut(adapter=adapter.name, task=adapter.task, scores=scores)

    @app.post("/v1/recommend", tags=["inference"], responses=_ERRORS)
    async def recommend(body: RecommendIn, p: Key) -> RecommendOut:  # type: ignore[valid-type]
        """Top-k catalogue items for the history (next-item adapters), best first."""
        allowed(p, body.adapter)

        def make(adapter: LoadedAdapter) -> Any:
            if adapter.task != "next_item":
                raise HTTPException(422, f"adapter {adapter.name!r} is a {adapter.task} model; use /v1/predict")
            return build_job(adapter, body.history, None, k=body.k, exclude_seen=body.exclude_seen)

        adapter, top = await state.submit(body.adapter, make)
        return RecommendOut(adapter=adapter.name, items=[{"item_id": i, "score": s} for i, s in top])

    @app.get("/v1/adapters", tags=["adapters"], responses=_ERRORS)
    async def list_adapters(p: Key) -> AdaptersOut:
        """Loaded adapters this key may use (admin keys also see available folders and refusals)."""
        loaded = [a.describe() for n, a in sorted(state.registry.snapshot().items()) if p.allows(n)]
        if not p.admin:
            return AdaptersOut(loaded=loaded, available=[], refused={})
        return AdaptersOut(loaded=loaded, available=state.registry.available(), refused=state.registry.errors)

    @app.post("/v1/adapters/{name}", tags=["adapters"], responses=_ERRORS)
    async def load_adapter(name: str, _: Admin) -> dict:
        """Load (or replace) adapter ``name`` from the configured adapters directory only."""
        check_name(name)
        adapter = await asyncio.to_thread(state.registry.build, name)
        replaced = name in state.registry.snapshot()
        state.activate(adapter)
        state.registry.errors.pop(name, None)
        log.info("adapter %s %s", name, "replaced" if replaced else "loaded")
        return {"loaded": name, "replaced": replaced, "adapter": adapter.describe()}

    @app.delete("/v1/adapters/{name}", tags=["adapters"], responses=_ERRORS)
    async def unload_adapter(name: str, _: Admin) -> dict:
        """Stop serving ``name`` (requests already queued for it still finish)."""
        old = state.registry.remove(name)
        if old.batcher is not None:
            old.batcher.close()
        state.refresh_gauges()
        log.info("adapter %s removed", name)
        return {"removed": name}

    return app
