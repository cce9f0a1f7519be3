"""An outgoing mail -> EmailMessage carrying every header CONTRACT.md promises.

Headers are set through `email.policy.SMTP`, which refuses CR/LF in a value, and addresses go
through `headerregistry.Address`, which refuses anything that is not one addr-spec: a display
name or subject taken from a customer can never add a header or a recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

LOOP_HEADER = "X-Mailgate-Loop"
AUTOMATIC_KINDS = frozenset(
    {
        "confirmation",
        "activation",
        "password_reset",
        "agent_notification",
        "auto_resolved",
        "command_error",
        "follow_up",
        "limit_reached",
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Outgoing:
    kind: str
    to_addr: str
    subject: str
    text: str
    from_addr: str
    from_name: str
    message_id: str  # without <>
    date: datetime
    hostname: str
    to_name: str = ""
    html: str | None = None
    ticket_id: int | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: str | None = "auto-generated"  # None for a human's reply
    locale: str = "fr"


def one_line(value: str, limit: int = 200) -> str:
    """A value fit for a header: control characters (CR, LF ...) become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def address(addr_spec: str, display_name: str = "") -> Address:
    local, sep, domain = addr_spec.partition("@")
    if not sep or not local or not domain or _CONTROL.search(addr_spec):
        raise ValueError(f"not an address: {addr_spec!r}")
    return Address(display_name=one_line(display_name, 100), username=local, domain=domain)


def compose(out: Outgoing) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = address(out.from_addr, out.from_name)
    msg["To"] = address(out.to_addr, out.to_name)
    msg["Subject"] = one_line(out.subject, 250)
    msg["Date"] = format_datetime(out.date)
    msg["Message-ID"] = f"<{out.message_id}>"
    if out.reply_to:
        msg["Reply-To"] = address(out.reply_to, out.from_name)
    if out.in_reply_to:
        msg["In-Reply-To"] = f"<{out.in_reply_to}>"
    refs = list(dict.fromkeys(r for r in out.references if r))
    if out.in_reply_to and out.in_reply_to not in refs:
        refs.append(out.in_reply_to)
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs[-20:])
    msg["X-Mailgate-Kind"] = out.kind
    if out.ticket_id is not None:
        msg["X-Mailgate-Ticket"] = str(out.ticket_id)
    msg[LOOP_HEADER] = out.hostname
    if out.auto_submitted:
        msg["Auto-Submitted"] = out.auto_submitted
        # Ask Exchange and friends not to answer our automatic mail with theirs.
        msg["X-Auto-Response-Suppress"] = "All"
    msg["MIME-Version"] = "1.0"
    msg.set_content(out.text, charset="utf-8", cte="quoted-printable")
    if out.html:
        msg.add_alternative(out.html, subtype="html", charset="utf-8", cte="quoted-printable")
    # After set_content, which drops Content-* headers set before it.
    msg["Content-Language"] = out.locale
    return msg
