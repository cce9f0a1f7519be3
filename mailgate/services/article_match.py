"""Matching articles to words, without the rest of the help centre (no Markdown, no YAML):
typo correction from the vocabulary, and the articles suggested in a new ticket's
confirmation mail, looked up by the sender when it assembles that mail. `deliver` opens tickets
too, and pays for every import here on every mail (issue 11): keep this module light.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlmodel import Session, col, select

from mailgate.core.textsearch import LANGUAGES, Query, Term, one_edit_away, parse_query
from mailgate.store import article_index
from mailgate.store.help_models import Article, ArticleWord

TYPO_MIN_LETTERS = 4  # shorter words are not corrected: too many neighbours
MAX_ALTERNATIVES = 6


def correct(session: Session, query: Query, locale: str) -> tuple[Query, list[tuple[str, str]]]:
    """Words no article contains get the stems of the words one typo away as alternatives."""
    terms: list[Term] = []
    corrected: list[tuple[str, str]] = []
    for term in query.terms:
        if term.prefix or len(term.word) < TYPO_MIN_LETTERS or _known_word(session, term, locale):
            terms.append(term)
            continue
        candidates = sorted(c for c in one_edit_away(term.word) if len(c) >= TYPO_MIN_LETTERS)
        rows = article_index.known_words(session, locale, candidates, MAX_ALTERNATIVES * 3)
        if rows:  # the likeliest kind of slip only ("pase": "passe", not "page")
            best = min(typo_kind(term.word, w) for w, _ in rows)
            rows = [(w, s) for w, s in rows if typo_kind(term.word, w) == best]
        stems = tuple(dict.fromkeys(s for _, s in rows))[:MAX_ALTERNATIVES]
        if stems:
            corrected.append((term.word, rows[0][0]))
            # The typed word's own stem goes: "pase" is no word, and its stem "pas" ("not")
            # would match every French article. An inflection ("passes") finds its stem
            # among the neighbours ("passe"); a word with no neighbour keeps its stem below.
            terms.append(Term(term.word, "", alternatives=stems))
        else:
            terms.append(term)
    return Query(tuple(terms), query.phrases, query.raw, query.dropped), corrected


def typo_kind(typed: str, meant: str) -> int:
    """How likely a slip turns `meant` into `typed` (lower: likelier): a doubled letter
    typed once or twice (0), two neighbours swapped (1), a letter missing or extra (2), a
    letter changed (3)."""
    if len(typed) == len(meant):
        diff = [i for i, (a, b) in enumerate(zip(typed, meant, strict=True)) if a != b]
        return 1 if len(diff) == 2 and typed[diff[0]] == meant[diff[1]] else 3
    short, long = sorted((typed, meant), key=len)
    at = next((i for i, (a, b) in enumerate(zip(short, long, strict=False)) if a != b), len(short))
    doubled = (at > 0 and long[at] == long[at - 1]) or (
        at + 1 < len(long) and long[at] == long[at + 1]
    )
    return 0 if doubled else 2


def _known_word(session: Session, term: Term, locale: str) -> bool:
    return session.get(ArticleWord, (term.word, locale)) is not None


def suggestions_for(
    session: Session,
    ticket_id: int,
    subject: str,
    locale: str,
    limit: int,
    url: Callable[[str], str],
) -> list[dict[str, str]]:
    """Up to `limit` public, published articles matching a new ticket's subject (every word,
    else any), as {title, url} for the confirmation mail; each link carries the ticket, so
    the article can offer "this article solved my problem" for it."""
    if limit <= 0 or not subject.strip():
        return []
    locale = locale if locale in LANGUAGES else "fr"
    query = parse_query(subject, locale)
    if query.empty:
        return []
    query, _ = correct(session, query, locale)
    options: dict[str, Any] = {
        "locales": [locale],
        "statuses": ["published"],
        "visibilities": ["public"],
        "limit": limit,
    }
    found = article_index.match(session, query, **options)
    if not found and len(query.terms) + len(query.phrases) > 1:
        found = article_index.match(session, query, any_term=True, **options)
    ids = [i for i, _ in found]
    if not ids:
        return []
    rows = {a.id: a for a in session.exec(select(Article).where(col(Article.id).in_(ids)))}
    return [
        {"title": rows[i].title, "url": url(f"/articles/{rows[i].slug}?ticket={ticket_id}")}
        for i in ids
        if i in rows
    ]


def suggester(
    db: Any, url: Callable[[str], str], recheck_seconds: float = 30.0
) -> Callable[..., list[dict[str, str]]]:
    """suggestions_for in a read transaction of its own: what the sender calls when it
    assembles a confirmation (services/assemble.py). Whether any article is published at all
    is checked once per `recheck_seconds`: without one, the typo correction of every word of
    every subject would cost the sender more than the mail itself."""
    checked = {"at": -recheck_seconds, "any": True}

    def any_published() -> bool:
        now = time.monotonic()
        if now - checked["at"] >= recheck_seconds:
            with db.read() as session:
                found = session.exec(
                    select(Article.id).where(Article.status == "published").limit(1)
                ).first()
            checked.update(at=now, any=found is not None)
        return bool(checked["any"])

    def suggest(*, ticket_id: int, subject: str, locale: str, limit: int) -> list[dict[str, str]]:
        if limit <= 0 or not any_published():
            return []
        with db.read() as session:
            return suggestions_for(session, ticket_id, subject, locale, limit, url)

    return suggest
