"""Where the raw mail is kept (issue 11): up to INLINE_RAW_BYTES in the transaction that records
its receipt (table rawmail, no blob file), bigger as a blob; `Ingestor.raw` reads either, and
quarantine show / reprocess read through it."""

from __future__ import annotations

import hashlib

from sqlalchemy import func
from sqlmodel import select

from mailgate.services.ingest import INLINE_RAW_BYTES
from mailgate.services.quarantine import QuarantineService
from mailgate.store.models import Quarantine, RawMail, Receipt
from tests.conftest import make_mail
from tests.support.inprocess import InProcess, wire_bytes

CLIENT = "jean@client.example"


def _rawmail_rows(service: InProcess) -> int:
    with service.app.db.read() as session:
        return int(session.exec(select(func.count()).select_from(RawMail)).one())


def test_a_small_mail_is_kept_in_the_database_once_whatever_it_was_sent_to(
    service: InProcess,
) -> None:
    raw = wire_bytes(make_mail(sender=CLIENT))
    assert len(raw) <= INLINE_RAW_BYTES
    sha = hashlib.sha256(raw).hexdigest()
    service.ingest(raw, ["support@example.com", "billing@example.com"], CLIENT)
    service.ingest(raw, ["support@example.com"], CLIENT)  # an MTA's retry: a duplicate

    assert service.app.ingestor.raw(sha) == raw
    assert not service.app.blobs.local_path(sha).exists()
    assert _rawmail_rows(service) == 1
    with service.app.db.read() as session:
        assert {r.raw_sha256 for r in session.exec(select(Receipt))} == {sha}


def test_a_big_mail_is_a_blob(service: InProcess) -> None:
    raw = wire_bytes(make_mail(sender=CLIENT, body="Bonjour, une ligne de texte.\n" * 3000))
    assert len(raw) > INLINE_RAW_BYTES
    sha = hashlib.sha256(raw).hexdigest()
    service.ingest(raw, ["support@example.com"], CLIENT)

    assert service.app.blobs.local_path(sha).read_bytes() == raw
    assert _rawmail_rows(service) == 0
    assert service.app.ingestor.raw(sha) == raw


def test_a_small_quarantined_mail_is_shown_and_reprocessed_from_the_database(
    service: InProcess,
) -> None:
    # Automatic mail matching no ticket is held aside; an operator lets it through.
    raw = wire_bytes(make_mail(sender=CLIENT, subject="Absence du bureau",
                               headers={"Auto-Submitted": "auto-replied"}))  # fmt: skip
    service.ingest(raw, ["support@example.com"], CLIENT)
    with service.app.db.read() as session:
        (held,) = session.exec(select(Quarantine))
    assert held.id is not None and not service.app.blobs.local_path(held.raw_sha256).exists()

    quarantine = QuarantineService(service.app.ingestor)
    assert "Subject: Absence du bureau" in quarantine.show(held.id)["headers"]
    assert quarantine.reprocess(held.id)["ticket_id"] is not None
