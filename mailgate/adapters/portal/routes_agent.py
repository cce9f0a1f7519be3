"""The agents' pages: the queue (/tickets), the agent's ticket page (/tickets/{id}), and its
two forms: the reply-or-note form with status, assignee and category (/tickets/{id}/act),
and the collaborators (/tickets/{id}/collaborators). routes_tickets.py hands the shared GET
routes over here when the visitor is an agent; the POST routes are agents' only (404 to
anyone else, like a ticket that does not exist)."""

from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text, uploads
from mailgate.adapters.portal.web import (
    Visit,
    bad_page_link,
    cursors,
    form_post,
    not_found,
    pager_links,
    path_id,
)
from mailgate.core.commands import STATUS_VALUES
from mailgate.core.lifecycle import STATUSES
from mailgate.services.agent_views import ASSIGNEE_FILTERS, SEARCH_CAP, SEARCH_MAX, QueueFilter
from mailgate.services.keyset import BadCursor
from mailgate.services.portal_agent import AgentAction
from mailgate.services.portal_tickets import OTHER, Submitted

CATEGORY_PARAM_MAX = 100


def _filter(v: Visit) -> QueueFilter:
    params = v.request.query_params
    status = params.get("status") or None
    assignee = params.get("assignee") or None
    category = (params.get("category") or "").strip()[:CATEGORY_PARAM_MAX] or None
    return QueueFilter(
        status=status if status in STATUSES else None,
        assignee=assignee if assignee in ASSIGNEE_FILTERS else None,
        category=category,
        search=(params.get("q") or "")[:SEARCH_MAX],
    )


async def queue(v: Visit) -> Response:
    assert v.who is not None
    wanted = _filter(v)
    after, before = cursors(v)
    try:
        found = await run_in_threadpool(
            v.site.portal.tickets.agents.queue, v.who.account_id, wanted, after, before
        )
    except BadCursor:
        return bad_page_link(v)
    if found is None:  # no longer an agent since the page was chosen
        return not_found(v)
    return v.render(
        "queue.html",
        rows=found.rows,
        pages=found.pages,
        pager=pager_links(v, "/tickets", found.pages, wanted.query()),
        paged=bool(after or before),
        wanted=wanted,
        keep=wanted.query(),
        statuses=STATUSES,
        categories=found.categories,
        capped=found.capped,
        search_cap=f"{SEARCH_CAP:,}".replace(",", "\u202f" if v.locale == "fr" else ","),
    )


async def ticket(v: Visit) -> Response:
    return await _page(v, 200, AgentAction(), ())


async def _page(
    v: Visit, code: int, values: AgentAction, errors: tuple[str, ...], cc_email: str = ""
) -> Response:
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return not_found(v)
    after, before = cursors(v)
    try:
        view = await run_in_threadpool(
            v.site.portal.tickets.agents.show, v.who.account_id, ticket_id, after, before
        )
    except BadCursor:
        return bad_page_link(v)
    if view is None:
        return not_found(v)
    return v.render(
        "agent_ticket.html",
        code,
        ticket=view,
        pager=pager_links(v, f"/tickets/{view.id}", view.pages, {}, "#conversation"),
        values=values,
        errors=errors,
        cc_email=cc_email,
        settable=STATUS_VALUES,
        nonce=secrets.token_urlsafe(16),
        other=OTHER,
        customer_id_label=v.site.settings.customer_id_label,
        max_upload=v.site.portal.tickets.rules.max_upload_bytes,
    )


def _action(form: FormData) -> AgentAction:
    return AgentAction(
        body=text(form, "body"),
        note=text(form, "visibility") == "note",
        status=text(form, "status"),
        status_was=text(form, "status_was"),
        assignee=text(form, "assignee").strip().lower(),
        assignee_was=text(form, "assignee_was").strip().lower(),
        category=text(form, "category").strip(),
        category_was=text(form, "category_was").strip(),
    )


async def act(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return not_found(v)
    values = _action(form)
    files = await uploads(form)
    done: Submitted = await run_in_threadpool(
        v.site.portal.tickets.agents.act,
        v.who.account_id,
        ticket_id,
        values,
        files,
        text(form, "nonce"),
    )
    if done.status == "not_found":
        return not_found(v)
    if done.status != "ok":
        return await _page(v, 400, values, done.errors)
    return v.redirect(f"/tickets/{ticket_id}#latest")


async def collaborators(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return not_found(v)
    email = text(form, "email")
    done: Submitted = await run_in_threadpool(
        v.site.portal.tickets.agents.collaborator,
        v.who.account_id,
        ticket_id,
        email,
        text(form, "action") != "remove",
        text(form, "nonce"),
    )
    if done.status == "not_found":
        return not_found(v)
    if done.status != "ok":
        return await _page(v, 400, AgentAction(), done.errors, cc_email=email)
    return v.redirect(f"/tickets/{ticket_id}#collaborators")


def routes() -> list[Route]:
    tid = "/tickets/{ticket_id}"
    return [
        Route(tid + "/act", form_post(act, agents=True), methods=["POST"]),
        Route(tid + "/collaborators", form_post(collaborators, agents=True), methods=["POST"]),
    ]
