"""Issue 3, threading, at the service level: which ticket an inbound mail belongs to, and why
(`matched_by`); the quoted history stripped from what is stored, the full text kept. The mail
goes through the one ingest path in process (tests/support/inprocess.py); the socket-level
round trips are in tests/integration/test_conversation.py."""

from __future__ import annotations

import json

import pytest

from tests.support.conversation import CUSTOMER, DATA, addr, msgid
from tests.support.inprocess import ServiceDesk

JEAN = addr(CUSTOMER)
PAUL = "Paul Martin <paul@autre.example>"
MALLORY = "Mallory <mallory@evil.example>"
SAMPLES = DATA / "conversation"


def test_reply_with_only_in_reply_to_to_the_plain_support_address(desk: ServiceDesk) -> None:
    opened = desk.open_ticket()
    other = desk.open_ticket(subject="Autre chose")  # a decoy: same customer, other ticket
    reply = desk.reply(opened.confirmation, CUSTOMER, "Toujours en panne.",
                       to="support@example.com")
    del reply["References"]
    reply.replace_header("Subject", "toujours en panne")  # no [#ID] tag to lean on
    desk.send(reply)

    messages = desk.ticket(opened.id)["messages"]
    assert [m["matched_by"] for m in messages] == ["new", "in-reply-to"]
    assert messages[1]["body_text"] == "Toujours en panne."
    assert len(desk.ticket(other.id)["messages"]) == 1
    assert len(desk.tickets()) == 2


@pytest.mark.parametrize("sample", ["outlook_fr_reply.eml", "gmail_fr_reply.eml"])
def test_french_replies_from_real_clients_are_stored_without_history(
    desk: ServiceDesk, sample: str
) -> None:
    expected = json.loads((SAMPLES / "expected.json").read_text())[sample]
    opened = desk.open_ticket()
    to = addr(str(opened.confirmation.msg["Reply-To"]))
    raw = (SAMPLES / sample).read_bytes()
    for placeholder, value in {
        b"@@TO@@": to.encode(),
        b"@@TOKEN@@": to.split("+")[1].split("@")[0].encode(),
        b"@@TICKET@@": str(opened.id).encode(),
        b"@@IN_REPLY_TO@@": msgid(opened.confirmation).encode(),
    }.items():
        raw = raw.replace(placeholder, value)
    desk.send(raw, rcpts=[to], mail_from=JEAN)

    messages = desk.ticket(opened.id)["messages"]
    assert len(messages) == 2
    stored = messages[1]
    assert stored["matched_by"] == "token"
    assert stored["body_text"] == expected["body_text"]
    for history in expected["history"]:
        assert history in stored["full_text"]
        assert history not in stored["body_text"]
    assert desk.ticket(opened.id)["status"] == "new"  # nobody answered yet: still new


def test_forged_or_foreign_token_is_a_new_mail(desk: ServiceDesk) -> None:
    opened = desk.open_ticket()
    token_address = addr(str(opened.confirmation.msg["Reply-To"]))
    local, domain = token_address.split("@")
    # One character of the MAC changed: forged.
    last = local[-1]
    forged = f"{local[:-1]}{'a' if last != 'a' else 'b'}@{domain}"
    desk.send(desk.mail(MALLORY, forged, "Re: Imprimante en panne", "Changez le RIB svp."))
    # The genuine token, but in someone else's hands (a forwarded mail): foreign.
    desk.send(desk.mail(MALLORY, token_address, "Re: Imprimante en panne", "Et l'IBAN aussi."))
    # And the real customer with a forged one: not threaded either.
    desk.send(desk.mail(CUSTOMER, forged, "Autre souci", "Le scanner aussi."))

    assert len(desk.ticket(opened.id)["messages"]) == 1
    tickets = {t["id"]: t for t in desk.tickets()}
    assert len(tickets) == 4
    new = [t for t in tickets.values() if t["id"] != opened.id]
    assert sorted(t["requester"] for t in new) == sorted(
        [addr(MALLORY), addr(MALLORY), JEAN]
    )
    for t in new:
        assert [m["matched_by"] for m in desk.ticket(t["id"])["messages"]] == ["new"]
    # Mallory hears about her own tickets only (rows are committed when ingest returns).
    assert [o for o in desk.outbox(opened.id) if o["to"] == addr(MALLORY)] == []


def test_guessed_subject_tag_from_a_stranger_opens_their_own_ticket(desk: ServiceDesk) -> None:
    jean = desk.open_ticket()
    paul = desk.open_ticket(sender=PAUL, subject="Facture")  # a customer, not Jean's
    guessed = desk.mail(
        PAUL,
        "support@example.com",
        f"Re: [#{jean.id}] Imprimante en panne",
        "J'ai la même panne, voici mes coordonnées bancaires.",
        # Even a Message-ID of Jean's thread (leaked, or guessed) does not let him in.
        {"In-Reply-To": f"<{jean.message_id}>", "References": f"<{jean.message_id}>"},
    )
    desk.send(guessed)
    desk.send(desk.mail(MALLORY, "support@example.com", f"[#{jean.id}]", "Bonjour"))

    assert len(desk.ticket(jean.id)["messages"]) == 1
    tickets = desk.tickets()
    assert len(tickets) == 4
    by_requester = sorted((t["requester"], t["id"]) for t in tickets if t["id"] != jean.id)
    assert [r for r, _ in by_requester] == sorted([addr(PAUL), addr(PAUL), addr(MALLORY)])
    new_paul = max(i for r, i in by_requester if r == addr(PAUL))
    assert new_paul != paul.id
    confirmation = desk.wait_mail("confirmation", addr(PAUL), ticket=new_paul)
    assert f"#{new_paul}" in confirmation.text()


def test_commands_from_a_customer_are_plain_text(desk: ServiceDesk) -> None:
    opened = desk.open_ticket()
    desk.send(desk.reply(opened.confirmation, CUSTOMER, "#status closed\n#note\nÇa remarche ?"))
    ticket = desk.ticket(opened.id)
    assert ticket["status"] == "new"
    assert ticket["messages"][1]["internal"] is False
    assert ticket["messages"][1]["body_text"].startswith("#status closed\n#note")


def test_inbound_x_mailgate_headers_are_not_trusted(desk: ServiceDesk) -> None:
    """A stranger writing our headers gets treated as a stranger."""
    opened = desk.open_ticket()
    forged = desk.mail(
        MALLORY,
        "support@example.com",
        "Réponse",
        "Votre ticket est clos.",
        {"X-Mailgate-Ticket": str(opened.id), "X-Mailgate-Kind": "agent_reply",
         "X-Mailgate-Agent": "alice@helpdesk.example"},
    )
    desk.send(forged)
    assert len(desk.ticket(opened.id)["messages"]) == 1
    assert len(desk.tickets()) == 2
