"""My activities, one ticket, answering, the new-ticket form, deleting, attachment downloads."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text, uploads
from mailgate.adapters.portal.web import Visit, form_post, members_only
from mailgate.core.lifecycle import STATUSES
from mailgate.services.keyset import BadCursor
from mailgate.services.portal_tickets import OTHER, Submitted, TicketForm
from mailgate.services.portal_views import Pages

# Served as their own type; anything else downloads as bytes, so nothing can run as HTML.
SAFE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)


def _not_found(v: Visit) -> Response:
    return v.render("error.html", 404, title=v.t("error.404.title"), message=v.t("error.404.text"))


# Ids are positive INTEGER columns (32-bit on PostgreSQL): anything else names nothing (404)
# and must not reach the database (SQLite overflows past 64 bits, PostgreSQL refuses a value
# out of its column's range: either would be a 500).
ID_MAX = 2**31 - 1


def _int(v: Visit, name: str) -> int | None:
    """The id in the path, or None. Routes take ids as plain text, not `{x:int}`: Starlette
    would call int() on thousands of digits while routing, and fail with a 500."""
    raw = str(v.request.path_params.get(name, ""))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(ID_MAX)):
        return None
    number = int(raw)
    return number if 1 <= number <= ID_MAX else None


def _bad_link(v: Visit) -> Response:
    """A page link that was cut, edited or made up: say so, never a 500."""
    return v.render(
        "error.html", 400, title=v.t("error.page_link.title"), message=v.t("error.page_link.text")
    )


def _cursors(v: Visit) -> tuple[str | None, str | None]:
    params = v.request.query_params
    return params.get("after") or None, params.get("before") or None


def _pager(
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


async def tickets(v: Visit) -> Response:
    assert v.who is not None
    status = v.request.query_params.get("status") or None
    status = status if status in STATUSES else None
    after, before = _cursors(v)
    try:
        found = await run_in_threadpool(
            v.site.portal.tickets.listing, v.who.account_id, status, after, before
        )
    except BadCursor:
        return _bad_link(v)
    notice = None
    for key in ("created", "deleted"):
        if v.request.query_params.get(key, "").isdigit():
            notice = v.t(f"tickets.{key}", id=v.request.query_params[key])
    if v.request.query_params.get("welcome"):
        notice = v.t("tickets.welcome")
    return v.render(
        "tickets.html",
        rows=found.rows,
        pages=found.pages,
        pager=_pager(v, "/tickets", found.pages, {"status": status} if status else {}),
        paged=bool(after or before),
        status=status,
        statuses=STATUSES,
        notice=notice,
    )


async def _own_ticket(v: Visit) -> Any:
    """The signed-in customer's ticket named in the path, or None (absent, or someone else's:
    both answer 404, so ids reveal nothing). BadCursor for a bad page link."""
    assert v.who is not None
    ticket_id = _int(v, "ticket_id")
    if ticket_id is None:
        return None
    after, before = _cursors(v)
    return await run_in_threadpool(
        v.site.portal.tickets.show, v.who.account_id, ticket_id, after, before
    )


async def ticket(v: Visit) -> Response:
    return await _ticket_page(v, 200, errors=(), body="")


async def _ticket_page(v: Visit, status: int, errors: tuple[str, ...], body: str) -> Response:
    try:
        view = await _own_ticket(v)
    except BadCursor:
        return _bad_link(v)
    if view is None:
        return _not_found(v)
    return v.render(
        "ticket.html",
        status,
        ticket=view,
        pager=_pager(v, f"/tickets/{view.id}", view.pages, {}, "#conversation"),
        errors=errors,
        body=body,
        nonce=secrets.token_urlsafe(16),
        other=OTHER,
        max_upload=v.site.portal.tickets.rules.max_upload_bytes,
    )


async def reply(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    ticket_id = _int(v, "ticket_id")
    if ticket_id is None:
        return _not_found(v)
    body = text(form, "body")
    files = await uploads(form)
    done: Submitted = await run_in_threadpool(
        v.site.portal.tickets.reply, v.who.account_id, ticket_id, body, files, text(form, "nonce")
    )
    if done.status == "not_found":
        return _not_found(v)
    if done.status != "ok":
        return await _ticket_page(v, 400, done.errors, body)
    return v.redirect(f"/tickets/{done.ticket_id}#latest")


def _new_form(v: Visit, status: int, values: TicketForm, errors: tuple[str, ...]) -> Response:
    rules = v.site.portal.tickets.rules
    return v.render(
        "ticket_new.html",
        status,
        form=values,
        errors=errors,
        problems=rules.problem_choices,
        broadcasters=rules.broadcasters,
        other=OTHER,
        customer_id_label=v.site.settings.customer_id_label,
        nonce=secrets.token_urlsafe(16),
        max_upload=rules.max_upload_bytes,
    )


async def new_ticket_page(v: Visit) -> Response:
    return _new_form(v, 200, TicketForm("", "", "", ""), ())


async def new_ticket(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    values = TicketForm(
        customer_ref=text(form, "customer_id"),
        subject=text(form, "subject"),
        description=text(form, "description"),
        problem=text(form, "problem"),
        broadcaster=text(form, "broadcaster"),
    )
    files = await uploads(form)
    done: Submitted = await run_in_threadpool(
        v.site.portal.tickets.open, v.who.account_id, values, files, text(form, "nonce")
    )
    if done.status == "limited":
        response = _new_form(v, 429, values, ("limited",))
        response.headers["Retry-After"] = "3600"
        return response
    if done.status != "ok":
        return _new_form(v, 400, values, done.errors)
    return v.redirect(f"/tickets?created={done.ticket_id}")


async def delete_page(v: Visit) -> Response:
    """The confirmation step; deleting itself is the POST below."""
    try:
        view = await _own_ticket(v)
    except BadCursor:
        return _bad_link(v)
    if view is None:
        return _not_found(v)
    return v.render("ticket_delete.html", ticket=view)


async def delete(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    ticket_id = _int(v, "ticket_id")
    deleted = ticket_id is not None and await run_in_threadpool(
        v.site.portal.tickets.delete, v.who.account_id, ticket_id
    )
    if not deleted:
        return _not_found(v)
    return v.redirect(f"/tickets?deleted={ticket_id}")


async def attachment(v: Visit) -> Response:
    assert v.who is not None
    ticket_id, attachment_id = _int(v, "ticket_id"), _int(v, "attachment_id")
    found = None
    if ticket_id is not None and attachment_id is not None:
        found = await run_in_threadpool(
            v.site.portal.tickets.attachment, v.who.account_id, ticket_id, attachment_id
        )
    if found is None:
        return _not_found(v)
    meta, path = found
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


def routes() -> list[Route]:
    tid = "/tickets/{ticket_id}"  # after /tickets/new, which wins
    return [
        Route("/tickets", members_only(tickets), methods=["GET"]),
        Route("/tickets/new", members_only(new_ticket_page), methods=["GET"]),
        Route("/tickets/new", form_post(new_ticket, members=True), methods=["POST"]),
        Route(tid, members_only(ticket), methods=["GET"]),
        Route(tid + "/reply", form_post(reply, members=True), methods=["POST"]),
        Route(tid + "/delete", members_only(delete_page), methods=["GET"]),
        Route(tid + "/delete", form_post(delete, members=True), methods=["POST"]),
        Route(
            tid + "/attachments/{attachment_id}/{name}",
            members_only(attachment),
            methods=["GET"],
        ),
    ]
