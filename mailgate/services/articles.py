"""Help-centre articles (issue 13): writing, publishing, reading, importing and exporting.

An article is Markdown with a title, a section, a language (fr/en), a visibility (public, or
signed-in customers only) and a status (draft, published). It is rendered with markdown-it-py
(raw HTML in the Markdown is not passed through) and then cleaned by nh3, so nothing an author
writes can run in a reader's browser. Saving an article re-indexes it for search (stems) and
updates the vocabulary of known words (typo tolerance) in the same transaction.

Files: one Markdown file per article with YAML front matter (`title`, `slug`, `section`,
`locale`, `visibility`, `status`); import is idempotent by slug, all or nothing. An article's
images and files are blobs named in the article (services/article_files.py); in a folder they
sit in a sub-folder named after the article (`reset-password.md`, `reset-password/form.png`).
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import frontmatter
import nh3
from markdown_it import MarkdownIt
from sqlalchemy import text
from sqlmodel import Session, col, select

from mailgate.clock import Clock, as_utc
from mailgate.config import mail_locales
from mailgate.core.article_files import MAX_FILE_BYTES, file_target
from mailgate.core.html import safe_html
from mailgate.core.textsearch import index_text, vocabulary
from mailgate.errors import MailgateError
from mailgate.services import article_files
from mailgate.services.article_files import ArticleFileView, FileUpload, upload_problems
from mailgate.services.writer import Writer
from mailgate.store import article_index
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database
from mailgate.store.help_models import Article

LOCALES = mail_locales()  # the languages mailgate speaks (templates/mail/*), issue 15
VISIBILITIES = ("public", "customers")
STATUSES = ("draft", "published")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TITLE_MAX = 300
SECTION_MAX = 200
BODY_MAX = 500_000
FIELDS = ("title", "slug", "section", "locale", "visibility", "status")

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


class ArticleFileError(MailgateError):
    """A file of an import that cannot be used; names the file and the reason."""


@dataclass(frozen=True)
class Audience:
    """Who is reading: public articles for everyone, `customers` ones for anyone signed in,
    drafts for agents only."""

    signed_in: bool = False
    agent: bool = False

    @property
    def visibilities(self) -> tuple[str, ...]:
        return VISIBILITIES if self.signed_in or self.agent else ("public",)

    @property
    def statuses(self) -> tuple[str, ...]:
        return STATUSES if self.agent else ("published",)

    def may_read(self, article: Article) -> bool:
        return article.visibility in self.visibilities and article.status in self.statuses


PUBLIC = Audience()


@dataclass(frozen=True)
class ArticleInput:
    slug: str
    title: str
    section: str = ""
    locale: str = "fr"
    visibility: str = "public"
    status: str = "draft"
    body_markdown: str = ""

    def problems(self) -> tuple[str, ...]:
        errors = []
        if not SLUG.match(self.slug) or len(self.slug) > 200:
            errors.append("slug.invalid")
        if not self.title.strip() or len(self.title) > TITLE_MAX:
            errors.append("title.invalid")
        if len(self.section) > SECTION_MAX:
            errors.append("section.invalid")
        if self.locale not in LOCALES:
            errors.append("locale.invalid")
        if self.visibility not in VISIBILITIES:
            errors.append("visibility.invalid")
        if self.status not in STATUSES:
            errors.append("status.invalid")
        if len(self.body_markdown) > BODY_MAX:
            errors.append("body.long")
        return tuple(errors)

    def same_as(self, article: Article) -> bool:
        return all(getattr(self, f) == getattr(article, f) for f in (*FIELDS, "body_markdown"))


@dataclass(frozen=True)
class ArticleView:
    id: int
    slug: str
    title: str
    section: str
    locale: str
    visibility: str
    status: str
    updated_at: datetime
    views: int
    body_markdown: str = ""
    html: str = ""
    files: tuple[ArticleFileView, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The article JSON shape of CONTRACT.md (and a few more fields)."""
        return {
            "slug": self.slug,
            "title": self.title,
            "section": self.section,
            "locale": self.locale,
            "visibility": self.visibility,
            "status": self.status,
            "updated_at": as_utc(self.updated_at).isoformat().replace("+00:00", "Z"),
            "views": self.views,
        }


@dataclass(frozen=True)
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def render_markdown(body: str, files: Mapping[str, str] | None = None) -> str:
    """Markdown -> HTML with nothing active in it (no script, handler, frame, remote image).
    `files`: the article's file names and their URLs; a relative link or image naming one of
    them points there, and only those images are shown."""
    if not files:
        return safe_html(_markdown.render(body))
    env: dict[str, Any] = {}
    tokens = _markdown.parse(body, env)
    for block in tokens:
        for token in block.children or ():
            attribute = {"image": "src", "link_open": "href"}.get(token.type)
            if attribute is None:
                continue
            target = file_target(str(token.attrGet(attribute) or ""), files)
            if target is not None:
                token.attrSet(attribute, target)
    html = _markdown.renderer.render(tokens, _markdown.options, env)
    return safe_html(html, images=frozenset(files.values()))


