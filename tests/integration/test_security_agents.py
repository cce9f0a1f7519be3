"""Issue 9, agents and trust: an agent's From acts as the agent only with the agent's own token
AND, when a trusted MTA stamps Authentication-Results, a DMARC (or aligned SPF/DKIM) pass for
that From; otherwise the mail is an internal note flagged "unverified sender". A strict From,
a receipt key a stranger cannot pre-claim, one ticket per message whatever our addresses.
Real SMTP into `serve`, real sink, real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailgate.services.quarantine import QuarantineService
from tests.support.conversation import (  # noqa: F401 (desk_fixture provides `desk`)
    AGENT,
    AGENT_NAME,
    CUSTOMER,
    Desk,
    Opened,
    addr,
    desk_fixture,
)
from tests.support.peers import Received

MTA = "mx.helpdesk.example"
JEAN = addr(CUSTOMER)
MALLORY = "mallory@evil.example"


@pytest.fixture
def config_extra() -> str:
    # The agent's own local part counts as a no-reply sender here, so that a mail of theirs
    # can be held (as a third-party code) and released.
    return f'[security]\nauthserv_id = "{MTA}"\nverification_senders = ["^alice$"]\n'


def stamped(msg: EmailMessage, dmarc: str, domain: str = "helpdesk.example") -> EmailMessage:
    """Our MTA's verdict, on top, as Postfix + OpenDMARC write it."""
    msg["Authentication-Results"] = (
        f"{MTA}; spf=none smtp.mailfrom={domain}; dkim=none; dmarc={dmarc} header.from={domain}"
    )
    return msg


def staffed(desk: Desk) -> tuple[Opened, Received]:
    desk.add_agent()
    opened = desk.open_ticket()
    return opened, desk.wait_mail("agent_notification", AGENT, ticket=opened.id)


def quarantine(desk: Desk) -> QuarantineService:
    return QuarantineService(desk.mg.app.ingestor)


def last_message(desk: Desk, ticket_id: int) -> dict:
    return desk.ticket(ticket_id)["messages"][-1]


def test_an_agent_with_token_and_dmarc_pass_answers_the_customer(desk: Desk) -> None:
    opened, notification = staffed(desk)
    reply = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "Redémarrez-la, svp.")
    desk.send(stamped(reply, "pass"))
    desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    stored = last_message(desk, opened.id)
    assert (stored["internal"], stored["unverified_sender"]) == (False, False)
    assert stored["sender_auth"] == "pass"


@pytest.mark.parametrize("verdict", ["fail", "none", "missing", "foreign-authserv"])
def test_the_agents_token_without_a_pass_is_only_a_flagged_note(desk: Desk, verdict: str) -> None:
    opened, notification = staffed(desk)
    text = "#status solved\n#cc add mallory@evil.example\n\nPayez la facture ci-jointe."
    reply = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", text)
    if verdict in ("fail", "none"):
        stamped(reply, verdict)
    elif verdict == "foreign-authserv":  # anyone can write the header; only our MTA's counts
        reply["Authentication-Results"] = "mx.evil.example; dmarc=pass header.from=helpdesk.example"
    desk.send(reply)

    ticket = desk.ticket(opened.id)
    stored = ticket["messages"][-1]
    assert (stored["role"], stored["internal"], stored["unverified_sender"]) == (
        "agent",
        True,
        True,
    )
    assert ticket["status"] == "new" and ticket["collaborators"] == []
    assert desk.outbox(opened.id, "agent_reply") == []
    # The genuine agent, verified, is obeyed afterwards.
    desk.send(stamped(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "#status open"), "pass"))
    assert desk.ticket(opened.id)["status"] == "open"


