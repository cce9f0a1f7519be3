"""The language switcher (every page's footer) and the account page: language and time zone
(issue 15). A signed-in person's choice is stored on their account (and wins over what their
mail says); a visitor's in a cookie until they have an account."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text
from mailgate.adapters.portal.i18n import zone_or_none
from mailgate.adapters.portal.security import safe_next
from mailgate.adapters.portal.web import (
    LANG_COOKIE,
    Visit,
    form_post,
    members_only,
)

LANG_MAX_AGE = 365 * 24 * 3600


def _remember_choice(v: Visit, response: Response, locale: str) -> Response:
    options = v.site.cookies.options(max_age=LANG_MAX_AGE)
    response.set_cookie(LANG_COOKIE, locale, **options)
    return response


async def choose_language(v: Visit, form: FormData) -> Response:
    locale = text(form, "lang")
    back = safe_next(text(form, "back")) or "/"
    if locale not in v.site.catalogs.locales:
        return v.redirect(back)
    if v.who is not None:
        await run_in_threadpool(v.site.portal.accounts.choose_language, v.who.account_id, locale)
    return _remember_choice(v, v.redirect(back), locale)


def _account_page(v: Visit, code: int = 200, **context: object) -> Response:
    who = v.who
    assert who is not None
    values = {"lang": v.locale, "timezone": who.timezone or v.viewer_zone.key}
    return v.render(
        "account.html", code, **{"values": values, "errors": (), "saved": False, **context}
    )


async def account_page(v: Visit) -> Response:
    return _account_page(v, saved=v.request.query_params.get("saved") == "1")


async def save_account(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    locale, zone_name = text(form, "language"), text(form, "timezone").strip()
    errors = []
    if locale not in v.site.catalogs.locales:
        errors.append("language.unknown")
    zone = zone_or_none(zone_name)
    if zone is None:
        errors.append("timezone.unknown")
    if errors:  # what was entered stays in the form
        values = {"lang": locale, "timezone": zone_name}
        return _account_page(v, 400, values=values, errors=tuple(errors))
    assert zone is not None
    accounts = v.site.portal.accounts
    if locale != v.who.locale:
        await run_in_threadpool(accounts.choose_language, v.who.account_id, locale)
    await run_in_threadpool(accounts.set_timezone, v.who.account_id, zone.key)
    return _remember_choice(v, v.redirect("/account?saved=1"), locale)


def routes() -> list[Route]:
    return [
        Route("/language", form_post(choose_language), methods=["POST"]),
        Route("/account", members_only(account_page), methods=["GET"]),
        Route("/account", form_post(save_account, members=True), methods=["POST"]),
    ]
