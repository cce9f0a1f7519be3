"""Issue 3, agents over real SMTP, end to end: an agent answers from a mail client by replying
to the notification; their reply reaches the customer (the sink) from the support address, in
the thread. Commands, statuses, assignment and spoofing are tested in process, in
tests/service/test_agents.py."""

from __future__ import annotations

from mailgate.core.quotes import strip_quotes
from tests.support.conversation import (  # noqa: F401 (desk_fixture provides `desk`)
    AGENT,
    AGENT_NAME,
    CUSTOMER,
    Desk,
    Opened,
    addr,
    desk_fixture,
    msgid,
)
from tests.support.peers import Received

JEAN = addr(CUSTOMER)


def staffed_ticket(desk: Desk, cli: bool = False) -> tuple[Opened, Received]:
    """An agent (made by `mailgate agent add` if cli), a customer's ticket, the notification."""
    desk.add_agent(cli=cli)
    opened = desk.open_ticket()
    return opened, desk.wait_mail("agent_notification", AGENT, ticket=opened.id)


def agent_mail(desk: Desk, notification: Received, text: str) -> None:
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", text))


def test_agent_reply_reaches_the_customer_in_the_thread(desk: Desk) -> None:
    opened, notification = staffed_ticket(desk, cli=True)
    # The notification: the customer's text, a link, a Reply-To bound to this agent.
    assert "mon imprimante ne marche plus" in notification.text()
    assert f"/tickets/{opened.id}" in notification.text()
    agent_token = addr(str(notification.msg["Reply-To"]))
    assert agent_token != addr(str(opened.confirmation.msg["Reply-To"]))

    answer = "Bonjour Jean,\n\nRedémarrez l'imprimante en maintenant le bouton 10 secondes."
    agent_mail(desk, notification, answer)

    reply = desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    sender = reply.msg["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (AGENT_NAME, "support@example.com")
    assert AGENT not in str(reply.msg["From"]) + str(reply.msg["Reply-To"])
    assert addr(str(reply.msg["Reply-To"])) == addr(str(opened.confirmation.msg["Reply-To"]))
    # In the customer's thread: answers their mail, references the first one.
    assert msgid(reply, "In-Reply-To") == opened.message_id
    assert f"<{opened.message_id}>" in str(reply.msg["References"]).split()
    assert f"[#{opened.id}]" in str(reply.msg["Subject"])
    # The agent's quoted history is not passed on; a human reply is not Auto-Submitted.
    text = reply.text()
    assert "Redémarrez l'imprimante en maintenant le bouton 10 secondes." in text
    assert "a écrit" not in text and "> " not in text
    assert "mon imprimante ne marche plus" not in text
    assert reply.msg["Auto-Submitted"] is None

    ticket = desk.ticket(opened.id)
    assert ticket["status"] == "pending"
    stored = ticket["messages"][1]
    assert (stored["role"], stored["internal"], stored["matched_by"]) == ("agent", False, "token")
    assert stored["author"] == AGENT
    assert stored["body_text"] == strip_quotes(answer)
    assert "a écrit" in stored["full_text"]

    # The customer answers the agent's reply: open again, and the agent hears of it.
    desk.send(desk.reply(reply, CUSTOMER, "Ça ne change rien."))
    assert desk.ticket(opened.id)["status"] == "open"
    again = desk.wait_mail("agent_notification", AGENT, ticket=opened.id, count=2)
    assert "Ça ne change rien." in again.text()
    assert msgid(again, "In-Reply-To") != msgid(notification, "In-Reply-To")
