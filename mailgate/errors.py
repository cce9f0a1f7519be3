"""mailgate's exception tree. Adapters map these to protocol answers (see ARCHITECTURE.md).

MailgateError
├── ConfigError        bad or unknown config key: start-up stops, the key is named
├── Rejected           permanent refusal of a message (SMTP 5xx, deliver exit 65)
│   └── TooLarge       over max_message_bytes (552)
├── TempFailure        transient fault inside mailgate (SMTP 451, deliver exit 75)
├── NotFound           a CLI/portal lookup found nothing
└── WouldWait          a step asked not to wait (on the network) would have to: run it where
                       it may (an SMTP front's sender check on its event loop)
"""


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """The configuration cannot be used; the message names the key."""


class Rejected(MailgateError):
    """The message is refused for good. `code`/`status` are the SMTP reply parts."""

    code = 554
    status = "5.6.0"

    def __init__(self, reason: str, *, code: int | None = None, status: str | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def smtp_reply(self) -> str:
        return f"{self.code} {self.status} {self.reason}"


class TooLarge(Rejected):
    code = 552
    status = "5.3.4"


class TempFailure(MailgateError):
    """Try again later: the database or the disk is unavailable."""


class NotFound(MailgateError):
    """A ticket, account or quarantine item that does not exist."""


class WouldWait(MailgateError):
    """A step asked not to wait would have to (senderauth's cache_only: a DNS query due)."""
