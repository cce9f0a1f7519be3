"""Signing in with an OpenID Connect provider (issue 14): `/auth/{name}/login` sends the browser
to the provider, `/auth/{name}/callback` brings it back signed in, or to a page that says why
not (nothing signed in). `/account/sign-in` lists the providers linked to the account and
unlinks one, as long as another way in remains.

The sign-in under way (state, nonce, PKCE verifier) is kept server-side (services/oidc.py),
bound to this browser by a random cookie of its own, and used up by its callback.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailgate import logs
from mailgate.adapters.portal.forms import text
from mailgate.adapters.portal.security import safe_next
from mailgate.adapters.portal.web import Site, Visit, form_post, members_only, not_found, page
from mailgate.services.oidc import OidcSignIn, Provider, ProviderFailure, Refusal

FLOW_COOKIE_SECONDS = 600  # the services' FLOW_LIFETIME
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
STATUS = {
    Refusal.NO_FLOW: 400,
    Refusal.PROVIDER_ERROR: 502,
    Refusal.UNREACHABLE: 504,
    Refusal.BAD_TOKEN: 502,
}


def flow_cookie_name(v: Visit) -> str:
    return "__Host-mg_oidc" if v.site.cookies.secure else "mg_oidc"


def _provider(v: Visit) -> tuple[OidcSignIn, Provider] | None:
    oidc = v.site.portal.oidc
    name = str(v.request.path_params.get("name", ""))
    if oidc is None or not NAME_RE.match(name):
        return None
    provider = oidc.provider(name)
    return (oidc, provider) if provider is not None else None


def refused(v: Visit, reason: str, provider: Provider | None = None) -> Response:
    """A page that says why, in the visitor's words; a way back to sign in."""
    label = provider.label if provider is not None else ""
    return v.render(
        "oidc_refused.html",
        STATUS.get(Refusal(reason), 403),
        title=v.t("oidc.refused.title"),
        message=v.t(f"oidc.refused.{reason}", provider=label),
    )


async def login(v: Visit) -> Response:
    found = _provider(v)
    if found is None:
        return not_found(v)
    oidc, provider = found
    name = flow_cookie_name(v)
    browser = v.request.cookies.get(name) or ""
    if not 20 <= len(browser) <= 100:
        browser = secrets.token_urlsafe(32)
    target = safe_next(v.request.query_params.get("next")) or ""
    started = await run_in_threadpool(oidc.start, provider.name, browser, target)
    try:
        url = await provider.client.authorization_url(
            started.state, started.nonce, started.code_verifier
        )
    except ProviderFailure as exc:
        logs.warning("oidc.provider_failed", provider=provider.name, step="login", error=str(exc))
        return refused(v, exc.reason, provider)
    response = RedirectResponse(url, status_code=303)
    options = v.site.cookies.options(max_age=FLOW_COOKIE_SECONDS)
    response.set_cookie(name, browser, **options)
    return v.finish(response)


async def callback(v: Visit) -> Response:
    found = _provider(v)
    if found is None:
        return not_found(v)
    oidc, provider = found
    params = v.request.query_params
    browser = v.request.cookies.get(flow_cookie_name(v)) or ""
    flow = await run_in_threadpool(oidc.take, provider.name, params.get("state", ""), browser)
    error = params.get("error")
    if flow is None and not error:
        logs.info("oidc.refused", provider=provider.name, reason=Refusal.NO_FLOW)
        return refused(v, Refusal.NO_FLOW, provider)
    code = params.get("code", "")
    # An error answer (the person said no) may come without `state` (some providers drop
    # it): it signs nobody in either way, and the page says what happened.
    if flow is None or error or not code or len(code) > 2048:
        logs.info(
            "oidc.refused",
            provider=provider.name,
            reason=Refusal.PROVIDER_ERROR,
            error=re.sub(r"[^A-Za-z0-9_.-]", "?", (error or "no code")[:64]),
        )
        return refused(v, Refusal.PROVIDER_ERROR, provider)
    try:
        claims = await provider.client.redeem(code, flow.code_verifier, flow.nonce)
    except ProviderFailure as exc:
        logs.warning(
            "oidc.provider_failed", provider=provider.name, step="callback", error=str(exc)
        )
        return refused(v, exc.reason, provider)
    outcome = await run_in_threadpool(oidc.sign_in, provider, claims, v.session_cookie, v.locale)
    if not outcome.ok or outcome.cookie is None:
        return refused(v, outcome.status, provider)
    return v.sign_in(v.redirect(flow.next_path or "/tickets"), outcome.cookie)


async def account_page(v: Visit, status: int = 200, notice: str = "", ok: bool = False) -> Response:
    oidc = v.site.portal.oidc
    if oidc is None or v.who is None:
        return not_found(v)
    linked = await run_in_threadpool(oidc.linked, v.who.account_id)
    providers = list(oidc.providers.values())
    return v.render(
        "oidc_account.html", status, linked=linked, providers=providers, notice=notice, ok=ok
    )


async def account(v: Visit) -> Response:
    if v.request.query_params.get("done") == "1":
        return await account_page(v, notice=v.t("oidc.account.unlinked"), ok=True)
    return await account_page(v)


async def unlink(v: Visit, form: FormData) -> Response:
    oidc = v.site.portal.oidc
    if oidc is None or v.who is None:
        return not_found(v)
    outcome = await run_in_threadpool(oidc.unlink, v.who.account_id, text(form, "provider"))
    if outcome == "ok":
        return v.redirect("/account/sign-in?done=1")
    status = 409 if outcome == "last_way_in" else 404
    return await account_page(v, status, v.t(f"oidc.account.{outcome}"))


@dataclass(frozen=True)
class Button:
    name: str
    label: str
    customers: bool


def routes(site: Site) -> list[Route]:
    """The routes; and the sign-in and sign-up pages' buttons, one per provider, as the
    templates' `oidc_providers` (the pages of routes_auth render them)."""
    oidc = site.portal.oidc
    providers = list(oidc.providers.values()) if oidc is not None else []
    site.env.globals["oidc_providers"] = [Button(p.name, p.label, p.customers) for p in providers]
    return [
        Route("/auth/{name}/login", page(login), methods=["GET"]),
        Route("/auth/{name}/callback", page(callback), methods=["GET"]),
        Route("/account/sign-in", members_only(account), methods=["GET"]),
        Route("/account/sign-in/unlink", form_post(unlink, members=True), methods=["POST"]),
    ]