def file_urls(slug: str, names: Iterable[str], prefix: str = "") -> dict[str, str]:
    """Where the portal serves each file of the article (`prefix`: the portal's path)."""
    return {name: f"{prefix}/articles/{slug}/files/{name}" for name in names}


def plain_text(body: str) -> str:
    """The words a reader sees, for the index and the highlighted passages."""
    rendered = _markdown.render(body)
    rendered = re.sub(r"</(p|h\d|li|tr|pre|blockquote)>", "\n", rendered)
    return html_lib.unescape(nh3.clean(rendered, tags=set())).strip()


MARKUP = (
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links and images: their text
    (re.compile(r"<[^>\n]{0,200}>"), ""),  # raw HTML tags
    (re.compile(r"(?m)^\s{0,3}(#{1,6}|>|[-*+]|\d{1,3}[.)])\s+"), ""),  # headings, quotes, lists
    (re.compile(r"[*_`~|]{1,3}"), ""),  # emphasis, code, tables
)


def rough_text(body: str) -> str:
    """The words of the Markdown without its markup, cheaply (search passages: ten per
    query; plain_text's full rendering is for the index, once per save)."""
    for pattern, replacement in MARKUP:
        body = pattern.sub(replacement, body)
    return html_lib.unescape(body)


def view(
    article: Article,
    *,
    with_body: bool = False,
    files: Sequence[ArticleFileView] = (),
    prefix: str = "",
) -> ArticleView:
    urls = file_urls(article.slug, [f.name for f in files], prefix)
    return ArticleView(
        id=article.id or 0,
        slug=article.slug,
        title=article.title,
        section=article.section,
        locale=article.locale,
        visibility=article.visibility,
        status=article.status,
        updated_at=as_utc(article.updated_at),
        views=article.views,
        body_markdown=article.body_markdown if with_body else "",
        html=render_markdown(article.body_markdown, urls) if with_body else "",
        files=tuple(files),
    )


def _vocabulary(article: Article) -> dict[str, str]:
    return vocabulary(f"{article.title}\n{plain_text(article.body_markdown)}", article.locale)


def _count_words(session: Session, locale: str, words: dict[str, str], step: int) -> None:
    if not words:
        return
    if step > 0:
        session.execute(
            text(
                "INSERT INTO articleword (word, locale, stem, articles) "
                "VALUES (:word, :locale, :stem, 1) ON CONFLICT (word, locale) "
                "DO UPDATE SET articles = articleword.articles + 1"
            ),
            [{"word": w, "locale": locale, "stem": s} for w, s in words.items()],
        )
        return
    session.execute(
        text(
            "UPDATE articleword SET articles = articles - 1 WHERE word = :word AND locale = :locale"
        ),
        [{"word": w, "locale": locale} for w in words],
    )
    session.execute(text("DELETE FROM articleword WHERE articles <= 0"))


def reindex(session: Session, article: Article, before: dict[str, str] | None) -> None:
    """The article's stems in the full-text index, its words in the vocabulary."""
    after = _vocabulary(article)
    if before is not None:
        _count_words(
            session, article.locale, {w: s for w, s in before.items() if w not in after}, -1
        )
        after_new = {w: s for w, s in after.items() if w not in before}
    else:
        after_new = after
    _count_words(session, article.locale, after_new, +1)
    article_index.put(
        session,
        article.id or 0,
        index_text(article.title, article.locale),
        index_text(plain_text(article.body_markdown), article.locale),
    )


def save_in(
    session: Session, data: ArticleInput, now: datetime, author_id: int | None = None
) -> tuple[Article, str]:
    """Create or update the article with this slug; "created", "updated" or "unchanged"."""
    article = session.exec(select(Article).where(Article.slug == data.slug)).first()
    if article is not None and data.same_as(article):
        return article, "unchanged"
    before: dict[str, str] | None = None
    if article is None:
        article = Article(slug=data.slug, title=data.title, created_at=now, updated_at=now)
        outcome = "created"
    else:
        before = _vocabulary(article)
        if article.locale != data.locale:  # its words leave the other language's list
            _count_words(session, article.locale, before, -1)
            before = None
        outcome = "updated"
    for name in (*FIELDS, "body_markdown"):
        setattr(article, name, getattr(data, name))
    article.updated_at = now
    if author_id is not None:
        article.author_id = author_id
    session.add(article)
    session.flush()
    reindex(session, article, before)
    return article, outcome


