"""Signing in and out, signing up, activation and password reset pages."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text
from mailgate.adapters.portal.security import safe_next
from mailgate.adapters.portal.web import Visit, form_post, page, site_of
from mailgate.services.portal import Outcome

RETRY_AFTER = "900"


async def home(v: Visit) -> Response:
    return v.redirect("/tickets" if v.who else "/login")


async def login_page(v: Visit) -> Response:
    if v.who is not None:
        return v.redirect("/tickets")
    return _login(v, 200)


def _login(v: Visit, status: int, email: str = "", error: str | None = None) -> Response:
    target = safe_next(v.request.query_params.get("next")) or ""
    response = v.render("login.html", status, email=email, error=error, next=target)
    if status == 429:
        response.headers["Retry-After"] = RETRY_AFTER
    return response


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
        return _login(v, 429, email, v.t("login.limited"))
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
        v.site.portal.accounts.sign_up, name, email, text(form, "altcha"), v.client_ip, v.locale
    )
    if outcome.ok:
        return v.render("check_mail.html", title=v.t("signup.title"), message=v.t("signup.sent"))
    if outcome.status == "limited":
        response = v.render("signup.html", 429, name=name, email=email, errors=("limited",))
        response.headers["Retry-After"] = RETRY_AFTER
        return response
    return v.render("signup.html", 400, name=name, email=email, errors=outcome.errors)


async def forgot_page(v: Visit) -> Response:
    return v.render("forgot.html", email="", errors=())


async def forgot(v: Visit, form: FormData) -> Response:
    email = text(form, "email")
    outcome: Outcome = await run_in_threadpool(
        v.site.portal.accounts.request_reset, email, v.client_ip
    )
    if outcome.ok:
        # The same page for a known and an unknown address.
        return v.render("check_mail.html", title=v.t("forgot.title"), message=v.t("forgot.sent"))
    if outcome.status == "limited":
        response = v.render("forgot.html", 429, email=email, errors=("limited",))
        response.headers["Retry-After"] = "3600"
        return response
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
