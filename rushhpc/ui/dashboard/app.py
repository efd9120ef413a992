"""The dashboard's web app (Starlette): JSON endpoints, a server-sent-events stream, the page.

`create_app(config, default_network, allow_control, token)` builds it; `rushhpc dashboard`
serves it with uvicorn. Networks are read through `Network.open` views (read only); a
manager (`Rush.attach`) is built only for a stop request, and only with ``allow_control``.

Endpoints (``{net}`` is a network id):

=============================  ====================================================================
``GET /``                      the page (``static/index.html``; the files it loads under ``/static``)
``GET /api/config``            ``auth_required``, ``authenticated``, ``allow_control``, ``csrf``,
                               ``default_network``, ``redis`` (host:port only), ``interval``,
                               ``states`` (the state names the page uses: `states_doc`)
``POST /api/login``            ``{"token": ...}`` -> session cookie (when a token is required)
``GET /api/networks``          every network on the Redis with worker and task counts
``GET /api/{net}/snapshot``    workers, task and worker counts, throughput, server time, log head
``GET /api/{net}/events``      the snapshot as server-sent events (``event: snapshot``) every interval
``GET /api/{net}/workers``     worker rows with ``heartbeat_age``
``GET /api/{net}/counts``      ``tasks``, ``workers`` (by state), ``throughput``
``GET /api/{net}/tasks``       ``?state=finished&sort=COL&order=asc|desc&limit=N&offset=M``
``GET /api/{net}/results.csv`` the same table as CSV (``state``, ``sort``, ``order``)
``GET /api/{net}/logs``        ``?level=WARNING&after=STREAM_ID&limit=N``
``GET /api/{net}/best``        best-so-far series: ``?column=y&direction=minimize|maximize``
``GET /api/{net}/pareto``      a sweep with several metrics: its front (first two metrics), hypervolume
``GET /api/{net}/fidelity``    an asha/hyperband sweep: each configuration's curve over fidelity, per rung counts
``GET /api/{net}/timeline``    worker lifetimes and task run times
``POST /api/{net}/stop``       ``{"type": "terminate"|"kill", "workers": [ids] | "all"}``
=============================  ====================================================================
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rushhpc._version import __version__
from rushhpc.core.states import ALIVE_JOB_STATES, TERMINAL_TASK_STATES, JobState, TaskState, WorkerState
from rushhpc.errors import RushConfigError, RushError
from rushhpc.network.view import Network
from rushhpc.store.connection import RedisConfig
from rushhpc.store.keys import validate_id
from rushhpc.ui.dashboard.data import NetworkData, jsonable, network_summaries
from rushhpc.ui.dashboard.security import COOKIE, Access, Guard

STATIC = Path(__file__).resolve().parent / "static"
CONTROL_DISABLED = "control is disabled: restart the dashboard with --allow-control to stop workers from the page"


class Dashboard:
    """The state behind the app: one Redis client, a `NetworkData` per network looked at,
    and (with ``allow_control``) one attached manager per network a stop was asked for."""

    def __init__(self, config: RedisConfig, default_network: str | None, allow_control: bool, interval: float):
        self.config = config
        self.default_network = default_network
        self.allow_control = allow_control
        self.interval = interval
        self.client = config.connect()
        self._lock = threading.Lock()
        self._data: dict[str, NetworkData] = {}
        self._managers: dict[str, Any] = {}

    def data(self, network_id: str) -> NetworkData:
        validate_id(network_id)
        with self._lock:
            d = self._data.get(network_id)
        if d is None:
            d = NetworkData(Network.open(network_id, self.config, client=self.client))
            with self._lock:
                d = self._data.setdefault(network_id, d)
        return d

    def forget(self, network_id: str) -> None:
        with self._lock:
            self._data.pop(network_id, None)

    def manager(self, network_id: str) -> Any:
        """An attached manager of this network (built on first use; only with allow_control)."""
        if not self.allow_control:
            raise PermissionError(CONTROL_DISABLED)
        from rushhpc.manager.rush import Rush

        with self._lock:
            m = self._managers.get(network_id)
            if m is None:
                m = self._managers[network_id] = Rush.attach(network_id, self.config)
            return m

    def stop(self, network_id: str, how: str, workers: Any) -> dict[str, Any]:
        if how not in ("terminate", "kill"):
            raise RushConfigError(f"type must be terminate or kill, got {how!r}")
        if workers != "all" and not (isinstance(workers, list) and workers and all(isinstance(w, str) for w in workers)):
            raise RushConfigError('workers must be a list of worker ids or "all"')
        self.data(network_id).check()
        rush = self.manager(network_id)
        if workers != "all":
            known = set(rush.worker_ids) | set(rush.worker_ids_in(WorkerState.PENDING))
            unknown = [w for w in workers if w not in known]
            if unknown:
                raise RushConfigError(f"no worker {', '.join(unknown)} in network {network_id}")
        acted = rush.stop_workers(type=how, worker_ids=None if workers == "all" else workers)
        return {"network": network_id, "type": how, "workers": acted}

    def close(self) -> None:
        with self._lock:
            managers = list(self._managers.values())
            self._managers.clear()
        for m in managers:
            m.close()


def _json(doc: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(doc), status_code=status)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int(request: Request, name: str, default: int, lo: int = 0, hi: int = 100_000) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise RushConfigError(f"{name} must be an integer, got {raw!r}")
    return max(lo, min(hi, v))


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def states_doc() -> dict[str, list[str]]:
    """The state names the page needs (it cannot import `rushhpc.core.states`): served in
    ``/api/config`` so that dashboard.js never spells a list of states itself.

    Example:
        >>> states_doc()["task"]
        ['queued', 'running', 'finished', 'failed']
    """
    return {"task": list(TaskState.values()), "terminal": [s.value for s in TaskState if s in TERMINAL_TASK_STATES],
            "worker": list(WorkerState.values()), "alive": [s.value for s in JobState if s in ALIVE_JOB_STATES]}


class Api:
    """The endpoints (one method each) over one `Dashboard` and its `Access` rules."""

    def __init__(self, dash: Dashboard, access: Access):
        self.dash = dash
        self.access = access

    def net_of(self, request: Request) -> NetworkData:
        return self.dash.data(request.path_params["net"])

    def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def config(self, request: Request) -> Response:
        dash = self.dash
        ok = self.access.authenticated(_headers(request))
        doc: dict[str, Any] = {"auth_required": self.access.auth_required, "authenticated": ok, "version": __version__}
        if ok:
            doc.update(allow_control=dash.allow_control, csrf=self.access.csrf, default_network=dash.default_network,
                       redis=dash.config.address, interval=dash.interval, states=states_doc())
        return _json(doc)

    async def login(self, request: Request) -> Response:
        if not self.access.auth_required:
            return _json({"authenticated": True})
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not self.access.check_token(body.get("token")):
            await asyncio.sleep(0.5)  # no fast guessing (the token has 192 random bits anyway)
            return _error(401, "wrong token: use the one `rushhpc dashboard` printed when it started")
        resp = _json({"authenticated": True})
        resp.set_cookie(COOKIE, self.access.session_cookie(), httponly=True, samesite="strict", path="/")
        return resp

    def networks(self, request: Request) -> Response:
        dash = self.dash
        return _json({"redis": dash.config.address, "default_network": dash.default_network,
                      "networks": network_summaries(dash.config, dash.client)})

    def snapshot(self, request: Request) -> Response:
        return _json(self.net_of(request).snapshot())

    def workers(self, request: Request) -> Response:
        return _json(self.net_of(request).workers())

    def counts(self, request: Request) -> Response:
        return _json(self.net_of(request).counts())

    def tasks(self, request: Request) -> Response:
        q = request.query_params
        return _json(self.net_of(request).tasks(q.get("state", TaskState.FINISHED), q.get("sort") or None,
                                                q.get("order", "asc"), _int(request, "limit", 200, 1, 10_000),
                                                _int(request, "offset", 0)))

    def results_csv(self, request: Request) -> Response:
        q = request.query_params
        d = self.net_of(request)
        state = q.get("state", TaskState.FINISHED)
        text = d.csv(state, q.get("sort") or None, q.get("order", "asc"))
        name = f"{d.network_id}-{state}.csv"
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    def logs(self, request: Request) -> Response:
        q = request.query_params
        return _json(self.net_of(request).logs(q.get("level") or None, q.get("after") or None,
                                               _int(request, "limit", 500, 1, 10_000)))

    def best(self, request: Request) -> Response:
        q = request.query_params
        return _json(self.net_of(request).best(q.get("column") or None, q.get("direction") or None))

    def pareto(self, request: Request) -> Response:
        return _json(self.net_of(request).pareto())

    def fidelity(self, request: Request) -> Response:
        return _json(self.net_of(request).fidelity())

    def timeline(self, request: Request) -> Response:
        return _json(self.net_of(request).timeline(_int(request, "limit", 2000, 1, 20_000)))

    async def stop(self, request: Request) -> Response:
        if not self.dash.allow_control:
            return _error(403, CONTROL_DISABLED)
        refusal = self.access.control_refusal(_headers(request), request.url.scheme)
        if refusal:
            return _error(403, refusal)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be JSON: {\"type\": \"terminate\"|\"kill\", \"workers\": [ids] | \"all\"}")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        doc = await run_in_threadpool(self.dash.stop, request.path_params["net"], body.get("type", "terminate"),
                                      body.get("workers"))
        return _json(doc)

    async def events(self, request: Request) -> Response:
        d = await run_in_threadpool(self.net_of, request)
        interval = self.dash.interval

        async def stream() -> AsyncIterator[str]:
            yield f"retry: {int(max(1.0, interval) * 1000)}\n\n"
            while True:
                try:
                    doc = await run_in_threadpool(d.snapshot)
                    yield "event: snapshot\ndata: " + json.dumps(jsonable(doc)) + "\n\n"
                except (RushError, redis.RedisError) as e:
                    yield "event: problem\ndata: " + json.dumps({"error": str(e)}) + "\n\n"
                await asyncio.sleep(interval)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    # ------------------------------------------------------------------ errors
    async def on_rush_error(self, request: Request, exc: Exception) -> Response:
        if "net" in request.path_params and "no longer exists" in str(exc):
            self.dash.forget(request.path_params["net"])
        status = 404 if "no network" in str(exc) or "no longer exists" in str(exc) else 400
        return _error(status, str(exc))

    async def on_redis_error(self, request: Request, exc: Exception) -> Response:
        return _error(503, f"Redis at {self.dash.config.address}: {exc}")

    async def on_permission(self, request: Request, exc: Exception) -> Response:
        return _error(403, str(exc))

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index),
            Route("/api/config", self.config),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/networks", self.networks),
            Route("/api/{net}/snapshot", self.snapshot),
            Route("/api/{net}/events", self.events),
            Route("/api/{net}/workers", self.workers),
            Route("/api/{net}/counts", self.counts),
            Route("/api/{net}/tasks", self.tasks),
            Route("/api/{net}/results.csv", self.results_csv),
            Route("/api/{net}/logs", self.logs),
            Route("/api/{net}/best", self.best),
            Route("/api/{net}/pareto", self.pareto),
            Route("/api/{net}/fidelity", self.fidelity),
            Route("/api/{net}/timeline", self.timeline),
            Route("/api/{net}/stop", self.stop, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]


def create_app(config: RedisConfig, default_network: str | None = None, allow_control: bool = False,
               token: str | None = None, *, loopback: bool = True, interval: float = 1.0) -> Starlette:
    """The dashboard app. ``token``: required for every API call (pass one when not bound to
    loopback); ``loopback``: serve only requests addressed to 127.0.0.1/localhost/[::1].

    Example:
        >>> app = create_app(redis_config(url="redis://127.0.0.1:6379"), "sweep-1", allow_control=True)
        >>> uvicorn.run(app, host="127.0.0.1", port=8765)
    """
    dash = Dashboard(config, default_network, allow_control, interval)
    access = Access(token, loopback)
    api = Api(dash, access)
    app = Starlette(routes=api.routes(), exception_handlers={
        RushError: api.on_rush_error, redis.RedisError: api.on_redis_error, PermissionError: api.on_permission})
    app.state.dashboard = dash
    app.state.access = access
    app.add_middleware(Guard, access=access)
    return app


__all__ = ["Api", "Dashboard", "create_app", "states_doc"]
