"""GET /healthz (JSON) and GET /metrics (Prometheus text), as Starlette routes.

The portal mounts them on its listener; `serve` also runs them alone on `[metrics] listen`.
Database work runs in a worker thread so a slow database never stalls the event loop.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailgate import logs
from mailgate.errors import TempFailure
from mailgate.metrics import Metrics
from mailgate.services.health import HealthProbe
from mailgate.services.leases import Leases

NO_STORE = {"Cache-Control": "no-store"}


class HealthSources(Protocol):
    """What the routes read from the App (kept structural: adapters never import app.py)."""

    health: HealthProbe
    metrics: Metrics
    listeners: dict[str, tuple[str, int]]
    mailboxes: dict[str, str]
    mailbox_details: dict[str, dict[str, Any]]
    leases: Leases


def health_routes(app: HealthSources) -> list[Route]:
    async def healthz(request: Request) -> Response:
        try:
            figures = await run_in_threadpool(app.health.figures)
            reachable = True
        except TempFailure as exc:
            logs.warning("health.database_unreachable", error=str(exc))
            figures, reachable = {}, False
        body = {
            "status": "ok" if reachable else "unavailable",
            # Several instances on one database: who answers, and the jobs ("job:NAME") and
            # IMAP mailboxes ("imap:NAME") it holds now.
            "instance": app.leases.instance,
            "holds": app.leases.holds(),
            "database_reachable": reachable,
            "listeners": {name: f"{h}:{p}" for name, (h, p) in list(app.listeners.items())},
            "imap": dict(app.mailboxes),
            # Per mailbox: auth, state, last_login, last_poll, token_expires_at, error.
            "mailboxes": {k: dict(v) for k, v in list(app.mailbox_details.items())},
            "oldest_unsent_age_seconds": figures.get("outbound_oldest_queued_seconds"),
            "outbox_queued": _int(figures.get("outbound_queued")),
            "quarantine_size": _int(figures.get("quarantine_held")),
        }
        return JSONResponse(body, status_code=200 if reachable else 503, headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        data, content_type = await run_in_threadpool(app.metrics.render)
        return Response(data, media_type=content_type, headers=NO_STORE)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
