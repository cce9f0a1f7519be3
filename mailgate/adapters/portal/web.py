"""What every portal handler needs: who is asking, in which language, the page renderer, the
CSRF check for POST forms, and redirects built from base_url (never from the Host header)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailgate.adapters.portal.i18n import LOCALES, Catalogs, negotiate
from mailgate.adapters.portal.security import CookiePolicy, Csrf, same_origin_post
from mailgate.services.portal import Portal
from mailgate.services.websessions import SignedIn

MAX_FORM_FIELDS = 50
MAX_FORM_FILES = 20


@dataclass(frozen=True)
class PortalSettings:
    base_url: str
    site_name: str
    default_locale: str
    customer_id_label: str
    max_body_bytes: int
    csrf_key: bytes
    templates: Path
    timezone: str = "Europe/Paris"  # [mailgate] default_timezone: how pages show times

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def prefix(self) -> str:
        """The path base_url lives under ("" at a domain's root)."""
        return urlsplit(self.base_url).path.rstrip("/")


@dataclass
class Site:
    """The portal's shared parts, built once per app (kept on app.state)."""

    portal: Portal
    settings: PortalSettings
    catalogs: Catalogs
    cookies: CookiePolicy
    csrf: Csrf
    wake_sender: Callable[[], None]
    env: Environment = field(init=False)
    zone: ZoneInfo = field(init=False)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.settings.timezone)  # a bad name stops start-up, not a page
        self.env = Environment(
            loader=FileSystemLoader(str(self.settings.templates)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def url(self, path: str) -> str:
        return self.settings.prefix + path

    def absolute(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path


@dataclass
class Visit:
    """One request: the site, who is signed in, the language, the anonymous CSRF cookie."""

    site: Site
    request: Request
    who: SignedIn | None
    locale: str
    anon_cookie: str | None
    new_anon_cookie: bool = False

    @property
    def session_cookie(self) -> str | None:
        return self.request.cookies.get(self.site.cookies.session_name)

    @property
    def client_ip(self) -> str:
        return self.request.client.host if self.request.client else "unknown"

    def csrf_token(self) -> str:
        if self.who is not None:
            return self.who.csrf_token
        if self.anon_cookie is None:
            self.anon_cookie, self.new_anon_cookie = self.site.csrf.new_cookie(), True
        return self.site.csrf.for_cookie(self.anon_cookie)

    def t(self, key: str, **values: object) -> str:
        return self.site.catalogs.text(self.locale, key, **values)

    def time(self, value: datetime) -> str:
        """A moment as the clock on the visitor's wall shows it ("10:02")."""
        return value.astimezone(self.site.zone).strftime("%H:%M")

    def render(self, template: str, code: int = 200, **context: Any) -> Response:
        site = self.site
        page = site.env.get_template(template).render(
            lang=self.locale,
            t=self.t,
            url=site.url,
            date=lambda value: site.catalogs.date(self.locale, value),
            size=lambda value: site.catalogs.size(self.locale, value),
            who=self.who,
            csrf=self.csrf_token(),
            site_name=site.settings.site_name,
            path=self.request.url.path,
            **context,
        )
        return self.finish(HTMLResponse(page, status_code=code))

    def redirect(self, path: str) -> Response:
        # 303: after a POST the browser fetches the next page with GET.
        return self.finish(RedirectResponse(self.site.absolute(path), status_code=303))

    def finish(self, response: Response) -> Response:
        if self.new_anon_cookie and self.anon_cookie:
            response.set_cookie(
                self.site.cookies.csrf_name,
                self.anon_cookie,
                **self.site.cookies.options(max_age=None),
            )
        return response

    def sign_in(self, response: Response, cookie: str) -> Response:
        response.set_cookie(self.site.cookies.session_name, cookie, **self.site.cookies.options())
        return response

    def sign_out(self, response: Response) -> Response:
        options = self.site.cookies.options()
        response.delete_cookie(
            self.site.cookies.session_name,
            path=options["path"],
            secure=options["secure"],
            httponly=True,
            samesite="lax",
        )
        return response


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


async def visit(request: Request) -> Visit:
    site = site_of(request)
    cookie = request.cookies.get(site.cookies.session_name)
    who = await run_in_threadpool(site.portal.accounts.current, cookie) if cookie else None
    if who is not None and who.locale in LOCALES:
        locale = who.locale
    else:
        locale = negotiate(request.headers.get("accept-language", ""), site.settings.default_locale)
    return Visit(site, request, who, locale, request.cookies.get(site.cookies.csrf_name))


Page = Callable[[Visit], Awaitable[Response]]
FormPage = Callable[[Visit, FormData], Awaitable[Response]]


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(await visit(request))

    return endpoint


def members_only(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """Signed-out visitors are sent to sign in, and brought back afterwards."""

    async def endpoint(request: Request) -> Response:
        v = await visit(request)
        if v.who is None:
            return v.redirect(f"/login?next={quote(request.url.path)}")
        return await handler(v)

    return endpoint


def form_post(
    handler: FormPage, *, members: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Every POST goes through here: parse the form, check CSRF and Origin, or answer 403."""

    async def endpoint(request: Request) -> Response:
        v = await visit(request)
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
        try:
            submitted = form.get("csrf")
            token = submitted if isinstance(submitted, str) else ""
            session_token = v.who.csrf_token if v.who else None
            if not v.site.csrf.valid(token, session_token, v.anon_cookie) or not same_origin_post(
                request.headers.get("origin"), v.site.settings.base_url
            ):
                return v.render(
                    "error.html", 403, title=v.t("error.403.title"), message=v.t("error.403.text")
                )
            if members and v.who is None:
                return v.redirect("/login")
            response = await handler(v, form)
            v.site.wake_sender()  # the form may have queued mail: no need to wait for a poll
            return response
        finally:
            await form.close()

    return endpoint
