"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz, /api/status, /api/jobs.

Bound to 127.0.0.1 by default. With `http.token-file` set, /metrics and /api/* want
`Authorization: Bearer <token>`; /healthz and /readyz stay open for probes. Handlers never
hold the event loop: metrics are rendered in a thread from in-memory counters (database gauges
are refreshed by a background task, never by a scrape).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mirrord.metrics import Metrics
from mirrord.secret import Secret
from mirrord.status import collect_status, job_facts
from mirrord.store import JobState, Store, migrate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes (systemd, Docker HEALTHCHECK, Kubernetes) rarely carry a token; these two answer
# booleans only, so they stay open. /metrics and /api show names and errors: token-protected.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass
class WebState:
    store: Store
    metrics: Metrics
    scheduler_running: Callable[[], bool]
    token: Secret | None = None


def _authorized(request: web.Request, token: Secret | None) -> bool:
    if token is None:
        return True
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encode them back the same way
    # (a stray byte such as 0xff is then just a wrong token, not an error)
    header = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(header, f"Bearer {token.reveal()}".encode())


def make_app(state: WebState) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not _authorized(request, state.token):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(state.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await _readiness(state)
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(await collect_status(state.store))

    async def jobs(request: web.Request) -> web.Response:
        wanted = request.query.get("state")
        try:
            job_state = JobState(wanted) if wanted else None
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return web.json_response({"error": "bad state or limit"}, status=400)
        if limit < 1:
            return web.json_response({"error": "limit must be at least 1"}, status=400)
        limit = min(limit, 1000)
        found = await state.store.queue.jobs(job_state, limit=limit)
        return web.json_response({"jobs": [job_facts(j) for j in found]})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/jobs", jobs)
    return app


async def _readiness(state: WebState) -> dict[str, bool]:
    try:
        revision = await migrate.current_revision(state.store.db)
        database, migrated = True, revision == migrate.head_from_files()
    except Exception:
        database, migrated = False, False
    return {"database": database, "migrations": migrated, "scheduler": state.scheduler_running()}


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
