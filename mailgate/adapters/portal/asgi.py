"""The portal's Starlette application: routes, static files, security middleware, errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from mailgate import logs
from mailgate.adapters.portal import (
    routes_account,
    routes_auth,
    routes_help,
    routes_oidc,
    routes_tickets,
)
from mailgate.adapters.portal.i18n import Catalogs
from mailgate.adapters.portal.security import BodyLimit, CookiePolicy, Csrf, SecurityHeaders
from mailgate.adapters.portal.web import PortalSettings, Site, language_of, visit
from mailgate.errors import TempFailure
from mailgate.services.portal import Portal

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    portal: Portal,
    settings: PortalSettings,
    extra_routes: Sequence[BaseRoute] = (),
    wake_sender: Callable[[], None] | None = None,
) -> Starlette:
    """`extra_routes` lets the composition root add routes of other adapters (health,
    metrics) on the same listener without this adapter importing them. `wake_sender` is
    called after each accepted form, which may have queued mail (called on the loop)."""
    site = Site(
        portal=portal,
        settings=settings,
        catalogs=Catalogs(settings.templates / "i18n"),
        cookies=CookiePolicy(secure=settings.https),
        csrf=Csrf(settings.csrf_key),
        wake_sender=wake_sender or (lambda: None),
    )
    app = Starlette(
        routes=[
            *extra_routes,
            *routes_help.routes(),  # first: its "/" (the help-centre home) wins
            *routes_auth.routes(),
            *routes_account.routes(),  # language and time zone (issue 15)
            *routes_oidc.routes(site),  # sign-in with OpenID Connect providers (issue 14)
            *routes_tickets.routes(),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders, https=settings.https),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers={
            HTTPException: _http_error,
            TempFailure: _unavailable,
            Exception: _crash,
        },
    )
    app.state.site = site
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as pages in the visitor's language."""
    assert isinstance(exc, HTTPException)
    v = await visit(request)
    code = exc.status_code if exc.status_code in (404, 405) else 400
    response = v.render(
        "error.html", code, title=v.t(f"error.{code}.title"), message=v.t(f"error.{code}.text")
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The database is down or busy: say so plainly, and when to come back."""
    logs.warning("portal.unavailable", path=request.url.path, error=str(exc))
    return PlainTextResponse(
        _words(request, "error.503.text"), status_code=503, headers={"Retry-After": "30"}
    )


async def _crash(request: Request, exc: Exception) -> Response:
    # The fault barrier of the portal: log with traceback, show nothing internal.
    logs.error("portal.crashed", exc_info=True, path=request.url.path, error=type(exc).__name__)
    return PlainTextResponse(_words(request, "error.500.text"), status_code=500)


def _words(request: Request, key: str) -> str:
    """A text in the visitor's language without the database, which may be what failed: their
    cookie's choice, else their browser's, else the default (issue 15)."""
    site: Site = request.app.state.site
    return site.catalogs.text(language_of(site, request, None)[0], key)
