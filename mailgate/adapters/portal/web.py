"""What every portal handler needs: who is asking, in which language, the page renderer, the
CSRF check for POST forms, and redirects built from base_url (never from the Host header)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from mailgate.adapters.portal.i18n import Catalogs, negotiate, zone_or_none
from mailgate.adapters.portal.security import CookiePolicy, Csrf, same_origin_post
from mailgate.config import Localized, localized
from mailgate.core.language import Source
from mailgate.services.portal import Portal
from mailgate.services.portal_views import AttachmentView, Pages
from mailgate.services.websessions import SignedIn

MAX_FORM_FIELDS = 50
MAX_FORM_FILES = 20
LANG_COOKIE = "mg_lang"  # a visitor's choice of language, until they sign in (then: the account)
ZONE_COOKIE = "mg_tz"  # the browser's time zone, written by static/localtime.js


@dataclass(frozen=True)
class PortalSettings:
    base_url: str
    site_name: Localized
    default_locale: str
    customer_id_label: Localized
    max_body_bytes: int
    csrf_key: bytes
    templates: Path
    timezone: str = "Europe/Paris"  # [mailgate] default_timezone: how pages show times
    # The per-locale texts of problem categories and broadcasters, by their stored value.
    labels: dict[str, Localized] = field(default_factory=dict)
    customer_id_format: Localized = ""  # the expected customer ID, in words

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
    agent: bool = False  # signed in as an agent: the queue and the agent's ticket pages
    locale_source: Source = Source.DEFAULT  # how `locale` was decided (for a new account)
    zone: ZoneInfo | None = None  # the viewer's time zone (None: the site's default)
    zone_from_browser: str = ""  # the browser's zone, to remember on the account once

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

    def localized(self, value: Localized) -> str:
        """A config value shown to people, in this visit's language."""
        return localized(value, self.locale, self.site.settings.default_locale)

    def label(self, stored: str) -> str:
        """A problem category's or broadcaster's text, by the value stored for it."""
        return self.localized(self.site.settings.labels.get(stored, stored))

    @property
    def viewer_zone(self) -> ZoneInfo:
        return self.zone or self.site.zone

    def time(self, value: datetime) -> str:
        """A moment as the clock on the visitor's wall shows it ("10:02", "10:02 AM")."""
        return self.site.catalogs.time(self.locale, value, self.viewer_zone)

    def date(self, value: datetime) -> str:
        return self.site.catalogs.date(self.locale, value, self.viewer_zone)

    def render(self, template: str, code: int = 200, **context: Any) -> Response:
        site = self.site
        page = site.env.get_template(template).render(
            lang=self.locale,
            t=self.t,
            url=site.url,
            date=self.date,
            number=lambda value: site.catalogs.number(self.locale, value),
            size=lambda value: site.catalogs.size(self.locale, value),
            duration=lambda value: site.catalogs.duration(self.locale, value),
            who=self.who,
            agent=self.agent,
            known=site.catalogs.texts.get(self.locale, {}),  # keys with a text ("x" in known)
            csrf=self.csrf_token(),
            site_name=self.localized(site.settings.site_name),
            label=self.label,
            error_values=context.pop("error_values", {}),
            path=self.request.url.path,
            locales=[
                (code, site.catalogs.text(code, "language.name")) for code in site.catalogs.locales
            ],
            zone_name=self.viewer_zone.key,
            here=self.request.url.path
            + (f"?{self.request.url.query}" if self.request.url.query else ""),
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


def _signed_in(site: Site, cookie: str) -> tuple[SignedIn | None, bool]:
    """Who holds this session cookie, and whether they are an agent (in a worker thread)."""
    who = site.portal.accounts.current(cookie)
    return who, who is not None and site.portal.tickets.agents.is_agent(who.account_id)


async def visit(request: Request) -> Visit:
    site = site_of(request)
    cookie = request.cookies.get(site.cookies.session_name)
    who, agent = await run_in_threadpool(_signed_in, site, cookie) if cookie else (None, False)
    locale, source = language_of(site, request, who)
    browser_zone = request.cookies.get(ZONE_COOKIE, "")
    zone = zone_or_none(who.timezone) if who is not None else None
    remember = ""
    if zone is None:
        zone = zone_or_none(browser_zone)
        if zone is not None and who is not None:
            remember = zone.key  # the first visit that tells it: saved on the account
    if remember and who is not None:
        await run_in_threadpool(site.portal.accounts.set_timezone, who.account_id, remember)
    csrf_cookie = request.cookies.get(site.cookies.csrf_name)
    return Visit(
        site, request, who, locale, csrf_cookie, agent=agent, locale_source=source, zone=zone,
        zone_from_browser=remember,
    )  # fmt: skip


def language_of(site: Site, request: Request, who: SignedIn | None) -> tuple[str, Source]:
    """The account's language if signed in; else the visitor's choice (cookie), the browser's
    Accept-Language, the default."""
    locales = site.catalogs.locales
    if who is not None and who.locale in locales:
        return who.locale, Source.CHOSEN  # whatever decided it, it is the account's now
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in locales:
        return chosen, Source.CHOSEN
    browser = negotiate(request.headers.get("accept-language", ""), "", locales)
    if browser:
        return browser, Source.BROWSER
    return site.settings.default_locale, Source.DEFAULT


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


def agents_only(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """An agent's page: signed-out visitors sign in first; anyone else is told "not found",
    exactly like a ticket that does not exist (the service checks the role again)."""

    async def endpoint(request: Request) -> Response:
        v = await visit(request)
        if v.who is None:
            return v.redirect(f"/login?next={quote(request.url.path)}")
        if not v.agent:
            return not_found(v)
        return await handler(v)

    return endpoint


def not_found(v: Visit) -> Response:
    return v.render("error.html", 404, title=v.t("error.404.title"), message=v.t("error.404.text"))


def bad_page_link(v: Visit) -> Response:
    """A page link that was cut, edited or made up: say so, never a 500."""
    return v.render(
        "error.html", 400, title=v.t("error.page_link.title"), message=v.t("error.page_link.text")
    )


# Ids are positive INTEGER columns (32-bit on PostgreSQL): anything else names nothing (404)
# and must not reach the database (SQLite overflows past 64 bits, PostgreSQL refuses a value
# out of its column's range: either would be a 500).
ID_MAX = 2**31 - 1


def path_id(v: Visit, name: str) -> int | None:
    """The id in the path, or None. Routes take ids as plain text, not `{x:int}`: Starlette
    would call int() on thousands of digits while routing, and fail with a 500."""
    raw = str(v.request.path_params.get(name, ""))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(ID_MAX)):
        return None
    number = int(raw)
    return number if 1 <= number <= ID_MAX else None


def cursors(v: Visit) -> tuple[str | None, str | None]:
    params = v.request.query_params
    return params.get("after") or None, params.get("before") or None


def pager_links(
    v: Visit, path: str, pages: Pages, keep: dict[str, str], anchor: str = ""
) -> dict[str, str | None]:
    """Links to the pages on either side (and back to the start), keeping the filter."""

    def link(**cursor: str) -> str:
        query = urlencode({**keep, **cursor})
        return v.site.url(path) + (f"?{query}" if query else "") + anchor

    return {
        "previous": link(before=pages.previous) if pages.previous else None,
        "next": link(after=pages.next) if pages.next else None,
        "start": link() if pages.previous else None,
    }


# Served as their own type; anything else downloads as bytes, so nothing can run as HTML.
SAFE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)


def download(meta: AttachmentView, path: Path) -> Response:
    media_type = meta.content_type if meta.content_type in SAFE_TYPES else None
    response = FileResponse(
        path,
        media_type=media_type or "application/octet-stream",
        filename=meta.filename,
        content_disposition_type="attachment",
    )
    # A file from a stranger must never run in our origin, even if opened directly.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def form_post(
    handler: FormPage, *, members: bool = False, agents: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Every POST goes through here: parse the form, check CSRF and Origin, or answer 403.
    `members`: signed-in people only; `agents`: agents only (anyone else: 404, as above)."""

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
            if (members or agents) and v.who is None:
                return v.redirect("/login")
            if agents and not v.agent:
                return not_found(v)
            response = await handler(v, form)
            v.site.wake_sender()  # the form may have queued mail: no need to wait for a poll
            return response
        finally:
            await form.close()

    return endpoint