def read_file(path: Path) -> ArticleInput:
    try:
        post = frontmatter.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, Exception) as exc:  # YAML errors vary by loader
        raise ArticleFileError(f"{path.name}: cannot read its front matter ({exc})") from None
    meta = post.metadata
    unknown = set(meta) - set(FIELDS)
    if unknown:
        raise ArticleFileError(f"{path.name}: unknown front matter key(s): {sorted(unknown)}")
    data = ArticleInput(
        slug=str(meta.get("slug") or path.stem),
        title=str(meta.get("title") or ""),
        section=str(meta.get("section") or ""),
        locale=str(meta.get("locale") or "fr"),
        visibility=str(meta.get("visibility") or "public"),
        status=str(meta.get("status") or "published"),
        body_markdown=post.content.strip() + "\n",
    )
    problems = data.problems()
    if problems:
        raise ArticleFileError(f"{path.name}: {', '.join(problems)}")
    return data


def read_files(folder: Path) -> list[FileUpload]:
    """The files beside an article's Markdown (its sub-folder), if there is one."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ArticleFileError(f"{folder.name}/{path.name}: larger than {MAX_FILE_BYTES} bytes")
        found.append(FileUpload(path.name, path.read_bytes()))
    problems = upload_problems(found)
    if problems:
        raise ArticleFileError(f"{folder.name}: {', '.join(problems)}")
    return found


def file_text(article: Article) -> str:
    post = frontmatter.Post(
        article.body_markdown.strip() + "\n", **{f: getattr(article, f) for f in FIELDS}
    )
    return frontmatter.dumps(post, sort_keys=False) + "\n"


class Articles:
    """Articles for the CLI and the portal; writes go through the writer."""

    def __init__(
        self, db: Database, write: Writer, clock: Clock, blobs: BlobStore | None = None
    ) -> None:
        self.db = db
        self.write = write
        self.clock = clock
        self.blobs = blobs

    # -- writing -------------------------------------------------------------------------

    def _store(self, uploads: Sequence[FileUpload]) -> list[article_files.StoredFile]:
        """The uploads' bytes in the blob store, before the transaction that names them."""
        if uploads and self.blobs is None:
            raise RuntimeError("articles: files given but no blob store")
        return [
            article_files.stored(u.filename, u.payload, self.blobs.put(u.payload))  # type: ignore[union-attr]
            for u in uploads
        ]

    def save(
        self,
        data: ArticleInput,
        author_id: int | None = None,
        original_slug: str | None = None,
        uploads: Sequence[FileUpload] = (),
        remove_files: Sequence[str] = (),
    ) -> tuple[ArticleView | None, tuple[str, ...]]:
        """Create or update (`original_slug`: the article being edited, which may be renamed),
        adding `uploads` to its files and removing the files named in `remove_files`.
        Returns the article, or the problems found."""
        problems = data.problems() + upload_problems(uploads)
        if problems:
            return None, problems
        new_files = self._store(uploads)

        def job(session: Session) -> ArticleView | tuple[str, ...]:
            if original_slug and original_slug != data.slug:
                taken = session.exec(select(Article.id).where(Article.slug == data.slug)).first()
                if taken is not None:
                    return ("slug.taken",)
                old = session.exec(select(Article).where(Article.slug == original_slug)).first()
                if old is not None:
                    old.slug = data.slug
                    session.add(old)
                    session.flush()
            elif not original_slug:
                taken = session.exec(select(Article.id).where(Article.slug == data.slug)).first()
                if taken is not None:
                    return ("slug.taken",)
            now = self.clock.now()
            article, _ = save_in(session, data, now, author_id)
            article_id = article.id or 0
            article_files.remove(session, article_id, remove_files)
            article_files.attach(session, article_id, new_files, now)
            return view(article, with_body=True, files=article_files.listing(session, article_id))

        result = self.write(job)
        if isinstance(result, tuple):
            return None, result
        return result, ()

    def delete(self, slug: str) -> bool:
        """The article, its files and its words in the index; False when there is none."""

        def job(session: Session) -> bool:
            article = session.exec(select(Article).where(Article.slug == slug)).first()
            if article is None:
                return False
            _count_words(session, article.locale, _vocabulary(article), -1)
            article_index.delete(session, article.id or 0)
            article_files.remove_all(session, article.id or 0)
            session.delete(article)
            return True

        return self.write(job)

    def import_dir(self, folder: Path) -> ImportReport:
        """Every *.md file of the folder, in one transaction; a bad file changes nothing.
        The files in a sub-folder named like the Markdown file are the article's files (added
        or replaced by name; a file removed from the folder stays until removed in the
        portal, so importing Markdown alone never loses images uploaded there)."""
        files = sorted(folder.glob("*.md"))
        inputs = [read_file(path) for path in files]
        uploads = [read_files(path.with_suffix("")) for path in files]
        slugs: dict[str, str] = {}
        for path, data in zip(files, inputs, strict=True):
            if data.slug in slugs:
                raise ArticleFileError(
                    f"{path.name}: slug {data.slug} is also {slugs[data.slug]}'s"
                )
            slugs[data.slug] = path.name

        stored = [self._store(u) for u in uploads]

        def job(session: Session) -> ImportReport:
            report = ImportReport()
            now = self.clock.now()
            for data, new_files in zip(inputs, stored, strict=True):
                article, outcome = save_in(session, data, now)
                if article_files.attach(session, article.id or 0, new_files, now):
                    outcome = "updated" if outcome == "unchanged" else outcome
                getattr(report, outcome).append(data.slug)
            return report

        return self.write(job)

    def export_dir(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        with self.db.read() as session:
            rows = session.exec(select(Article).order_by(col(Article.slug))).all()
            written = []
            for article in rows:
                path = folder / f"{article.slug}.md"
                path.write_text(file_text(article), encoding="utf-8")
                written.append(path)
                for f in article_files.listing(session, article.id or 0):
                    if self.blobs is None:
                        raise RuntimeError("articles: exporting files needs the blob store")
                    (folder / article.slug).mkdir(exist_ok=True)
                    target = folder / article.slug / f.name  # a clean name: no separator
                    target.write_bytes(self.blobs.get(f.sha256))
                    written.append(target)
        return written

    def count_view(self, article_id: int) -> None:
        def job(session: Session) -> None:
            session.execute(
                text("UPDATE article SET views = views + 1 WHERE id = :id"), {"id": article_id}
            )

        self.write(job)

    # -- reading -------------------------------------------------------------------------

    def listing(
        self, audience: Audience | None = None, locale: str | None = None
    ) -> list[ArticleView]:
        """Every article the audience may read (all of them without one), by section, title."""
        with self.db.read() as session:
            query = select(Article).order_by(
                col(Article.locale), col(Article.section), col(Article.title)
            )
            if audience is not None:
                query = query.where(
                    col(Article.status).in_(audience.statuses),
                    col(Article.visibility).in_(audience.visibilities),
                )
            if locale is not None:
                query = query.where(Article.locale == locale)
            return [view(a) for a in session.exec(query).all()]

    def sections(self, audience: Audience, locale: str) -> list[tuple[str, list[ArticleView]]]:
        grouped: dict[str, list[ArticleView]] = {}
        for article in self.listing(audience, locale):
            grouped.setdefault(article.section, []).append(article)
        return list(grouped.items())

    def most_read(self, audience: Audience, locale: str, limit: int = 5) -> list[ArticleView]:
        with self.db.read() as session:
            rows = session.exec(
                select(Article)
                .where(
                    Article.status == "published",
                    Article.locale == locale,
                    col(Article.visibility).in_(audience.visibilities),
                    Article.views > 0,
                )
                .order_by(col(Article.views).desc(), col(Article.id))
                .limit(limit)
            ).all()
            return [view(a) for a in rows]

    def find(self, slug: str, prefix: str = "") -> ArticleView | None:
        """The article with this slug whoever may read it (the caller checks the audience);
        its files' URLs under `prefix`, the portal's path."""
        if not SLUG.match(slug) or len(slug) > 200:
            return None
        with self.db.read() as session:
            article = session.exec(select(Article).where(Article.slug == slug)).first()
            if article is None:
                return None
            files = article_files.listing(session, article.id or 0)
            return view(article, with_body=True, files=files, prefix=prefix)

    def file(self, slug: str, name: str) -> tuple[ArticleView, ArticleFileView] | None:
        """One file of an article, and the article (whose audience the caller checks)."""
        if not SLUG.match(slug) or len(slug) > 200:
            return None
        with self.db.read() as session:
            article = session.exec(select(Article).where(Article.slug == slug)).first()
            if article is None:
                return None
            found = [f for f in article_files.listing(session, article.id or 0) if f.name == name]
            return (view(article), found[0]) if found else None

    def by_ids(self, ids: Iterable[int]) -> dict[int, Article]:
        wanted = list(ids)
        if not wanted:
            return {}
        with self.db.read() as session:
            rows = session.exec(select(Article).where(col(Article.id).in_(wanted))).all()
            for row in rows:
                session.expunge(row)
            return {row.id or 0: row for row in rows}
