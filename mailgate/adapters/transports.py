"""Where outbound mail goes: a local maildir (the default) or an SMTP smarthost.

A transport either returns (delivered), raises TransportTempError (try later) or
TransportPermError (never going to work for this row).
"""

from __future__ import annotations

import mailbox
import os
import smtplib
from pathlib import Path
from urllib.parse import urlparse

from mailgate.services.outbox import Transport, TransportPermError, TransportTempError


class MaildirTransport:
    """Writes each message into a Maildir (tmp -> fsync -> new), e.g. var/sent for `make run`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None:
        try:
            # Maildir(create=True) makes tmp/new/cur only when it makes the top folder itself:
            # a top folder left empty (by hand, or an old check-config) would fail every send.
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            box = mailbox.Maildir(self.path, create=False)
            box.add(raw)  # writes tmp/, fsyncs the file, renames into new/
            # The rename is only durable once the folder itself is synced.
            fd = os.open(self.path / "new", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TransportTempError(f"maildir: {exc.strerror or exc}") from exc

    def check(self) -> str:
        """Creates nothing: a check must not leave a state that changes what it checked."""
        if self.path.exists():
            if not self.path.is_dir():
                raise TransportTempError(f"{self.path} is not a folder")
            missing = [s for s in ("tmp", "new", "cur") if not (self.path / s).is_dir()]
            for folder in [self.path] + [self.path / s for s in ("tmp", "new", "cur")]:
                if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                    raise TransportTempError(f"{folder} is not writable")
            if missing:
                return f"maildir {self.path} writable ({'/'.join(missing)} made on first send)"
            return f"maildir {self.path} writable"
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise TransportTempError(f"{self.path} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TransportTempError(f"{self.path} cannot be created: {parent} is not writable")
        return f"maildir {self.path} will be created on first send ({parent} writable)"


class SmtpTransport:
    """Relays through a smarthost with smtplib; 4xx and network errors are temporary."""

    def __init__(self, host: str, port: int, helo: str, timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.helo = helo
        self.timeout = timeout

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None:
        try:
            with smtplib.SMTP(
                self.host, self.port, local_hostname=self.helo, timeout=self.timeout
            ) as s:
                s.ehlo_or_helo_if_needed()
                if s.has_extn("starttls") and self.host not in ("127.0.0.1", "localhost", "::1"):
                    s.starttls()
                    s.ehlo()
                s.sendmail(envelope_from, [to_addr], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            _raise_for(code, text)
        except smtplib.SMTPResponseException as exc:
            _raise_for(exc.smtp_code, exc.smtp_error)
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            raise TransportTempError(f"smtp {self.host}:{self.port}: {exc}") from exc

    def check(self) -> str:
        try:
            with smtplib.SMTP(self.host, self.port, local_hostname=self.helo, timeout=10) as s:
                code, _ = s.noop()
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportTempError(f"smtp {self.host}:{self.port}: {exc}") from exc
        return f"smarthost {self.host}:{self.port} answered {code}"


def _raise_for(code: int, text: bytes | str) -> None:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if 500 <= code < 600:
        raise TransportPermError(f"{code} {message}")
    raise TransportTempError(f"{code} {message}")


def make_transport(spec: str, helo: str) -> Transport:
    if spec.startswith("maildir:"):
        return MaildirTransport(Path(spec[len("maildir:") :]))
    parsed = urlparse(spec)
    return SmtpTransport(parsed.hostname or "127.0.0.1", parsed.port or 25, helo)
