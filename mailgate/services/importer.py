"""`mailgate import PATH`: an existing support mailbox (an mbox file or a Maildir folder) loaded
as tickets through the same ingest as live mail, with send_mail=False: nobody is mailed.

Messages go in Date order, oldest first, so a reply finds the ticket its question opened, as
it would have live (a Maildir has no order of its own). Re-running is harmless: ingest's
dedupe key (Message-ID, or a hash of the bytes when there is none) makes a second copy a
duplicate.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

from mailgate import logs
from mailgate.errors import NotFound, Rejected, TempFailure
from mailgate.services.ingest import Envelope, Ingestor

# Where a stored message says which of our addresses it was sent to, most precise first.
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "To", "Cc")
SKIPPED = {"loop", "bounce"}  # our own mail coming back, delivery reports


@dataclass
class ImportReport:
    total: int = 0
    done: int = 0
    imported: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0
    refused: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def open_source(path: Path) -> mailbox.Mailbox:
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return mailbox.Maildir(path, factory=None, create=False)
        raise NotFound(f"{path} is a folder but not a Maildir (no cur/ and new/ inside)")
    if path.is_file():
        return mailbox.mbox(path, factory=None, create=False)
    raise NotFound(f"no such mbox file or Maildir folder: {path}")


def _headers(raw: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(raw)


def _sort_key(headers: Message, position: int) -> tuple[int, float, int]:
    try:
        date = parsedate_to_datetime(str(headers.get("Date", "")))
    except (TypeError, ValueError, IndexError):
        date = None
    if date is None:
        return (1, 0.0, position)  # undated mail last, in file order
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return (0, date.timestamp(), position)


class Importer:
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def recipient(self, headers: Message) -> str:
        """Which of our addresses the mail went to (it decides category and reply tokens)."""
        for name in RECIPIENT_HEADERS:
            values = [str(v) for v in headers.get_all(name, [])]
            for _, address in getaddresses(values):
                resolved = self.ingestor.addresses.resolve(address)
                if resolved is not None:
                    return resolved.address
        return self.ingestor.addresses.support

    def _ordered(self, box: mailbox.Mailbox) -> list[Any]:
        keyed = []
        for position, key in enumerate(box.keys()):
            keyed.append((_sort_key(_headers(box.get_bytes(key)), position), key))
        return [key for _, key in sorted(keyed, key=lambda item: item[0])]

    def run(
        self,
        path: Path,
        recipient: str | None = None,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        """Raises TempFailure (database or disk down): re-run later, nothing is lost."""
        box = open_source(path)
        keys = self._ordered(box)
        report = ImportReport(total=len(keys))
        for key in keys:
            raw = box.get_bytes(key)
            self._one(raw, recipient or self.recipient(_headers(raw)), report)
            report.done += 1
            if progress is not None:
                progress(report)
        logs.info("import.done", path=str(path), **report.as_dict())
        return report

    def _one(self, raw: bytes, recipient: str, report: ImportReport) -> None:
        envelope = Envelope(
            mail_from=None, recipients=(recipient,), channel="import", send_mail=False
        )
        try:
            deliveries = self.ingestor.ingest(raw, envelope)
        except Rejected as exc:
            report.refused += 1
            logs.warning("import.refused", reason=exc.reason, recipient=recipient)
            return
        except TempFailure:
            raise
        except Exception:
            # One message that breaks ingest must not stop the other thousands.
            report.failed += 1
            logs.error("import.crashed", recipient=recipient, exc_info=True)
            return
        for d in deliveries:
            if d.outcome == "duplicate":
                report.duplicates += 1
            elif d.outcome == "quarantined":
                report.quarantined += 1
            elif d.outcome in SKIPPED:
                report.skipped += 1
            else:
                report.imported += 1
