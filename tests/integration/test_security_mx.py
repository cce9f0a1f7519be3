"""Issue 9, mailgate as the MX itself (no MTA in front to stamp Authentication-Results): it
checks SPF, DKIM and DMARC on its own, against a real DNS server on loopback, and records the
verdict on the message. An agent's DKIM-signed reply acts; a forged one is a flagged note."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import dkim
import pytest

from tests.conftest import send
from tests.support.conversation import (  # noqa: F401 (desk_fixture provides `desk`)
    AGENT,
    AGENT_NAME,
    CUSTOMER,
    Desk,
    addr,
    desk_fixture,
)
from tests.support.dnsserver import (  # noqa: F401 (dns_server_fixture provides `dns_server`)
    LoopbackDns,
    dkim_key,
    dns_server_fixture,
)

DOMAIN = AGENT.split("@")[1]
JEAN = addr(CUSTOMER)


@pytest.fixture(scope="module")
def private_key() -> tuple[bytes, str]:
    return dkim_key()


@pytest.fixture
def config_extra(dns_server: LoopbackDns, private_key: tuple[bytes, str]) -> str:
    # The agents' domain publishes what a real one does: DKIM key, strict SPF, DMARC reject.
    dns_server.txt(f"mg._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={private_key[1]}")
    dns_server.txt(DOMAIN, "v=spf1 ip4:192.0.2.1 -all")
    dns_server.txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject")
    return (
        f'[security]\nverify_sender = "auto"\ndns_resolver = "127.0.0.1:{dns_server.port}"\n'
        "dns_timeout_seconds = 5\n"
    )


def as_sent(msg: EmailMessage, pem: bytes | None) -> bytes:
    raw = msg.as_bytes(policy=policy.SMTP)
    if pem is None:
        return raw
    return dkim.sign(raw, b"mg", DOMAIN.encode(), pem, include_headers=[b"from", b"subject"]) + raw


@pytest.mark.parametrize("signed", [True, False])
def test_the_mx_checks_the_agents_domain_itself(
    desk: Desk, private_key: tuple[bytes, str], signed: bool
) -> None:
    desk.add_agent()
    opened = desk.open_ticket()
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    reply = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "#status pending\nRedémarrez-la.")
    reply_to = addr(str(notification.msg["Reply-To"]))
    send(desk.mg.smtp_port, as_sent(reply, private_key[0] if signed else None), [reply_to], AGENT)

    ticket = desk.ticket(opened.id)
    stored = ticket["messages"][-1]
    first = ticket["messages"][0]
    assert first["sender_auth"] == "none"  # client.example publishes nothing
    if signed:
        assert (stored["sender_auth"], stored["internal"], stored["unverified_sender"]) == (
            "pass",
            False,
            False,
        )
        desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
        assert ticket["status"] == "pending"
    else:  # 127.0.0.1 is not in the SPF record, no signature, p=reject: a forgery
        assert (stored["sender_auth"], stored["internal"], stored["unverified_sender"]) == (
            "fail",
            True,
            True,
        )
        assert ticket["status"] == "new"
        assert desk.outbox(opened.id, "agent_reply") == []
