"""The help centre's pages (issue 13), all in the visitor's language:

- `/`: home (search box, sections, most-read articles, "submit a request");
- `/search?q=`: results with the matching passage highlighted;
- `/articles/{slug}`: one article; with `?ticket=ID` (the confirmation mail's suggestions) or
  `?suggested=1` (the new-ticket form's) it offers "this article solved my problem"
  (POST `/articles/{slug}/solved`);
- `/help/ask`: "search first", the step before the request form, without JavaScript;
- `/help/suggest?q=`: JSON suggestions for the subject being typed (static/help.js);
- `/tickets/{id}/solve`: GET asks, POST marks the customer's own request solved;
- agents: `/help/articles` (list, counters, unanswered searches), `/help/articles/new`,
  `/help/articles/{slug}/edit`, `/help/preview` (the editor's live preview).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text
from mailgate.adapters.portal.web import (
    Visit,
    agents_only,
    form_post,
    members_only,
    not_found,
    page,
    path_id,
    visit,
)
from mailgate.services.articles import (
    LOCALES,
    STATUSES,
    VISIBILITIES,
    ArticleInput,
    Audience,
    render_markdown,
)
from mailgate.services.helpcentre import HelpServices
from mailgate.services.helpcentre_search import CLICKED

QUERY_MAX = 200


def _help(v: Visit) -> HelpServices:
    services = v.site.portal.help
    assert services is not None, "the help centre is built by app.build_portal"
    return services


def audience(v: Visit) -> Audience:
    return Audience(signed_in=v.who is not None, agent=v.agent)


def _query(v: Visit) -> str:
    return (v.request.query_params.get("q") or "").strip()[:QUERY_MAX]


async def home(v: Visit) -> Response:
    h = _help(v)
    who = audience(v)
    sections = await run_in_threadpool(h.articles.sections, who, v.locale)
    popular = await run_in_threadpool(h.articles.most_read, who, v.locale)
    return v.render("help/home.html", sections=sections, popular=popular, q="")


async def search(v: Visit) -> Response:
    q = _query(v)
    results = None
    if q:
        results = await run_in_threadpool(_help(v).search.search, q, v.locale, audience(v))
    return v.render("help/search.html", q=q, results=results)


async def article(v: Visit) -> Response:
    h = _help(v)
    slug = str(v.request.path_params["slug"])
    found = await run_in_threadpool(h.articles.find, slug)
    who = audience(v)
    if found is None or found.status not in who.statuses:
        return not_found(v)
    if found.visibility not in who.visibilities:  # for signed-in customers: sign in first
        return v.redirect(f"/login?next={quote(v.request.url.path)}")
    params = v.request.query_params
    ticket_id = params.get("ticket", "")
    suggested = params.get("suggested") == "1" or ticket_id.isdigit()
    if not v.agent and found.status == "published":
        await run_in_threadpool(h.articles.count_view, found.id)
        if suggested:
            await run_in_threadpool(h.search.count, CLICKED)
    related = await run_in_threadpool(h.search.related, slug, who)
    return v.render(
        "help/article.html",
        article=found,
        related=related,
        suggested=suggested,
        ticket_id=ticket_id if ticket_id.isdigit() and len(ticket_id) < 11 else "",
        q="",
    )


async def article_solved(v: Visit, form: FormData) -> Response:
    """ "This article solved my problem": from a suggestion before any request (a request
    avoided), or from the confirmation mail's suggestions (that request is solved)."""
    h = _help(v)
    slug = str(v.request.path_params["slug"])
    found = await run_in_threadpool(h.articles.find, slug)
    if found is None or found.status != "published":
        return not_found(v)
    raw_ticket = text(form, "ticket")
    if raw_ticket:
        if v.who is None:
            next_path = f"/articles/{slug}?ticket={raw_ticket}"
            return v.redirect(f"/login?next={quote(next_path)}")
        ticket_id = int(raw_ticket) if raw_ticket.isdigit() and len(raw_ticket) < 11 else 0
        outcome = await run_in_threadpool(h.solver.solve, v.who.account_id, ticket_id, slug)
        if outcome == "not_found":
            return not_found(v)
        return v.redirect(f"/tickets/{ticket_id}")
    await run_in_threadpool(h.search.count, "solved_by_article")
    return v.render("help/thanks.html", article=found, q="")


async def ask(v: Visit) -> Response:
    """The "search first" step before the new-ticket form (no JavaScript needed)."""
    q = _query(v)
    results = None
    if q:
        results = await run_in_threadpool(_help(v).search.suggest, q, v.locale, audience(v))
    form_link = "/tickets/new" + (f"?{urlencode({'subject': q})}" if q else "")
    return v.render("help/ask.html", q=q, results=results, form_link=form_link)