def test_a_leaked_agent_token_does_not_make_the_customer_an_agent(desk: Desk) -> None:
    """The agent Cc'd the customer on a reply, so the customer holds the agent's reply address:
    writing to it from their own address, or forging the agent's From, acts as nobody."""
    opened, notification = staffed(desk)
    agent_address = addr(str(notification.msg["Reply-To"]))
    as_customer = desk.mail(CUSTOMER, agent_address, "Re: x", "#status solved\nMerci !")
    desk.send(stamped(as_customer, "pass", "client.example"), [agent_address])
    forged = desk.mail(f"{AGENT_NAME} <{AGENT}>", agent_address, "Re: x", "#status closed\nok")
    desk.send(stamped(forged, "fail"), [agent_address])
    ticket = desk.ticket(opened.id)
    assert ticket["status"] == "new"
    assert desk.outbox(opened.id, "agent_reply") == []
    notes = [m for m in ticket["messages"] if m["role"] == "agent"]
    assert all(m["internal"] and m["unverified_sender"] for m in notes)


def test_a_forged_agent_mail_released_from_quarantine_is_still_a_note(desk: Desk) -> None:
    opened, notification = staffed(desk)
    # Held on its way in: it looks like a third-party sign-up code (from a no-reply sender).
    code = "Votre code de vérification : 482913"
    reply = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", code)
    desk.send(reply)
    held = quarantine(desk).list()
    assert len(held) == 1 and "verification" in held[0]["reason"]
    assert quarantine(desk).reprocess(held[0]["id"])["ticket_id"] == opened.id
    stored = last_message(desk, opened.id)
    assert (stored["internal"], stored["unverified_sender"]) == (True, True)
    assert desk.outbox(opened.id, "agent_reply") == []


@pytest.mark.parametrize(
    "from_value",
    [
        f"{AGENT} <{MALLORY}>",  # an unquoted address as display name: lenient parsers see two
        f"{AGENT}, {MALLORY}",  # two people
        f"<{AGENT}> <{MALLORY}>",
    ],
)
def test_an_ambiguous_from_is_nobodys_mail(desk: Desk, from_value: str) -> None:
    opened, notification = staffed(desk)
    reply = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "#status closed\nPayez.")
    del reply["From"]
    reply["From"] = from_value
    desk.send(stamped(reply, "pass"), [addr(str(notification.msg["Reply-To"]))])
    ticket = desk.ticket(opened.id)
    assert len(ticket["messages"]) == 1 and ticket["status"] == "new"
    held = quarantine(desk).list()
    assert len(held) == 1 and "ambiguous From" in held[0]["reason"]


def test_an_address_as_display_name_is_only_a_name(desk: Desk) -> None:
    desk.add_agent()
    msg = desk.mail(f'"{AGENT}" <{MALLORY}>', "support@example.com", "Facture", "Payez svp")
    desk.send(msg)
    (ticket,) = desk.tickets()
    assert ticket["requester"] == MALLORY
    with desk.mg.app.db.read() as session:
        account = desk.mg.app.accounts.find(session, MALLORY)
        assert account is not None and account.name == ""  # never shown as if it were the agent


def test_a_guessed_message_id_cannot_swallow_the_real_mail(desk: Desk) -> None:
    """A third party sends first with the Message-ID the customer's client will use: the
    customer's own mail is still ticketed (the key binds sender and content)."""
    guessed = "<20261201.guessable@client.example>"
    first = desk.mail(f"Mallory <{MALLORY}>", "support@example.com", "Bonjour", "spam spam")
    first.replace_header("Message-ID", guessed)
    desk.send(first)
    real = desk.mail(CUSTOMER, "support@example.com", "Imprimante en panne", "Elle ne marche plus")
    real.replace_header("Message-ID", guessed)
    desk.send(real)
    requesters = sorted(t["requester"] for t in desk.tickets())
    assert requesters == [JEAN, MALLORY]
    # The MTA retrying the very same mail is still a duplicate.
    desk.send(real)
    assert len(desk.tickets()) == 2


def test_one_message_to_several_of_our_addresses_is_one_ticket(desk: Desk) -> None:
    msg = desk.mail(CUSTOMER, "support@example.com, billing@example.com", "Facture", "Erreur")
    desk.send(msg, ["support@example.com", "billing@example.com", "support+anything@example.com"])
    (ticket,) = desk.tickets()
    assert ticket["category"] == "Billing"  # an address with a category decides
    # Delivered again one address at a time (LMTP, or two MX paths): still one ticket.
    desk.send(msg, ["billing@example.com"])
    desk.send(msg, ["support@example.com"])
    assert len(desk.tickets()) == 1
