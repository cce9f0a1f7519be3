"""The customer's tickets in the portal, over real HTTP: "My activities" with statuses in the
customer's words, one ticket, answering with attachments (the same path as a mail reply: the
agent is notified by mail), the new-ticket form of the Lengow guide, and deleting."""

from __future__ import annotations

import html
import json
import re

import pytest
from sqlmodel import select

from mailgate.clock import FixedClock
from mailgate.store.models import Attachment, Message, Ticket, TicketEvent
from tests.support.conversation import AGENT, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import (
    Web,
    activation_link,
    agent_says,
    customer_with_ticket,
    hidden_fields,
    set_password,
)

pytest_plugins = ["tests.support.portal"]

JEAN = addr(CUSTOMER)
ROW = re.compile(
    r'<a href="/tickets/(\d+)">([^<]*)</a></td>\s*<td><span class="status status-(\w+)">([^<]*)<'
)


@pytest.fixture
def config_extra() -> str:
    return (
        'customer_id_label = "Id client Lengow"\n'
        'customer_id_pattern = "^[0-9]{4,8}$"\n'
        'problem_categories = ["Flux produits", "Commandes"]\n'
        'broadcasters = ["Amazon", "Cdiscount"]\n'
    )


def rows(page: str) -> list[tuple[int, str, str, str]]:
    return [(int(i), subject, status, label) for i, subject, status, label in ROW.findall(page)]


def stored(mg: Mailgate, ticket_id: int) -> Ticket:
    with mg.app.db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        session.expunge(ticket)
        return ticket


def test_my_activities_in_the_customers_words(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink, portal_clock: FixedClock
):
    helpdesk.add_agent()
    ids = {}
    for subject in ("Nouveau", "Ouvert", "Attente", "Résolu", "Clos"):
        ids[subject] = helpdesk.open_ticket(subject=f"Sujet {subject}").id
        portal_clock.advance(hours=1)  # distinct last exchanges; stays under the hourly mail cap
    agent_says(helpdesk, ids["Ouvert"], "#status open")
    agent_says(helpdesk, ids["Attente"], "Pouvez-vous nous envoyer une photo ?")
    agent_says(helpdesk, ids["Résolu"], "#status solved")
    agent_says(helpdesk, ids["Clos"], "#status closed")
    assert set_password(web, activation_link(sink, JEAN)).status_code == 303

    page = web.get("/tickets").text
    assert rows(page) == [
        (ids["Attente"], "Sujet Attente", "pending", "En attente de votre réponse"),
        (ids["Clos"], "Sujet Clos", "closed", "Clos"),
        (ids["Résolu"], "Sujet Résolu", "solved", "Résolu"),
        (ids["Ouvert"], "Sujet Ouvert", "open", "Ouvert"),
        (ids["Nouveau"], "Sujet Nouveau", "new", "Nouveau"),
    ]  # latest exchange first: the agent's reply is the newest exchange
    assert "Dernier échange" in page
    pending = web.get("/tickets?status=pending").text
    assert [r[0] for r in rows(pending)] == [ids["Attente"]]
    assert rows(web.get("/tickets?status=bogus").text) == rows(page)


def test_statuses_in_english_for_an_english_customer(helpdesk: Desk, web: Web):
    helpdesk.add_agent()
    ticket = customer_with_ticket(
        helpdesk,
        web,
        sender="Ann Smith <ann@client.example>",
        subject="Printer",
        headers={"Accept-Language": "en-GB"},
    )
    agent_says(helpdesk, ticket, "Could you send us a photo?")
    page = web.get("/tickets").text
    assert rows(page) == [(ticket, "Printer", "pending", "Awaiting your reply")]
    for label in ("New", "Open", "Awaiting your reply", "Solved", "Closed", "Last exchange"):
        assert label in page


def test_one_ticket_shows_the_public_conversation(helpdesk: Desk, web: Web):
    helpdesk.add_agent()
    ticket = customer_with_ticket(helpdesk, web)
    agent_says(helpdesk, ticket, "Bonjour,\navez-vous vérifié le câble ?")
    page = web.get(f"/tickets/{ticket}").text
    assert "Imprimante en panne" in page
    assert "mon imprimante ne marche plus." in page
    assert "avez-vous vérifié le câble ?" in page
    assert "Alice Martin" in page
    assert '<span class="status status-pending">En attente de votre réponse</span>' in page
    assert page.index("mon imprimante ne marche plus.") < page.index("vérifié le câble")


