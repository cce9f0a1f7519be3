"""What the IMAP poller remembers: a UID cursor per mailbox folder, checked against
UIDVALIDITY, and the quarantine of mail too big to fetch. Knows nothing of IMAP itself.

The cursor is "every UID up to here was ingested": a message still in the folder at or below
it was committed before a crash stopped its move, so it is moved, not ingested again.
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlmodel import Session, select

from mailgate import logs
from mailgate.services.ingest import Envelope, Ingestor
from mailgate.store.models import ImapCursor, Quarantine

# UIDs and UIDVALIDITY are unsigned 32-bit; the columns are signed 32-bit INTEGER on
# PostgreSQL, so values above 2**31 are stored as their two's complement.
_U32, _I32 = 2**32, 2**31


def _to_db(value: int) -> int:
    return value - _U32 if value >= _I32 else value


def _from_db(value: int) -> int:
    return value + _U32 if value < 0 else value


class ImapState:
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.db = ingestor.db

    def last_uid(self, mailbox: str, uidvalidity: int) -> int:
        """The cursor for this folder; 0 (start over) when UIDVALIDITY changed."""
        with self.db.write() as session:
            row = session.get(ImapCursor, mailbox)
            if row is not None and _from_db(row.uidvalidity) == uidvalidity:
                return _from_db(row.last_uid)
            if row is None:
                row = ImapCursor(mailbox=mailbox)
            else:
                # The server renumbered the folder: old UIDs mean nothing now. Message-ID
                # dedupe keeps what was already ticketed from being ticketed twice.
                logs.warning(
                    "imap.uidvalidity_changed",
                    mailbox=mailbox,
                    old=_from_db(row.uidvalidity),
                    new=uidvalidity,
                )
            row.uidvalidity, row.last_uid = _to_db(uidvalidity), 0
            session.add(row)
            return 0

    def advance(self, mailbox: str, uidvalidity: int, uid: int) -> None:
        with self.db.write() as session:
            row = session.get(ImapCursor, mailbox)
            if row is None or _from_db(row.uidvalidity) != uidvalidity:
                return  # renumbered meanwhile: the next pass starts over anyway
            if _from_db(row.last_uid) < uid:
                row.last_uid = _to_db(uid)
                session.add(row)

    def quarantine_oversize(self, head: bytes, size: int, recipient: str, reason: str) -> int:
        """Keep the headers of a message too big to fetch, with the reason. Idempotent: after a
        crash before the move the same message finds its earlier row instead of a second one."""
        sha = self.ingestor.blobs.put(head)
        headers = BytesHeaderParser(policy=compat32).parsebytes(head)
        message_id = str(headers.get("Message-ID", "")).strip()
        envelope = Envelope(mail_from=None, recipients=(recipient,), channel="imap")

        def job(session: Session) -> int:
            held = session.exec(
                select(Quarantine.id).where(
                    Quarantine.raw_sha256 == sha,
                    Quarantine.recipient == recipient,
                    Quarantine.status == "held",
                )
            ).first()
            if held is not None:
                return held
            return self.ingestor.quarantine(
                session, sha, size, reason, recipient, envelope, message_id
            )

        return self.ingestor.committer.run(job)
