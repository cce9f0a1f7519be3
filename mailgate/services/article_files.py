"""The rows of an article's images and files (issue 13), inside the caller's transaction.

The bytes are blobs, stored before the transaction that names them (as a ticket's attachments
are): a blob without a row is harmless, a row without its blob cannot happen. Removing a file
or an article leaves the blob, which other articles or tickets may share (content-addressed).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlmodel import Session, col, select

from mailgate.core.article_files import INLINE_TYPES, MAX_FILE_BYTES, MAX_FILES, file_name
from mailgate.store.help_models import ArticleFile


@dataclass(frozen=True)
class FileUpload:
    """A file given for an article: its name as the author's system called it, its bytes."""

    filename: str
    payload: bytes


@dataclass(frozen=True)
class StoredFile:
    name: str
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArticleFileView:
    name: str
    content_type: str
    size: int
    sha256: str

    @property
    def inline(self) -> bool:
        """Shown in the page (an image); anything else is a download."""
        return self.content_type in INLINE_TYPES


def upload_problems(uploads: Sequence[FileUpload]) -> tuple[str, ...]:
    """Error keys (help.error.*) for uploads that cannot be taken, before anything is stored."""
    errors = []
    if len(uploads) > MAX_FILES:
        errors.append("files.too_many")
    if any(len(u.payload) > MAX_FILE_BYTES for u in uploads):
        errors.append("files.too_big")
    return tuple(errors)


def content_type(name: str) -> str:
    """By the name's extension, not by what the browser said: the type decides whether the
    file is shown in the page, and a declared type is the uploader's word."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def stored(name: str, payload: bytes, sha256: str) -> StoredFile:
    clean = file_name(name)
    return StoredFile(clean, content_type(clean), len(payload), sha256)


def listing(session: Session, article_id: int) -> list[ArticleFileView]:
    rows = session.exec(
        select(ArticleFile).where(ArticleFile.article_id == article_id).order_by(ArticleFile.name)
    ).all()
    return [ArticleFileView(r.name, r.content_type, r.size, r.sha256) for r in rows]


def attach(session: Session, article_id: int, files: Iterable[StoredFile], now: datetime) -> bool:
    """Adds the files, replacing one of the same name; True when anything changed."""
    existing = {
        r.name: r
        for r in session.exec(select(ArticleFile).where(ArticleFile.article_id == article_id))
    }
    changed = False
    for f in {f.name: f for f in files}.values():  # the same name twice: the last one
        row = existing.get(f.name)
        if row is not None and row.sha256 == f.sha256:
            continue
        row = row or ArticleFile(article_id=article_id, name=f.name, created_at=now)
        row.content_type, row.size, row.sha256 = f.content_type, f.size, f.sha256
        session.add(row)
        changed = True
    return changed


def remove(session: Session, article_id: int, names: Iterable[str]) -> None:
    wanted = list(names)
    if wanted:
        session.execute(
            delete(ArticleFile).where(
                col(ArticleFile.article_id) == article_id, col(ArticleFile.name).in_(wanted)
            )
        )


def remove_all(session: Session, article_id: int) -> None:
    session.execute(delete(ArticleFile).where(col(ArticleFile.article_id) == article_id))
