"""My activities, one ticket, answering, the new-ticket form, deleting, attachment downloads."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response
from starlette.routing import Route

from mailgate.adapters.portal import routes_agent
from mailgate.adapters.portal.forms import text, uploads
from mailgate.adapters.portal.web import (
    Visit,
    bad_page_link,
    cursors,
    download,
    form_post,
    members_only,
    not_found,
    pager_links,
    path_id,
)
from mailgate.core.lifecycle import STATUSES
from mailgate.services.keyset import BadCursor
from mailgate.services.portal_tickets import OTHER, Submitted, TicketForm

SUBJECT_PREFILL = 200


async def tickets(v: Visit) -> Response:
    """My activities; for an agent, the queue."""
    assert v.who is not None
    if v.agent:
        return await routes_agent.queue(v)
    status = v.request.query_params.get("status") or None
    status = status if status in STATUSES else None
    after, before = cursors(v)
    try:
        found = await run_in_threadpool(
            v.site.portal.tickets.listing, v.who.account_id, status, after, before
        )
    except BadCursor:
        return bad_page_link(v)
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
        pager=pager_links(v, "/tickets", found.pages, {"status": status} if status else {}),
        paged=bool(after or before),
        status=status,
        statuses=STATUSES,
        notice=notice,
    )


async def _own_ticket(v: Visit) -> Any:
    """The signed-in customer's ticket named in the path, or None (absent, or someone else's:
    both answer 404, so ids reveal nothing). BadCursor for a bad page link."""
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return None
    after, before = cursors(v)
    return await run_in_threadpool(
        v.site.portal.tickets.show, v.who.account_id, ticket_id, after, before
    )


async def ticket(v: Visit) -> Response:
    """The customer's ticket page; for an agent, the agent's view and actions."""
    if v.agent:
        return await routes_agent.ticket(v)
    return await _ticket_page(v, 200, errors=(), body="")


async def _ticket_page(
    v: Visit, status: int, errors: tuple[str, ...], body: str, unsent: tuple[str, ...] = ()
) -> Response:
    try:
        view = await _own_ticket(v)
    except BadCursor:
        return bad_page_link(v)
    if view is None:
        return not_found(v)
    return v.render(
        "ticket.html",
        status,
        ticket=view,
        pager=pager_links(v, f"/tickets/{view.id}", view.pages, {}, "#conversation"),
        errors=errors,
        body=body,
        nonce=secrets.token_urlsafe(16),
        other=OTHER,
        max_upload=v.site.portal.tickets.rules.max_upload_bytes,
        unsent_files=unsent,  # a browser cannot be given files back: they are named
    )


async def reply(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return not_found(v)
    body = text(form, "body")
    files = await uploads(form)
    done: Submitted = await run_in_threadpool(
        v.site.portal.tickets.reply, v.who.account_id, ticket_id, body, files, text(form, "nonce")
    )
    if done.status == "not_found":
        return not_found(v)
    if done.status != "ok":
        return await _ticket_page(v, 400, done.errors, body, tuple(f.filename for f in files))
    return v.redirect(f"/tickets/{done.ticket_id}#latest")


def _new_form(
    v: Visit,
    status: int,
    values: TicketForm,
    errors: tuple[str, ...],
    unsent: tuple[str, ...] = (),
) -> Response:
    rules = v.site.portal.tickets.rules
    expected = v.localized(v.site.settings.customer_id_format)
    if expected:  # the error says what the ID must look like
        errors = tuple(
            "customer_ref.expected" if e == "customer_ref.invalid" else e for e in errors
        )
    return v.render(
        "ticket_new.html",
        status,
        form=values,
        errors=errors,
        problems=rules.problem_choices,
        broadcasters=rules.broadcasters,
        other=OTHER,
        customer_id_label=v.localized(v.site.settings.customer_id_label),
        error_values={"expected": v.localized(v.site.settings.customer_id_format)},
        nonce=secrets.token_urlsafe(16),
        max_upload=rules.max_upload_bytes,
        unsent_files=unsent,  # a browser cannot be given files back: they are named
    )


async def new_ticket_page(v: Visit) -> Response:
    # "Continue to the request form" from the help centre's search-first step carries the
    # words searched: they start the subject (one line, cut to the field's size).
    subject = " ".join(v.request.query_params.get("subject", "").split())[:SUBJECT_PREFILL]
    return _new_form(v, 200, TicketForm("", subject, "", ""), ())


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
        return _new_form(v, 400, values, done.errors, tuple(f.filename for f in files))
    return v.redirect(f"/tickets?created={done.ticket_id}")


async def delete_page(v: Visit) -> Response:
    """The confirmation step; deleting itself is the POST below."""
    try:
        view = await _own_ticket(v)
    except BadCursor:
        return bad_page_link(v)
    if view is None:
        return not_found(v)
    return v.render("ticket_delete.html", ticket=view)


async def delete(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    deleted = ticket_id is not None and await run_in_threadpool(
        v.site.portal.tickets.delete, v.who.account_id, ticket_id
    )
    if not deleted:
        return not_found(v)
    return v.redirect(f"/tickets?deleted={ticket_id}")


async def attachment(v: Visit) -> Response:
    """A file of the customer's own ticket (public messages); an agent's: any file."""
    assert v.who is not None
    ticket_id, attachment_id = path_id(v, "ticket_id"), path_id(v, "attachment_id")
    found = None
    if ticket_id is not None and attachment_id is not None:
        side = v.site.portal.tickets.agents if v.agent else v.site.portal.tickets
        found = await run_in_threadpool(side.attachment, v.who.account_id, ticket_id, attachment_id)
    if found is None:
        return not_found(v)
    return download(*found)


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
        *routes_agent.routes(),
    ]