async def suggest(request: Request) -> Response:
    """Suggestions for the subject being typed (help.js): [{title, url, passage}]."""
    v = await visit(request)
    q = _query(v)
    if len(q) < 3:
        return JSONResponse({"articles": []})
    results = await run_in_threadpool(_help(v).search.suggest, q, v.locale, audience(v))
    articles = [
        {
            "title": hit.title,
            "url": v.site.url(f"/articles/{hit.slug}?suggested=1"),
            "passage": hit.passage,
        }
        for hit in results.hits
    ]
    response = JSONResponse({"articles": articles})
    response.headers["Cache-Control"] = "no-store"
    return response


async def solve_page(v: Visit) -> Response:
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return not_found(v)
    if not await run_in_threadpool(_help(v).solver.may_solve, v.who.account_id, ticket_id):
        return not_found(v)  # not theirs, deleted, or no such ticket: the same answer
    return v.render("help/solve.html", ticket_id=ticket_id, q="")


async def solve(v: Visit, form: FormData) -> Response:
    """ "My question is answered": the customer's own request becomes solved."""
    assert v.who is not None
    ticket_id = path_id(v, "ticket_id")
    if ticket_id is None:
        return not_found(v)
    outcome = await run_in_threadpool(_help(v).solver.solve, v.who.account_id, ticket_id)
    if outcome == "not_found":
        return not_found(v)
    return v.redirect(f"/tickets/{ticket_id}")


# -- agents ----------------------------------------------------------------------------


async def agent_articles(v: Visit) -> Response:
    h = _help(v)
    articles = await run_in_threadpool(h.articles.listing)
    figures = await run_in_threadpool(h.search.figures)
    unanswered = await run_in_threadpool(h.search.unanswered)
    return v.render(
        "help/agent_articles.html",
        articles=articles,
        figures=figures,
        unanswered=unanswered,
        q="",
    )


def _editor(v: Visit, code: int, data: ArticleInput, original: str, **extra: Any) -> Response:
    return v.render(
        "help/edit.html",
        code,
        form=data,
        original=original,
        locales=LOCALES,
        visibilities=VISIBILITIES,
        statuses=STATUSES,
        q="",
        **{"errors": (), "preview": None, **extra},
    )


async def new_article(v: Visit) -> Response:
    return _editor(v, 200, ArticleInput(slug="", title="", locale=v.locale), "")


async def edit_article(v: Visit) -> Response:
    found = await run_in_threadpool(_help(v).articles.find, str(v.request.path_params["slug"]))
    if found is None:
        return not_found(v)
    data = ArticleInput(
        slug=found.slug,
        title=found.title,
        section=found.section,
        locale=found.locale,
        visibility=found.visibility,
        status=found.status,
        body_markdown=found.body_markdown,
    )
    return _editor(v, 200, data, found.slug)


def _article_form(form: FormData) -> ArticleInput:
    return ArticleInput(
        slug=text(form, "slug").strip().lower(),
        title=text(form, "title").strip(),
        section=text(form, "section").strip(),
        locale=text(form, "locale"),
        visibility=text(form, "visibility"),
        status=text(form, "status"),
        body_markdown=text(form, "body").replace("\r\n", "\n"),
    )


async def save_article(v: Visit, form: FormData) -> Response:
    assert v.who is not None
    data = _article_form(form)
    original = text(form, "original")
    if text(form, "action") == "preview":  # the no-JavaScript preview
        return _editor(v, 200, data, original, preview=render_markdown(data.body_markdown))
    saved, errors = await run_in_threadpool(
        _help(v).articles.save, data, v.who.account_id, original or None
    )
    if saved is None:
        return _editor(v, 400, data, original, errors=errors)
    return v.redirect(f"/articles/{saved.slug}")


async def preview(v: Visit, form: FormData) -> Response:
    """The live preview (help-editor.js): the body rendered exactly as readers will see it."""
    return HTMLResponse(render_markdown(text(form, "body")))


def routes() -> list[Route]:
    return [
        Route("/", page(home), methods=["GET"]),
        Route("/search", page(search), methods=["GET"]),
        Route("/articles/{slug}", page(article), methods=["GET"]),
        Route("/articles/{slug}/solved", form_post(article_solved), methods=["POST"]),
        Route("/help/ask", page(ask), methods=["GET"]),
        Route("/help/suggest", suggest, methods=["GET"]),
        Route("/tickets/{ticket_id}/solve", members_only(solve_page), methods=["GET"]),
        Route("/tickets/{ticket_id}/solve", form_post(solve, members=True), methods=["POST"]),
        Route("/help/articles", agents_only(agent_articles), methods=["GET"]),
        Route("/help/articles/new", agents_only(new_article), methods=["GET"]),
        Route("/help/articles/{slug}/edit", agents_only(edit_article), methods=["GET"]),
        Route("/help/articles", form_post(save_article, agents=True), methods=["POST"]),
        Route("/help/preview", form_post(preview, agents=True), methods=["POST"]),
    ]
