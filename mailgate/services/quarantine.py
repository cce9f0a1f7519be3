"""Mail kept aside (unparseable, over a limit, automatic with no ticket): list, reprocess, delete.
Quarantine never expires on its own: an operator decides."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from mailgate import logs
from mailgate.core.addresses import Recipient
from mailgate.core.mail import MailParseError, parse_mail
from mailgate.errors import NotFound
from mailgate.services.ingest import Envelope, Ingestor, strip_internal_headers
from mailgate.services.ticket_views import iso
from mailgate.store.models import Quarantine, Receipt


def _row(q: Quarantine) -> dict[str, Any]:
    return {
        "id": q.id,
        "reason": q.reason,
        "status": q.status,
        "channel": q.channel,
        "recipient": q.recipient,
        "envelope_from": q.envelope_from,
        "message_id": q.message_id,
        "size": q.size,
        "sha256": q.raw_sha256,
        "received_at": iso(q.received_at),
    }


class QuarantineService:
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.db = ingestor.db

    def list(self, include_done: bool = False) -> list[dict[str, Any]]:
        with self.db.read() as session:
            query = select(Quarantine).order_by(col(Quarantine.id).desc())
            if not include_done:
                query = query.where(Quarantine.status == "held")
            return [_row(q) for q in session.exec(query)]

    def show(self, qid: int) -> dict[str, Any]:
        with self.db.read() as session:
            q = session.get(Quarantine, qid)
            if q is None:
                raise NotFound(f"no quarantined mail {qid}")
            data = _row(q)
        raw = self.ingestor.raw(q.raw_sha256)  # the database or the blob store
        data["headers"] = (
            raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        )
        return data

    def reprocess(self, qid: int) -> dict[str, Any]:
        """Run the mail through ingest again (after a fix, or to accept it as it is)."""
        with self.db.read() as session:
            q = session.get(Quarantine, qid)
            if q is None or q.status != "held":
                raise NotFound(f"no held quarantined mail {qid}")
        raw = self.ingestor.raw(q.raw_sha256)  # the database or the blob store
        try:
            mail = strip_internal_headers(parse_mail(raw))
        except MailParseError as exc:
            return {"id": qid, "outcome": "still-unparseable", "reason": str(exc)}
        rcpt = self.ingestor.addresses.resolve(q.recipient) or Recipient(
            q.recipient, q.recipient, "", None
        )
        envelope = Envelope(
            mail_from=q.envelope_from or None, recipients=(q.recipient,), channel=q.channel
        )

        def job(session: Any) -> tuple[str, int | None]:
            row = session.get(Quarantine, qid)
            outcome, ticket_id = self.ingestor.decide_reprocessed(
                session, raw, q.raw_sha256, mail, rcpt, envelope
            )
            row.status = "reprocessed"
            session.add(row)
            receipt = session.exec(
                select(Receipt).where(
                    Receipt.raw_sha256 == q.raw_sha256, Receipt.recipient == q.recipient
                )
            ).first()
            if receipt is not None:
                receipt.outcome, receipt.ticket_id = outcome, ticket_id
                session.add(receipt)
            return outcome, ticket_id

        outcome, ticket_id = self.ingestor.committer.run(job)
        logs.info("quarantine.reprocessed", quarantine=qid, outcome=outcome, ticket=ticket_id)
        return {"id": qid, "outcome": outcome, "ticket_id": ticket_id}

    def delete(self, qid: int) -> None:
        with self.db.write() as session:
            q = session.get(Quarantine, qid)
            if q is None:
                raise NotFound(f"no quarantined mail {qid}")
            session.delete(q)
        logs.info("quarantine.deleted", quarantine=qid)
