"""The control API: liveness, readiness, plan, report, speed, GPUs, metrics and a status page.

It runs inside `serve` on its own thread (uvicorn), separate from the engine, so it answers
while the engine is busy or down. With a token (`LAUNCHER_API_TOKEN`), everything except the
probes needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
import threading
import time

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from launcher.api.metrics import render
from launcher.errors import LauncherError
from launcher.redact import redact_obj
from launcher.render.page import render_page
from launcher.runtime.cluster import Coordinator, cluster_metrics
from launcher.runtime.state import ControlState


def create_app(state: ControlState, token: str | None = None) -> FastAPI:
    app = FastAPI(title="launcher control API", docs_url=None, redoc_url=None,
                  openapi_url=None)

    async def auth(request: Request) -> None:
        if not token:
            return
        got = request.headers.get("authorization", "")
        if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(),
                                                                   token.encode())):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    protected = [Depends(auth)]

    @app.get("/livez")
    async def livez() -> dict:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        s = state.snapshot()
        below = [i for i, d in s["live"].items() if d["below_target"]]
        body = {"ready": s["ready"], "phase": s["phase"], "reason": s["reason"],
                "headroom_below_target": below}
        return JSONResponse(body, status_code=200 if s["ready"] else 503)

    @app.get("/plan", dependencies=protected)
    async def plan() -> JSONResponse:
        s = state.snapshot()
        if s["plan"] is None:
            raise HTTPException(404, "no plan yet")
        return JSONResponse({**s["plan"], "settings": s["settings"]})

    @app.get("/report", dependencies=protected)
    async def report() -> JSONResponse:
        s = state.snapshot()
        if s["report"] is None:
            raise HTTPException(404, "no attempt yet")
        return JSONResponse({**s["report"], "live": s["live"], "phase": s["phase"]})

    @app.get("/speed", dependencies=protected)
    async def speed() -> JSONResponse:
        """Measured speed (the load before ready) beside the prediction, and the engine now."""
        s = state.snapshot()
        attempts = (s["report"] or {}).get("attempts") or []
        record = (attempts[-1].get("speed") if attempts else None) or {}
        return JSONResponse({"phase": s["phase"], "measured": record.get("measured"),
                             "predicted": record.get("predicted"),
                             "measured_over_predicted": record.get("measured_over_predicted"),
                             "skipped": record.get("skipped"), "live": s["engine_live"]})

    @app.get("/gpus", dependencies=protected)
    def gpus() -> JSONResponse:
        if state.inventory is None:
            raise HTTPException(404, "no live inventory")
        return JSONResponse(redact_obj(state.inventory(), state.secrets))

    @app.get("/metrics", dependencies=protected)
    async def metrics() -> Response:
        body = render(state)
        if state.cluster is not None:  # every node's devices and measured memory
            body += cluster_metrics(state.cluster.snapshot()).encode()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- multi-node: the other nodes of the engine talk to node 0 here ------------------
    def coordinator() -> Coordinator:
        if state.cluster is None:
            raise HTTPException(404, "this launcher is not node 0 of a multi-node engine")
        return state.cluster

    @app.get("/cluster", dependencies=protected)
    def cluster() -> JSONResponse:
        return JSONResponse(redact_obj(coordinator().snapshot(), state.secrets))

    @app.post("/cluster/join", dependencies=protected)
    async def cluster_join(request: Request) -> JSONResponse:
        c = coordinator()
        try:
            return JSONResponse(c.join(await request.json()))
        except (ValueError, LauncherError) as e:  # InputError: a malformed inventory
            raise HTTPException(409, getattr(e, "message", str(e))) from None

    @app.get("/cluster/directive", dependencies=protected)
    def cluster_directive(rank: int) -> JSONResponse:
        try:
            return JSONResponse(coordinator().directive(rank))
        except KeyError:
            raise HTTPException(409, f"rank {rank} has not joined") from None

    @app.post("/cluster/report", dependencies=protected)
    async def cluster_report(request: Request) -> JSONResponse:
        c = coordinator()
        try:
            return JSONResponse(c.report(await request.json()))
        except KeyError:
            raise HTTPException(409, "this rank has not joined") from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    @app.get("/", dependencies=protected, response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(state.snapshot()))

    return app


def start_control_api(state: ControlState, host: str, port: int) -> ControlServer:
    """The control API for `serve` (its `control=`), started; the token comes from
    LAUNCHER_API_TOKEN."""
    server = ControlServer(create_app(state, os.environ.get("LAUNCHER_API_TOKEN") or None),
                           host, port)
    server.start()
    return server


class ControlServer:
    """uvicorn on a daemon thread; `stop()` asks it to exit."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                     access_log=False, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="control-api", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError(f"the control API did not start on {self.config.host}:"
                               f"{self.config.port}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
