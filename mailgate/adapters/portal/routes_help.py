"""The help centre's pages (issue 13), all in the visitor's language:

- `/`: home (search box, sections, most-read articles, "submit a request");
- `/search?q=`: results with the matching passage highlighted;
- `/articles/{slug}`: one article; with `?ticket=ID` (the confirmation mail's suggestions) or
  `?suggested=1` (the new-ticket form's) it offers "this article solved my problem"
  (POST `/articles/{slug}/solved`);
- `/help/ask`: "search first", the step before the request form, without JavaScript;
- `/help/suggest?q=`: JSON suggestions for the subject being typed (static/help.js);
- `/tickets/{id}/solve`: GET asks, POST marks the customer's own request solved;
- `/articles/{slug}/files/{name}`: an article's image or file, for whoever may read it;
- agents: `/help/articles` (list, counters, unanswered searches), `/help/articles/new`,
  `/help/articles/{slug}/edit` (with its images and files), `/help/articles/{slug}/delete`
  (GET asks, POST deletes), `/help/preview` (the editor's live preview).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mailgate.adapters.portal.forms import text, uploads
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
from mailgate.services.article_files import FileUpload
from mailgate.services.articles import (
    LOCALES,
    STATUSES,
    VISIBILITIES,
    ArticleInput,
    Audience,
    file_urls,
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
    found = await run_in_threadpool(h.articles.find, slug, v.site.url(""))
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


async def article_file(v: Visit) -> Response:
    """An image or file of an article: to whoever may read the article, else 404 (a file
    says nothing about an article its visitor may not see)."""
    slug, name = str(v.request.path_params["slug"]), str(v.request.path_params["name"])
    found = await run_in_threadpool(_help(v).articles.file, slug, name)
    who = audience(v)
    if found is None:
        return not_found(v)
    article, meta = found
    blobs = _help(v).articles.blobs
    if article.status not in who.statuses or article.visibility not in who.visibilities:
        return not_found(v)
    if blobs is None or not blobs.exists(meta.sha256):
        return not_found(v)
    response = FileResponse(
        blobs.path(meta.sha256),
        media_type=meta.content_type if meta.inline else "application/octet-stream",
        filename=meta.name,
        content_disposition_type="inline" if meta.inline else "attachment",
    )
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    shared = article.visibility == "public" and article.status == "published"
    response.headers["Cache-Control"] = f"{'public' if shared else 'private'}, max-age=300"
    return response


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
        deleted=(v.request.query_params.get("deleted") or "")[:200],
        q="",
    )


async def _editor(v: Visit, code: int, data: ArticleInput, original: str, **extra: Any) -> Response:
    """The editor; an existing article's files are listed with the Markdown to show them."""
    existing = await run_in_threadpool(_help(v).articles.find, original) if original else None
    return v.render(
        "help/edit.html",
        code,
        form=data,
        original=original,
        files=existing.files if existing is not None else (),
        article_locales=LOCALES,
        visibilities=VISIBILITIES,
        statuses=STATUSES,
        q="",
        **{"errors": (), "preview": None, "unsaved_files": 0, **extra},
    )


async def _preview_html(v: Visit, body: str, original: str) -> str:
    """The body as readers will see it, the images of the article being edited included."""
    existing = await run_in_threadpool(_help(v).articles.find, original) if original else None
    if existing is None:
        return render_markdown(body)
    names = [f.name for f in existing.files]
    return render_markdown(body, file_urls(existing.slug, names, v.site.url("")))


async def new_article(v: Visit) -> Response:
    return await _editor(v, 200, ArticleInput(slug="", title="", locale=v.locale), "")


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
    return await _editor(v, 200, data, found.slug)


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
    files = [FileUpload(u.filename, u.payload) for u in await uploads(form, "files")]
    if text(form, "action") == "preview":  # the no-JavaScript preview
        html = await _preview_html(v, data.body_markdown, original)
        return await _editor(v, 200, data, original, preview=html, unsaved_files=len(files))
    removed = [name for name in form.getlist("remove_files") if isinstance(name, str)]
    saved, errors = await run_in_threadpool(
        _help(v).articles.save, data, v.who.account_id, original or None, files, removed
    )
    if saved is None:
        return await _editor(v, 400, data, original, errors=errors, unsaved_files=len(files))
    return v.redirect(f"/articles/{saved.slug}")


async def preview(v: Visit, form: FormData) -> Response:
    """The live preview (help-editor.js): the body rendered exactly as readers will see it."""
    return HTMLResponse(await _preview_html(v, text(form, "body"), text(form, "original")))


async def delete_article_page(v: Visit) -> Response:
    """The confirmation step; deleting is the POST below."""
    found = await run_in_threadpool(_help(v).articles.find, str(v.request.path_params["slug"]))
    if found is None:
        return not_found(v)
    return v.render("help/delete.html", article=found, q="")


async def delete_article(v: Visit, form: FormData) -> Response:
    slug = str(v.request.path_params["slug"])
    if not await run_in_threadpool(_help(v).articles.delete, slug):
        return not_found(v)
    return v.redirect(f"/help/articles?deleted={quote(slug)}")


def routes() -> list[Route]:
    return [
        Route("/", page(home), methods=["GET"]),
        Route("/search", page(search), methods=["GET"]),
        Route("/articles/{slug}", page(article), methods=["GET"]),
        Route("/articles/{slug}/solved", form_post(article_solved), methods=["POST"]),
        Route("/articles/{slug}/files/{name}", page(article_file), methods=["GET"]),
        Route("/help/ask", page(ask), methods=["GET"]),
        Route("/help/suggest", suggest, methods=["GET"]),
        Route("/tickets/{ticket_id}/solve", members_only(solve_page), methods=["GET"]),
        Route("/tickets/{ticket_id}/solve", form_post(solve, members=True), methods=["POST"]),
        Route("/help/articles", agents_only(agent_articles), methods=["GET"]),
        Route("/help/articles/new", agents_only(new_article), methods=["GET"]),
        Route("/help/articles/{slug}/edit", agents_only(edit_article), methods=["GET"]),
        Route("/help/articles/{slug}/delete", agents_only(delete_article_page), methods=["GET"]),
        Route(
            "/help/articles/{slug}/delete",
            form_post(delete_article, agents=True),
            methods=["POST"],
        ),
        Route("/help/articles", form_post(save_article, agents=True), methods=["POST"]),
        Route("/help/preview", form_post(preview, agents=True), methods=["POST"]),
    ]
