"""Signing in and out, signing up, activation and password reset pages."""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text
from mailgate.adapters.portal.security import safe_next
from mailgate.adapters.portal.web import Visit, form_post, page, site_of
from mailgate.services.portal import Outcome

RETRY_AFTER = 900  # seconds, when a refusal does not say when it ends


def _retry_after(response: Response, v: Visit, retry_at: datetime | None) -> Response:
    """429 with Retry-After in seconds, counted from the service's clock."""
    seconds = RETRY_AFTER
    if retry_at is not None:
        seconds = max(1, int((retry_at - v.site.portal.accounts.now()).total_seconds()) + 1)
    response.headers["Retry-After"] = str(seconds)
    return response


async def home(v: Visit) -> Response:
    return v.redirect("/tickets" if v.who else "/login")


async def login_page(v: Visit) -> Response:
    if v.who is not None:
        return v.redirect("/tickets")
    return _login(v, 200)


def _login(v: Visit, status: int, email: str = "", error: str | None = None) -> Response:
    target = safe_next(v.request.query_params.get("next")) or ""
    return v.render("login.html", status, email=email, error=error, next=target)


async def login(v: Visit, form: FormData) -> Response:
    email = text(form, "email")
    outcome: Outcome = await run_in_threadpool(
        v.site.portal.accounts.sign_in,
        email,
        text(form, "password"),
        v.client_ip,
        v.session_cookie,
    )
    if outcome.status == "limited":
        until = v.time(outcome.retry_at) if outcome.retry_at else "?"
        response = _login(v, 429, email, v.t("login.limited", time=until))
        return _retry_after(response, v, outcome.retry_at)
    if outcome.status == "provider_required":  # [auth] agents_password = false (issue 14)
        return _login(v, 403, email, v.t("oidc.agents_provider_only"))
    if not outcome.ok or outcome.cookie is None:
        return _login(v, 401, email, v.t("login.failed"))
    target = safe_next(text(form, "next")) or "/tickets"
    return v.sign_in(v.redirect(target), outcome.cookie)


async def logout(v: Visit, form: FormData) -> Response:
    await run_in_threadpool(v.site.portal.accounts.sign_out, v.session_cookie)
    return v.sign_out(v.redirect("/login"))


async def signup_page(v: Visit) -> Response:
    return v.render("signup.html", name="", email="", errors=())


async def signup(v: Visit, form: FormData) -> Response:
    name, email = text(form, "name"), text(form, "email")
    outcome: Outcome = await run_in_threadpool(
        v.site.portal.accounts.sign_up,
        name,
        email,
        text(form, "altcha"),
        v.client_ip,
        v.locale,
        v.locale_source,
    )
    if outcome.status in ("ok", "already_sent", "not_sent"):
        return _mail_page(v, "signup", outcome)
    if outcome.status == "limited":
        refused = _until(v, outcome)
        response = v.render("signup.html", 429, name=name, email=email, errors=(), refused=refused)
        return _retry_after(response, v, outcome.retry_at)
    return v.render("signup.html", 400, name=name, email=email, errors=outcome.errors)


def _until(v: Visit, outcome: Outcome) -> str:
    if outcome.retry_at is None:
        return v.t("error.limited")
    return v.t("error.limited_until", time=v.time(outcome.retry_at))


def _mail_page(v: Visit, flow: str, outcome: Outcome) -> Response:
    """What happened to the mail asked for, in so many words: sent at, or already sent at and
    when to ask again, or not sent. Never a promise of a mail that is not queued."""
    title = v.t(f"{flow}.title")
    if outcome.status == "already_sent" and outcome.sent_at and outcome.retry_at:
        message = v.t(
            f"{flow}.already", sent=v.time(outcome.sent_at), retry=v.time(outcome.retry_at)
        )
        response = v.render("check_mail.html", 429, title=title, message=message, spam_hint=False)
        return _retry_after(response, v, outcome.retry_at)
    if outcome.status == "ok" and outcome.sent_at:
        message = v.t(f"{flow}.sent", time=v.time(outcome.sent_at))
        return v.render("check_mail.html", title=title, message=message)
    message = v.t(f"{flow}.not_sent")
    return v.render("check_mail.html", 503, title=title, message=message, spam_hint=False)


async def forgot_page(v: Visit) -> Response:
    return v.render("forgot.html", email="", errors=())


async def forgot(v: Visit, form: FormData) -> Response:
    email = text(form, "email")
    outcome: Outcome = await run_in_threadpool(
        v.site.portal.accounts.request_reset, email, v.client_ip
    )
    if outcome.status in ("ok", "already_sent"):
        # The same page for a known and an unknown address.
        return _mail_page(v, "forgot", outcome)
    if outcome.status == "limited":
        response = v.render("forgot.html", 429, email=email, errors=(), refused=_until(v, outcome))
        return _retry_after(response, v, outcome.retry_at)
    return v.render("forgot.html", 400, email=email, errors=outcome.errors)


def _password_page(purpose: str) -> tuple[Route, Route]:
    prefix = "/activate" if purpose == "activate" else "/password/reset"

    async def show(v: Visit) -> Response:
        token = v.request.path_params["token"]
        email = await run_in_threadpool(v.site.portal.accounts.link_account, purpose, token)
        if email is None:
            return _bad_link(v, purpose)
        return v.render("password.html", purpose=purpose, email=email, errors=())

    async def submit(v: Visit, form: FormData) -> Response:
        token = v.request.path_params["token"]
        outcome: Outcome = await run_in_threadpool(
            v.site.portal.accounts.set_password,
            purpose,
            token,
            text(form, "password"),
            text(form, "password_confirm"),
            v.session_cookie,
        )
        if outcome.status == "bad_link":
            return _bad_link(v, purpose)
        if not outcome.ok or outcome.cookie is None:
            email = await run_in_threadpool(v.site.portal.accounts.link_account, purpose, token)
            return v.render(
                "password.html", 400, purpose=purpose, email=email or "", errors=outcome.errors
            )
        return v.sign_in(v.redirect("/tickets?welcome=1"), outcome.cookie)

    return (
        Route(prefix + "/{token}", page(show), methods=["GET"]),
        Route(prefix + "/{token}", form_post(submit), methods=["POST"]),
    )


def _bad_link(v: Visit, purpose: str) -> Response:
    return v.render("link_invalid.html", 404, purpose=purpose)


async def captcha_challenge(request: Request) -> Response:
    """A fresh signed challenge for the sign-up widget (computes, stores nothing)."""
    return JSONResponse(site_of(request).portal.captcha.challenge())


def routes() -> list[Route]:
    return [
        Route("/", page(home), methods=["GET"]),
        Route("/login", page(login_page), methods=["GET"]),
        Route("/login", form_post(login), methods=["POST"]),
        Route("/logout", form_post(logout), methods=["POST"]),
        Route("/signup", page(signup_page), methods=["GET"]),
        Route("/signup", form_post(signup), methods=["POST"]),
        Route("/password/forgot", page(forgot_page), methods=["GET"]),
        Route("/password/forgot", form_post(forgot), methods=["POST"]),
        *_password_page("activate"),
        *_password_page("reset"),
        Route("/captcha/challenge", captcha_challenge, methods=["GET"]),
    ]
