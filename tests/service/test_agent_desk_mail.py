"""Issue 12 by mail, at the service level: the agent's notification carries what they need to
answer (who, verified or not, the form's fields, the text, the customer's files attached up to
a limit and linked beyond it); the agent's files reach the customer; a public reply assigns an
unassigned ticket; a follow-up keeps the assignee and category; a customer's mail on a ticket
they deleted brings it back and says so."""

from __future__ import annotations

import dataclasses
from email.message import EmailMessage

from sqlmodel import select

from mailgate.core.tokens import FILE
from mailgate.store.models import Attachment, Ticket
from tests.service.test_agents import agent_mail, staffed_ticket
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, addr
from tests.support.inprocess import ServiceDesk
from tests.support.peers import Received

JEAN = addr(CUSTOMER)
SMALL = b"%PDF-1.4 small invoice\n" * 40  # ~1 KB
BIG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 60  # ~15 KB


def _with_files(msg: EmailMessage, *files: tuple[str, str, bytes]) -> EmailMessage:
    for name, ctype, payload in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _files(mail: Received) -> dict[str, bytes]:
    return {
        str(part.get_filename()): part.get_content()  # type: ignore[misc]
        for part in mail.msg.iter_attachments()
    }


def _limit(desk: ServiceDesk, total: int) -> None:
    mailer = desk.mg.app.mailer
    mailer.settings = dataclasses.replace(mailer.settings, notification_attachment_bytes=total)


def test_the_notification_carries_sender_fields_text_and_files(desk: ServiceDesk) -> None:
    desk.add_agent()
    _limit(desk, 5000)  # the small file rides along, the big one is a link
    msg = desk.mail(CUSTOMER, "support@example.com", "Facture", "Voici ma facture.\n")
    desk.send(_with_files(msg, ("facture.pdf", "application/pdf", SMALL),
                          ("écran.png", "image/png", BIG)))  # fmt: skip
    note = desk.wait_mail("agent_notification", AGENT)
    text = note.text()
    assert "Jean Dupont <jean@client.example>" in text or JEAN in text
    assert "Expéditeur non vérifié" in text  # sender checks are off in tests: said so
    assert "Voici ma facture." in text
    assert _files(note) == {"facture.pdf": SMALL}  # attached, byte for byte
    assert "facture.pdf" in text and "en pièce jointe" in text
    link = next(line for line in text.splitlines() if "écran.png" in line).split(" : ")[-1]
    assert link.startswith("http://127.0.0.1:8025/files/")
    # The link is signed for that file: it names it, and only it.
    token = link.rsplit("/", 1)[1]
    with desk.mg.app.db.read() as session:
        big = session.exec(select(Attachment).where(Attachment.filename == "écran.png")).one()
    assert desk.mg.app.links.read(FILE, token) == (big.id, big.sha256[:16])
    assert desk.mg.app.links.read(FILE, token[:-2] + "xx") is None


def test_the_form_fields_reach_the_agent(desk: ServiceDesk) -> None:
    opened, _ = staffed_ticket(desk)
    with desk.mg.app.db.write() as session:
        ticket = session.get(Ticket, opened.id)
        assert ticket is not None
        ticket.customer_ref, ticket.problem, ticket.broadcaster = "C-4242", "Facturation", "Amazon"
        session.add(ticket)
    desk.send(desk.reply(opened.confirmation, CUSTOMER, "Et une précision."))
    notes = [m for m in desk.mails("agent_notification", AGENT)]
    text = notes[-1].text()
    assert "Identifiant client : C-4242" in text
    assert "Problème : Facturation" in text and "Diffuseur : Amazon" in text
    assert "Et une précision." in text
    assert not any(line.startswith(">") for line in text.splitlines())  # quotes stripped


def test_the_agents_files_reach_the_customer_and_a_reply_assigns_the_ticket(
    desk: ServiceDesk,
) -> None:
    opened, notification = staffed_ticket(desk)
    assert desk.ticket(opened.id)["assignee"] is None
    reply = desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "Voici la procédure.")
    desk.send(_with_files(reply, ("procédure.pdf", "application/pdf", SMALL)))
    out = desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    assert _files(out) == {"procédure.pdf": SMALL}
    assert "Voici la procédure." in out.text()
    assert desk.ticket(opened.id)["assignee"] == AGENT  # whoever answers takes it
    shown = desk.ticket(opened.id)["messages"][-1]["attachments"]
    assert [a["filename"] for a in shown] == ["procédure.pdf"]  # and the portal shows it


def test_a_note_does_not_assign(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    agent_mail(desk, notification, "#note\nÀ voir demain.")
    assert desk.ticket(opened.id)["assignee"] is None


def test_a_follow_up_keeps_assignee_category_and_the_original_subject(desk: ServiceDesk) -> None:
    opened, notification = staffed_ticket(desk)
    agent_mail(desk, notification, "#category Billing\n#status closed\n\nC'est réglé.")
    closing = desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    assert desk.ticket(opened.id)["assignee"] == AGENT
    desk.send(desk.reply(closing, CUSTOMER, "Finalement ça recommence."))
    follow = desk.wait_mail("follow_up", JEAN)
    new_id = int(str(follow.msg["X-Mailgate-Ticket"]))
    assert new_id != opened.id
    ticket = desk.ticket(new_id)
    assert ticket["assignee"] == AGENT and ticket["category"] == "Billing"
    assert ticket["subject"] == "Imprimante en panne"


def test_a_customer_mail_brings_a_deleted_ticket_back_and_the_agent_is_told(
    desk: ServiceDesk,
) -> None:
    opened, notification = staffed_ticket(desk)
    agent_mail(desk, notification, "#status solved")
    with desk.mg.app.db.write() as session:  # as the portal's delete does
        ticket = session.get(Ticket, opened.id)
        assert ticket is not None
        ticket.customer_deleted_at = desk.mg.clock.now()
        session.add(ticket)
    assert desk.ticket(opened.id)["deleted"] is True
    desk.send(desk.reply(opened.confirmation, CUSTOMER, "Je n'avais pas fini, en fait."))
    note = desk.mails("agent_notification", AGENT)[-1]
    assert "Le client avait supprimé ce ticket" in note.text()
    assert desk.ticket(opened.id)["deleted"] is False
    assert desk.ticket(opened.id)["status"] == "open"  # solved, reopened by the reply
