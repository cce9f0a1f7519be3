"""Signed download links for files too big to ride in an agent's notification.

The link names one attachment and the first 16 hex digits of its sha256, signed with the
links key (core/tokens.py, purpose FILE, 30 days): a forged, altered or expired token, or one
whose file changed, finds nothing, and nothing says which of these it was."""

from __future__ import annotations

from sqlmodel import Session

from mailgate.core.tokens import FILE, LinkTokens
from mailgate.store.models import Attachment


def make_file_token(links: LinkTokens, attachment: Attachment) -> str:
    return links.make(FILE, attachment.id or 0, attachment.sha256[:16])


def file_for_token(session: Session, links: LinkTokens, token: str) -> Attachment | None:
    found = links.read(FILE, token) if len(token) <= 400 else None
    if found is None:
        return None
    attachment_id, digest = found
    row = session.get(Attachment, attachment_id)
    if row is None or row.sha256[:16] != digest:
        return None
    return row
