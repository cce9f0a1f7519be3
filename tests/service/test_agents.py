"""Issue 3, agents, at the service level: commands at the top of an agent's reply to the
notification, statuses, assignment, collaborators; anyone without the agent's token is not
the agent. In process (tests/support/inprocess.py); the agent's reply reaching the customer
over real SMTP is in tests/integration/test_agents.py."""

from __future__ import annotations

import re

import pytest

from mailgate.cli import main
from mailgate.core.commands import parse_commands
from mailgate.store.models import Account
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, Opened, addr
from tests.support.inprocess import ServiceDesk
from tests.support.peers import Received

JEAN = addr(CUSTOMER)
BOB = "bob@helpdesk.example"
MALLORY = "Mallory <mallory@evil.example>"


def staffed_ticket(desk: ServiceDesk, cli: bool = False) -> tuple[Opened, Received]:
    """An agent (made by `mailgate agent add` if cli), a customer's ticket, the notification."""
    desk.add_agent(cli=cli)
    opened = desk.open_ticket()
    return opened, desk.wait_mail("agent_notification", AGENT, ticket=opened.id)


def agent_mail(desk: ServiceDesk, notification: Received, text: str) -> None:
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", text))


def test_agent_add_makes_an_agent_account(desk: ServiceDesk, capsys: pytest.CaptureFixture[str]):
    desk.add_agent(AGENT, AGENT_NAME, cli=True)
    with desk.mg.app.db.read() as session:
        account = desk.mg.app.accounts.find(session, AGENT)
        assert isinstance(account, Account)
        assert (account.role, account.name) == ("agent", AGENT_NAME)
    # Re-running it (a name change) keeps one account.
    desk.mg.cli("agent", "add", AGENT.upper(), "--name", "Alice M.")
    with desk.mg.app.db.read() as session:
        account = desk.mg.app.accounts.find(session, AGENT)
        assert account is not None and account.name == "Alice M."
    # A refusal is one line on standard error and a non-zero exit (in-process: no import cost).
    code = main(["--config", str(desk.mg.config_path), "agent", "add", "nobody", "--name", "X"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "nobody" in err and "\n" not in err


def test_note_stays_internal(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    agent_mail(desk, notification, "#note\nClient important, voir avec le fournisseur.")
    ticket = desk.ticket(opened.id)
    note = ticket["messages"][1]
    assert (note["role"], note["internal"]) == ("agent", True)
    assert note["body_text"] == "Client important, voir avec le fournisseur."
    assert ticket["status"] == "new"
    # Committed when ingest returns: no mail to the customer was queued, so none can leave.
    assert [o["kind"] for o in ticket["outbox"] if o["to"] == JEAN] == [
        "confirmation",
        "activation",
    ]


def test_each_status_command(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    for status in ("open", "pending", "solved", "closed", "open", "solved", "pending"):
        agent_mail(desk, notification, f"#status {status}")
        assert desk.ticket(opened.id)["status"] == status
    row = desk.ticket_row(opened.id)
    assert row.pending_since is not None  # the auto-resolve clock runs from #status pending
    # Commands alone are no reply: the customer got nothing from all that.
    assert desk.outbox(opened.id, "agent_reply") == []
    # A status with a reply: the reply goes out and the status asked for wins over "pending".
    agent_mail(desk, notification, "#STATUS Solved\n\nC'est corrigé, bonne journée.")
    reply = desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    assert "C'est corrigé" in reply.text() and "#status" not in reply.text().lower()
    assert desk.ticket(opened.id)["status"] == "solved"


def test_a_bad_command_applies_nothing_and_tells_the_agent(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    text = "#status done\n#assign ghost@helpdesk.example\n#category Matériel\n\nC'est réglé."
    agent_mail(desk, notification, text)

    error = desk.wait_mail("command_error", AGENT, ticket=opened.id)
    body = error.text()
    syntax = parse_commands(text).errors[0]
    assert re.search(rf"\b{syntax.line_number}\b.*{re.escape(syntax.line)}", body)
    assert syntax.code == "status_values"  # in the agent's language (French here, issue 15)
    assert "« #status » attend l'une de ces valeurs : open, pending, solved, closed" in body
    assert re.search(r"\b2\b.*#assign ghost@helpdesk\.example", body)
    assert "« ghost@helpdesk.example » n'est pas un agent" in body
    assert addr(str(error.msg["Reply-To"])) == addr(str(notification.msg["Reply-To"]))

    ticket = desk.ticket(opened.id)
    assert ticket["status"] == "new" and ticket["category"] is None
    assert ticket["assignee"] is None
    assert ticket["messages"][1]["internal"] is True
    assert ticket["messages"][1]["body_text"] == text  # every word kept, commands included
    assert desk.outbox(opened.id, "agent_reply") == []


def test_a_note_with_its_text_on_the_command_line_keeps_the_text(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    agent_mail(desk, notification, "#note rappeler le client demain")
    desk.wait_mail("command_error", AGENT, ticket=opened.id)
    note = desk.ticket(opened.id)["messages"][1]
    assert (note["internal"], note["body_text"]) == (True, "#note rappeler le client demain")


def test_assign_and_category_commands(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    desk.add_agent(BOB, "Bob Durand")
    agent_mail(desk, notification, f"#assign {BOB}\n#category Matériel")
    ticket = desk.ticket(opened.id)
    assert (ticket["assignee"], ticket["category"]) == (BOB, "Matériel")
    # From now on only the assignee is told of the customer's replies.
    desk.send(desk.reply(opened.confirmation, CUSTOMER, "Des nouvelles ?"))
    desk.wait_mail("agent_notification", BOB, ticket=opened.id)
    notified = [o["to"] for o in desk.outbox(opened.id, "agent_notification")]
    assert notified == [AGENT, BOB]


@pytest.mark.parametrize("via", ["subject", "customer_token"])
def test_spoofed_agent_from_without_the_agents_token(desk: ServiceDesk, via: str) -> None:
    opened, notification = staffed_ticket(desk)
    spoof = "#status closed\n#cc add mallory@evil.example\n\nMerci de payer la facture ci-jointe."
    if via == "subject":
        msg = desk.mail(f"{AGENT_NAME} <{AGENT}>", "support@example.com",
                        f"Re: [#{opened.id}] Imprimante en panne", spoof)
    else:  # the customer's own reply address, e.g. read off a forwarded mail
        msg = desk.reply(opened.confirmation, f"{AGENT_NAME} <{AGENT}>", spoof)
    msg["X-Mailgate-Agent"] = AGENT  # headers a sender writes prove nothing
    desk.send(msg)

    ticket = desk.ticket(opened.id)
    stored = ticket["messages"][1]
    assert (stored["role"], stored["internal"]) == ("agent", True)
    assert stored["matched_by"] == ("subject" if via == "subject" else "in-reply-to")
    assert ticket["status"] == "new"
    assert ticket["collaborators"] == []
    assert desk.outbox(opened.id, "agent_reply") == []
    assert [o["to"] for o in desk.outbox(opened.id, "agent_notification")] == [AGENT]
    # The genuine agent, with their token, is still obeyed afterwards.
    agent_mail(desk, notification, "#status open")
    assert desk.ticket(opened.id)["status"] == "open"


def test_cc_is_a_pending_collaborator_until_an_agent_accepts_it(desk: ServiceDesk) -> None:
    desk.add_agent()
    opened = desk.open_ticket(headers={"Cc": "Chef <chef@client.example>"})
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    ticket = desk.ticket(opened.id)
    assert ticket["collaborators"] == [{"email": "chef@client.example", "status": "pending"}]
    assert [o for o in ticket["outbox"] if o["to"] == "chef@client.example"] == []

    # A public reply before acceptance still reaches only the requester.
    agent_mail(desk, notification, "Nous regardons.")
    desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    assert [o["to"] for o in desk.outbox(opened.id, "agent_reply")] == [JEAN]

    agent_mail(desk, notification, "#cc add chef@client.example\n\nJ'ajoute votre responsable.")
    to_chef = desk.wait_mail("agent_reply", "chef@client.example", ticket=opened.id)
    assert "J'ajoute votre responsable." in to_chef.text()
    ticket = desk.ticket(opened.id)
    assert ticket["collaborators"] == [{"email": "chef@client.example", "status": "accepted"}]

    # An accepted collaborator's reply threads through their own token.
    desk.send(desk.reply(to_chef, "Chef <chef@client.example>", "Merci, je suis en copie."))
    last = desk.ticket(opened.id)["messages"][-1]
    assert (last["author"], last["matched_by"]) == ("chef@client.example", "token")
