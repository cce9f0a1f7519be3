"""The help centre's full-text index, one implementation per engine (migration 0008).

Both hold the stems mailgate computed (core/textsearch.py); this module only writes them and
turns a parsed query into the engine's own syntax:
- SQLite FTS5: `"stem"`, `("a" OR "b")`, `"pref"*`, `"mot de pass"` (a phrase), ranked by
  bm25 with the title weighing 8 times the body;
- PostgreSQL: the same as a tsquery (`'stem'`, `'pref':*`, `'mot' <-> 'de' <-> 'pass'`),
  matched against a GIN-indexed tsvector, ranked by ts_rank (title weight A, body D).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlmodel import Session

from mailgate.core.textsearch import Query

MAX_INDEXED_CHARS = 200_000  # a tsvector holds at most 1 MB; nobody reads more than this


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def put(session: Session, article_id: int, title: str, body: str) -> None:
    """(Re)index one article from its stemmed title and body."""
    body = body[:MAX_INDEXED_CHARS]
    params = {"id": article_id, "title": title, "body": body}
    if _sqlite(session):
        session.execute(text("DELETE FROM article_fts WHERE rowid = :id"), {"id": article_id})
        session.execute(
            text("INSERT INTO article_fts (rowid, title, body) VALUES (:id, :title, :body)"),
            params,
        )
    else:
        session.execute(
            text(
                "INSERT INTO article_fts (article_id, doc) VALUES (:id, "
                "setweight(to_tsvector('simple', :title), 'A') || "
                "setweight(to_tsvector('simple', :body), 'D')) "
                "ON CONFLICT (article_id) DO UPDATE SET doc = excluded.doc"
            ),
            params,
        )


def delete(session: Session, article_id: int) -> None:
    column = "rowid" if _sqlite(session) else "article_id"
    session.execute(text(f"DELETE FROM article_fts WHERE {column} = :id"), {"id": article_id})


def fts5_expression(query: Query, *, any_term: bool = False) -> str:
    groups: list[str] = []
    for term in query.terms:
        if term.prefix:
            options = [f'"{p}"*' for p in term.prefixes()]
        else:
            options = [f'"{s}"' for s in term.choices()]
        if options:
            groups.append(options[0] if len(options) == 1 else "(" + " OR ".join(options) + ")")
    groups.extend('"' + " ".join(p) + '"' for p in query.phrases)
    return (" OR " if any_term else " AND ").join(groups)


def tsquery_expression(query: Query, *, any_term: bool = False) -> str:
    groups: list[str] = []
    for term in query.terms:
        if term.prefix:
            options = [f"'{p}':*" for p in term.prefixes()]
        else:
            options = [f"'{s}'" for s in term.choices()]
        if options:
            groups.append("(" + " | ".join(options) + ")")
    groups.extend("(" + " <-> ".join(f"'{s}'" for s in p) + ")" for p in query.phrases)
    return (" | " if any_term else " & ").join(groups)


def match(
    session: Session,
    query: Query,
    *,
    locales: Sequence[str],
    statuses: Sequence[str],
    visibilities: Sequence[str],
    limit: int,
    any_term: bool = False,
    exclude: int | None = None,
) -> list[tuple[int, float]]:
    """(article id, score: higher is better) of the best matches, best first."""
    if query.empty:
        return []
    filters = (
        "a.locale IN :locales AND a.status IN :statuses AND a.visibility IN :visibilities"
        " AND a.id != :exclude"
    )
    params = {
        "locales": list(locales),
        "statuses": list(statuses),
        "visibilities": list(visibilities),
        "limit": limit,
        "exclude": exclude or 0,
    }
    if _sqlite(session):
        params["q"] = fts5_expression(query, any_term=any_term)
        sql = (
            "SELECT a.id, -bm25(article_fts, 8.0, 1.0) AS score FROM article_fts "
            "JOIN article a ON a.id = article_fts.rowid "
            f"WHERE article_fts MATCH :q AND {filters} ORDER BY score DESC, a.id LIMIT :limit"
        )
    else:
        params["q"] = tsquery_expression(query, any_term=any_term)
        sql = (
            "SELECT a.id, ts_rank(f.doc, q) AS score "
            "FROM article_fts f JOIN article a ON a.id = f.article_id, "
            "to_tsquery('simple', :q) q "
            f"WHERE f.doc @@ q AND {filters} ORDER BY score DESC, a.id LIMIT :limit"
        )
    statement = text(sql).bindparams(
        bindparam("locales", expanding=True),
        bindparam("statuses", expanding=True),
        bindparam("visibilities", expanding=True),
    )
    return [(int(i), float(s)) for i, s in session.execute(statement, params).all()]


def known_words(
    session: Session, locale: str, candidates: Sequence[str], limit: int
) -> list[tuple[str, str]]:
    """(word, stem) of the candidates that some article contains, most widespread first.
    PostgreSQL gets them as one array (`= ANY`): hundreds of bind parameters cost more to
    plan than the lookup itself."""
    if not candidates:
        return []
    order = "ORDER BY articles DESC, word LIMIT :limit"
    params = {"locale": locale, "words": list(candidates), "limit": limit}
    if _sqlite(session):
        statement = text(
            f"SELECT word, stem FROM articleword WHERE locale = :locale AND word IN :words {order}"
        ).bindparams(bindparam("words", expanding=True))
    else:
        statement = text(
            f"SELECT word, stem FROM articleword WHERE locale = :locale AND word = ANY(:words) "
            f"{order}"
        )
    return [(str(w), str(s)) for w, s in session.execute(statement, params).all()]
