"""Searching the help centre (issue 13): results with the matching passage highlighted,
suggestions for a ticket's subject, related articles, and the counters that tell the team
what customers look for and do not find.

How a query finds articles (the same on SQLite and PostgreSQL):
1. core/textsearch parses it: words are lowercased, stemmed in the visitor's language and
   stripped of accents; `"a phrase"` and `prefix*` are kept as such; stop words are dropped.
2. A word no article contains (4 letters or more) is corrected: the words one edit away that
   the articles do contain (table articleword) stand in for it ("pase" -> "passe").
3. The database's full-text engine (store/article_index.py) matches every term (AND) and
   ranks; when nothing matches every term, articles matching any term are shown instead.
4. The passage of each article with the most query words is cut out, escaped, and the
   matched words wrapped in <mark> (then cleaned by nh3: <mark> is the only tag).
Articles in the visitor's language come first; when none match, the other language's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import nh3
from markupsafe import escape
from sqlalchemy import func, text
from sqlmodel import Session, col, select

from mailgate.clock import Clock
from mailgate.core.textsearch import (
    LANGUAGES,
    Query,
    fold,
    parse_query,
    stem,
)
from mailgate.services.article_match import correct
from mailgate.services.articles import Audience, rough_text
from mailgate.services.writer import Writer
from mailgate.store import article_index
from mailgate.store.db import Database
from mailgate.store.help_models import Article, HelpCount

PASSAGE_CHARS = 220
SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
WORD = re.compile(r"[^\W_]+")

# The counters (HelpCount.name), as /metrics shows them.
SEARCH = "search"
SEARCH_EMPTY = "search_empty"
SHOWN = "suggestion_shown"
CLICKED = "suggestion_clicked"
SOLVED_BY_ARTICLE = "solved_by_article"
SOLVED_BY_CUSTOMER = "solved_by_customer"
COUNTERS = (SEARCH, SEARCH_EMPTY, SHOWN, CLICKED, SOLVED_BY_ARTICLE, SOLVED_BY_CUSTOMER)


@dataclass(frozen=True)
class Hit:
    slug: str
    title: str
    section: str
    locale: str
    passage: str  # safe HTML: escaped text with <mark> around the matched words
    score: float
    status: str = "published"  # agents find drafts too


@dataclass(frozen=True)
class Results:
    query: str
    hits: tuple[Hit, ...]
    corrected: tuple[tuple[str, str], ...] = ()  # (typed, understood) for "did you mean"
    all_terms: bool = True  # False: no article had every word; these have some

    @property
    def empty(self) -> bool:
        return not self.hits


def passage(body: str, query: Query, locale: str) -> str:
    """The sentence (or run of text) with the most query words, matched words in <mark>.
    Each distinct word of the text is stemmed once; sentences are then scored by a regular
    expression of the matching words (C speed: ten passages per search)."""
    wanted = query.highlight_words()
    prefixes = query.highlight_prefixes()

    def hit(word: str) -> bool:
        stemmed, folded = stem(word, locale), fold(word)
        return stemmed in wanted or any(
            folded.startswith(p) or stemmed.startswith(p) for p in prefixes
        )

    matched = sorted((w for w in set(WORD.findall(body)) if hit(w)), key=len, reverse=True)
    sentences = [m.group(0).strip() for m in SENTENCE.finditer(body)]
    sentences = [s for s in sentences if s]
    if not sentences:
        return ""
    if not matched:
        return str(escape(_cut(sentences[0], 0)))
    marks = re.compile(r"(?<![^\W_])(" + "|".join(map(re.escape, matched)) + r")(?![^\W_])")
    best = max(sentences, key=lambda s: len({fold(w) for w in marks.findall(s)}))
    first = marks.search(best)
    text = _cut(best, first.start() if first else 0)
    parts = marks.split(text)  # text, match, text, match, ...
    out = "".join(
        f"<mark>{escape(part)}</mark>" if n % 2 else str(escape(part))
        for n, part in enumerate(parts)
    )
    return nh3.clean(out, tags={"mark"}, attributes={})


def _cut(sentence: str, first_match: int) -> str:
    """About PASSAGE_CHARS of the sentence, starting a little before its first match."""
    start = 0
    if first_match > PASSAGE_CHARS // 3:
        start = sentence.rfind(" ", 0, first_match - PASSAGE_CHARS // 4) + 1
    end = len(sentence)
    if end - start > PASSAGE_CHARS:
        end = sentence.find(" ", start + PASSAGE_CHARS)
        end = len(sentence) if end < 0 else end
    return ("… " if start else "") + sentence[start:end] + (" …" if end < len(sentence) else "")


class HelpCentre:
    """Search, suggestions and counters (each count one small write through the writer)."""

    def __init__(self, db: Database, write: Writer, clock: Clock) -> None:
        self.db = db
        self.write = write
        self.clock = clock

    # -- search --------------------------------------------------------------------------

    def search(
        self,
        raw: str,
        locale: str,
        audience: Audience,
        *,
        limit: int = 10,
        count: bool = True,
        typing: bool = False,
        exclude: int | None = None,
        any_term_only: bool = False,
    ) -> Results:
        """Articles for `raw`, best first: the visitor's language, else the other one."""
        locale = locale if locale in LANGUAGES else "fr"
        others = [other for other in LANGUAGES if other != locale]
        results = Results(raw.strip(), ())
        with self.db.read() as session:
            for language in (locale, *others):
                results = self._search_in(
                    session,
                    raw,
                    language,
                    audience,
                    limit,
                    typing,
                    exclude,
                    any_term_only,
                    typos=language == locale,  # the other language: exact words only
                )
                if not results.empty:
                    break
        if count and raw.strip():
            self.count(SEARCH)
            if results.empty:
                self.count(SEARCH_EMPTY, " ".join(fold(raw).split())[:200])
        return results

    def _search_in(
        self,
        session: Session,
        raw: str,
        locale: str,
        audience: Audience,
        limit: int,
        typing: bool,
        exclude: int | None,
        any_term_only: bool,
        typos: bool = True,
    ) -> Results:
        query = parse_query(raw, locale, last_is_prefix=typing)
        if query.empty:
            return Results(raw.strip(), ())
        corrected: list[tuple[str, str]] = []
        if typos:
            query, corrected = correct(session, query, locale)
        options: dict[str, Any] = {
            "locales": [locale],
            "statuses": list(audience.statuses),  # drafts: agents only
            "visibilities": list(audience.visibilities),
            "limit": limit,
            "exclude": exclude,
        }
        all_terms = not any_term_only
        found = [] if any_term_only else article_index.match(session, query, **options)
        if not found and (len(query.terms) + len(query.phrases)) > 1:
            found = article_index.match(session, query, any_term=True, **options)
            all_terms = False
        if not found:
            return Results(raw.strip(), (), tuple(corrected))
        rows = {
            a.id: a
            for a in session.exec(
                select(Article).where(col(Article.id).in_([i for i, _ in found]))
            ).all()
        }
        hits = []
        for article_id, score in found:
            a = rows[article_id]
            body = rough_text(a.body_markdown)
            hits.append(
                Hit(
                    a.slug,
                    a.title,
                    a.section,
                    a.locale,
                    passage(body, query, locale),
                    score,
                    a.status,
                )
            )
        return Results(raw.strip(), tuple(hits), tuple(corrected), all_terms)

    def suggest(self, subject: str, locale: str, audience: Audience, limit: int = 5) -> Results:
        """Articles for a ticket subject being typed (the last word may be unfinished)."""
        results = self.search(subject, locale, audience, limit=limit, count=False, typing=True)
        if not results.empty:
            self.count(SHOWN)
        return results

    def related(self, slug: str, audience: Audience, limit: int = 5) -> list[Hit]:
        """Articles sharing the most words with this one's title and section."""
        with self.db.read() as session:
            article = session.exec(select(Article).where(Article.slug == slug)).first()
        if article is None:
            return []
        results = self.search(
            f"{article.title} {article.section}",
            article.locale,
            audience,
            limit=limit,
            count=False,
            exclude=article.id,
            any_term_only=True,
        )
        return [h for h in results.hits if h.locale == article.locale]

    # -- counters ------------------------------------------------------------------------

    def count(self, name: str, detail: str = "") -> None:
        now = self.clock.now()

        def job(session: Session) -> None:
            bump(session, name, detail, now)

        self.write(job)

    def figures(self) -> dict[str, float]:
        return counter_figures(self.db)

    def unanswered(self, limit: int = 20) -> list[tuple[str, int]]:
        """What customers searched for and did not find, most often first."""
        with self.db.read() as session:
            rows = session.exec(
                select(HelpCount.detail, HelpCount.count)
                .where(HelpCount.name == SEARCH_EMPTY)
                .order_by(col(HelpCount.count).desc(), col(HelpCount.last_at).desc())
                .limit(limit)
            ).all()
        return [(d, int(c)) for d, c in rows]


def bump(session: Session, name: str, detail: str, now: Any) -> None:
    """One more `name` (both engines: INSERT ... ON CONFLICT DO UPDATE)."""
    session.execute(
        text(
            "INSERT INTO helpcount (name, detail, count, last_at) VALUES "
            "(:name, :detail, 1, :now) ON CONFLICT (name, detail) DO UPDATE SET "
            "count = helpcount.count + 1, last_at = excluded.last_at"
        ),
        {"name": name, "detail": detail, "now": now},
    )


def counter_figures(db: Database) -> dict[str, float]:
    """The counters for the agents' page and /metrics (mailgate_helpcentre_*)."""
    with db.read() as session:
        rows = session.exec(
            select(HelpCount.name, func.sum(HelpCount.count)).group_by(col(HelpCount.name))
        ).all()
    found = {name: float(total or 0) for name, total in rows}
    return {f"helpcentre_{name}": found.get(name, 0.0) for name in COUNTERS}