def test_reply_with_attachment_takes_the_mail_path_and_notifies_the_agent(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    helpdesk.add_agent()
    ticket = customer_with_ticket(helpdesk, web)
    agent_says(helpdesk, ticket, "Avez-vous une photo du voyant ?")
    assert stored(portal, ticket).status == "pending"
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    form = hidden_fields(web.get(f"/tickets/{ticket}").text)
    sent = web.post(
        f"/tickets/{ticket}/reply",
        data={**form, "body": "Voici la photo du voyant."},
        files=[("attachments", ("voyant.png", photo, "image/png"))],
    )
    assert sent.status_code == 303
    assert sent.headers["location"] == f"{web.base_url}/tickets/{ticket}#latest"
    # The same form sent twice (a double click) is one message.
    again = web.post(f"/tickets/{ticket}/reply", data={**form, "body": "Voici la photo du voyant."})
    assert again.status_code == 303

    notified = helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket, count=2)
    assert "Voici la photo du voyant." in notified.text()
    assert notified.msg["X-Mailgate-Ticket"] == str(ticket)

    shown = json.loads(portal.cli("ticket", "show", str(ticket), "--json").stdout)
    replies = [m for m in shown["messages"] if m["channel"] == "portal"]
    assert len(replies) == 1
    assert replies[0]["role"] == "customer" and replies[0]["author"] == JEAN
    assert replies[0]["body_text"] == "Voici la photo du voyant."
    assert [a["filename"] for a in replies[0]["attachments"]] == ["voyant.png"]
    assert shown["status"] == "open"  # the customer answered: back to the agents

    page = web.get(f"/tickets/{ticket}").text
    assert "Voici la photo du voyant." in page
    with portal.app.db.read() as session:
        (att_id,) = session.exec(
            select(Attachment.id).join(Message).where(Message.channel == "portal")
        ).all()
    download = web.get(f"/tickets/{ticket}/attachments/{att_id}/voyant.png")
    assert download.status_code == 200 and download.content == photo


def test_empty_reply_is_refused(portal: Mailgate, helpdesk: Desk, web: Web):
    ticket = customer_with_ticket(helpdesk, web)
    refused = web.submit(f"/tickets/{ticket}", {"body": "   "}, action=f"/tickets/{ticket}/reply")
    assert refused.status_code == 400
    assert "Écrivez votre message." in refused.text
    assert (
        len(json.loads(portal.cli("ticket", "show", str(ticket), "--json").stdout)["messages"]) == 1
    )


