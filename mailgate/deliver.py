"""`mailgate deliver`: one message from standard input, as a Postfix `pipe` runs it.

Exit 0 stored, 65 refused for good, 75 try again later, 78 config error (CONTRACT.md). Postfix
starts one process per mail, so this stays cheap (issue 11):
1. when serve's LMTP listener has a fixed address, hand the message to serve (stdlib only:
   no SQLAlchemy, no ingest code loaded here); serve answers 250 only after its commit;
2. otherwise, or when serve is not there, store it in this process with only what ingest
   needs (mailgate.wiring), after one SELECT that the schema is current: no migration here.
The pipe copies what we print into its log and, for a bounce, into the DSN the sender reads:
so one short line on failure and nothing else; log records go to syslog (or stderr with
--verbose).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from mailgate import config as config_mod
from mailgate import logs
from mailgate.config import Config
from mailgate.errors import ConfigError, Rejected, TempFailure

EX_OK, EX_DATAERR, EX_TEMPFAIL, EX_CONFIG = 0, 65, 75, 78


def run(args: argparse.Namespace) -> int:
    buffered = _buffer_logs()
    outcome, line = EX_OK, ""
    try:
        cfg = config_mod.load(args.config)
        raw = sys.stdin.buffer.read()
        recipients = tuple(args.recipient or [cfg.support_address])
        handed = None if args.in_process else _hand_over(cfg, raw, args.sender, recipients)
        if handed is None:
            _store_here(cfg, raw, args.sender, recipients)
        else:
            outcome, line = handed
    except Rejected as exc:
        outcome, line = EX_DATAERR, f"mailgate: refused: {exc.smtp_reply()}"
    except ConfigError as exc:  # EX_CONFIG: Postfix defers (4.3.5) until the config is fixed
        outcome, line = EX_CONFIG, f"mailgate: config error: {exc}"
    except TempFailure as exc:
        outcome, line = EX_TEMPFAIL, f"mailgate: temporary failure: {exc}"
    except Exception as exc:  # fault barrier: the MTA keeps the mail and retries
        from mailgate.cli import describe_error  # loaded already: it is what called us

        logs.error("deliver.crashed", exc_info=True)
        outcome, line = EX_TEMPFAIL, f"mailgate: temporary failure: {describe_error(exc)}"
    buffered.flush_to(sys.stderr if getattr(args, "verbose", False) else None)
    if line:
        print(" ".join(line.split())[:300], file=sys.stderr)
    return outcome


def _hand_over(
    cfg: Config, raw: bytes, sender: str | None, recipients: tuple[str, ...]
) -> tuple[int, str] | None:
    """(exit code, line) from serve over LMTP; None when serve did not take the message."""
    from mailgate.adapters import lmtp_client

    where = lmtp_client.target(cfg.inbound.lmtp_listen)
    if where is None or sender is None:  # LMTP cannot say "sender unknown" (<> is a bounce)
        return None
    try:
        reply = lmtp_client.hand_over(where, raw, sender, recipients)
    except lmtp_client.Declined as exc:
        logs.info("deliver.in_process", reason=str(exc))
        return None
    except lmtp_client.Lost as exc:
        logs.warning("deliver.lmtp_lost", error=str(exc))
        return EX_TEMPFAIL, f"mailgate: temporary failure: no answer from serve ({exc})"
    logs.info("deliver.handed_over", reply=str(reply))
    if 200 <= reply.code < 300:
        return EX_OK, ""
    if 500 <= reply.code < 600:
        return EX_DATAERR, f"mailgate: refused: {reply}"
    return EX_TEMPFAIL, f"mailgate: temporary failure: {reply}"


def _store_here(cfg: Config, raw: bytes, sender: str | None, recipients: tuple[str, ...]) -> None:
    from mailgate.services.ingest import Envelope
    from mailgate.wiring import build_for_ingest

    core = build_for_ingest(cfg)
    try:
        # A new, empty database gets its schema (a fresh install whose MTA delivers before
        # `db upgrade` ran); one at another revision gets 75 until `db upgrade` is run.
        core.db.require_current(create=True)
        core.ingestor.ingest(
            raw, Envelope(mail_from=sender, recipients=recipients, channel="deliver")
        )
    finally:
        core.db.dispose()


class _LogBuffer(logging.Handler):
    """Holds deliver's log records until we know whether it failed."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.setFormatter(formatter or logging.Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def flush_to(self, stream: Any) -> None:
        """To `stream`, or else to syslog's mail facility when there is one."""
        target: logging.Handler | None = None
        if stream is not None:
            target = logging.StreamHandler(stream)
        elif self.records and os.path.exists("/dev/log"):
            # socket and friends: imported only when there is something to say
            from logging.handlers import SysLogHandler

            try:
                target = SysLogHandler("/dev/log", facility=SysLogHandler.LOG_MAIL)
            except OSError:
                target = None
        if target is not None:
            target.setFormatter(self.formatter)
            for record in self.records:
                target.handle(record)
            target.close()
        self.records.clear()


def _buffer_logs() -> _LogBuffer:
    ours = logging.getLogger("mailgate")
    buffer = _LogBuffer(ours.handlers[0].formatter if ours.handlers else None)
    ours.handlers[:] = [buffer]
    ours.setLevel(logging.INFO)  # kept whatever --verbose says: they go to syslog
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "mailgate", False)]:
        root.removeHandler(h)
    buffer.mailgate = True  # type: ignore[attr-defined]  # replaced by the next logs.setup()
    root.addHandler(buffer)
    return buffer