def test_reply_to_a_closed_ticket_opens_a_follow_up(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    helpdesk.add_agent()
    ticket = customer_with_ticket(helpdesk, web)
    agent_says(helpdesk, ticket, "#status closed")
    page = web.get(f"/tickets/{ticket}").text
    assert "une nouvelle demande sera ouverte" in page
    sent = web.submit(
        f"/tickets/{ticket}", {"body": "Le problème est revenu."}, action=f"/tickets/{ticket}/reply"
    )
    assert sent.status_code == 303
    follow_up = int(re.search(r"/tickets/(\d+)#latest", sent.headers["location"]).group(1))
    assert follow_up != ticket
    assert stored(portal, follow_up).follow_up_of_id == ticket
    mail = helpdesk.wait_mail("follow_up", JEAN, ticket=follow_up)
    assert mail.msg["X-Mailgate-Kind"] == "follow_up"
    assert "suite de la demande" in web.get(f"/tickets/{follow_up}").text


def test_new_ticket_form_follows_the_configuration(helpdesk: Desk, web: Web):
    customer_with_ticket(helpdesk, web)
    page = web.get("/tickets/new").text
    assert '<label for="customer_ref">Id client Lengow</label>' in page
    for choice in ("Flux produits", "Commandes", "Autre", "Amazon", "Cdiscount"):
        assert f">{choice}</option>" in page
    assert 'enctype="multipart/form-data"' in page and 'name="attachments"' in page


def test_the_words_searched_first_start_the_subject(helpdesk: Desk, web: Web):
    customer_with_ticket(helpdesk, web)
    page = web.get("/tickets/new", params={"subject": 'mot de  passe "<b>\r\nperdu'}).text
    assert 'name="subject" value="mot de passe &#34;&lt;b&gt; perdu"' in page
    assert 'name="subject" value=""' in web.get("/tickets/new").text


def test_new_ticket_validation(portal: Mailgate, helpdesk: Desk, web: Web):
    customer_with_ticket(helpdesk, web)
    bad = web.submit(
        "/tickets/new",
        {
            "customer_id": "ABC",
            "subject": "",
            "description": "x",
            "problem": "Piratage",
            "broadcaster": "Inconnu",
        },
    )
    assert bad.status_code == 400
    for message in (
        "Cet identifiant n'a pas le bon format.",
        "Indiquez le sujet",
        "Choisissez une valeur de la liste.",
        "Choisissez un diffuseur de la liste.",
    ):
        assert message in html.unescape(bad.text)
    assert 'value="ABC"' in bad.text  # what was typed is kept
    missing = web.submit(
        "/tickets/new", {"customer_id": "", "subject": "s", "description": "", "problem": ""}
    )
    assert missing.status_code == 400
    assert "Ce champ est obligatoire." in missing.text
    assert "Décrivez votre demande." in missing.text
    assert len(helpdesk.tickets()) == 1


def test_new_ticket_is_confirmed_by_mail_and_notifies_agents(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    helpdesk.add_agent()
    customer_with_ticket(helpdesk, web)
    done = web.submit(
        "/tickets/new",
        {
            "customer_id": "123456",
            "subject": "Flux Amazon en erreur",
            "description": "Le flux 42 est rejeté depuis ce matin.",
            "problem": "Flux produits",
            "broadcaster": "Amazon",
        },
        files=[
            ("attachments", ("erreur.txt", b"ERROR 500 at line 3", "text/plain")),
            ("attachments", ("", b"", "application/octet-stream")),
        ],  # "no file" part
    )
    assert done.status_code == 303
    created = int(re.search(r"created=(\d+)", done.headers["location"]).group(1))
    listing = web.get(done.headers["location"].removeprefix(web.base_url)).text
    assert f"Votre demande n°{created} a bien été envoyée" in listing
    assert rows(listing)[0][:3] == (created, "Flux Amazon en erreur", "new")

    ticket = stored(portal, created)
    assert (ticket.customer_ref, ticket.problem, ticket.broadcaster) == (
        "123456",
        "Flux produits",
        "Amazon",
    )
    assert ticket.channel == "portal"
    confirmation = helpdesk.wait_mail("confirmation", JEAN, ticket=created)
    assert "Flux Amazon en erreur" in confirmation.text()
    assert confirmation.msg["Reply-To"].startswith("Example Support <support+")
    notification = helpdesk.wait_mail("agent_notification", AGENT, ticket=created)
    assert "Le flux 42 est rejeté" in notification.text()
    shown = json.loads(portal.cli("ticket", "show", str(created), "--json").stdout)
    assert [a["filename"] for a in shown["messages"][0]["attachments"]] == ["erreur.txt"]

    other = web.submit(
        "/tickets/new",
        {"customer_id": "1234", "subject": "Autre souci", "description": "…", "problem": "Other"},
    )
    assert other.status_code == 303
    other_id = int(re.search(r"created=(\d+)", other.headers["location"]).group(1))
    assert stored(portal, other_id).broadcaster is None  # optional, left empty
    assert "<dd>Autre</dd>" in web.get(f"/tickets/{other_id}").text


def test_delete_after_confirmation_hides_it_from_the_customer_only(
    portal: Mailgate, helpdesk: Desk, web: Web
):
    ticket = customer_with_ticket(helpdesk, web)
    confirm = web.get(f"/tickets/{ticket}/delete")
    assert "Supprimer la demande n°" in confirm.text
    done = web.submit(f"/tickets/{ticket}/delete", {})
    assert done.status_code == 303
    assert done.headers["location"] == f"{web.base_url}/tickets?deleted={ticket}"
    assert rows(web.get("/tickets").text) == []
    assert web.get(f"/tickets/{ticket}").status_code == 404
    assert web.get(f"/tickets/{ticket}/delete").status_code == 404

    with portal.app.db.read() as session:
        events = session.exec(
            select(TicketEvent).where(
                TicketEvent.ticket_id == ticket, TicketEvent.kind == "customer_deleted"
            )
        ).all()
        assert [e.actor_id for e in events] == [stored(portal, ticket).requester_id]
    assert stored(portal, ticket).customer_deleted_at is not None
    # Agents keep it.
    listed = json.loads(portal.cli("ticket", "list", "--json").stdout)
    assert [t["id"] for t in listed] == [ticket]
