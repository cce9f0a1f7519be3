"""The agents' desk in the portal (issue 12), over real HTTP against `mailgate serve`: the queue
(filters, search, keyset pages, who waits and since when), the agent's ticket page (every
message with its author, notes marked, form fields, files, collaborators, how each mail
joined the ticket and its sender verdict), every action through AgentDesk.act, the same path
as an agent's mail (same TicketEvents, `agent_reply` to the customer), and the access rules
on every route, for customers and agents alike."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from mailgate.clock import FixedClock
from mailgate.services.agent_views import QUEUE_PER_PAGE, SEARCH_CAP
from mailgate.store.models import (
    Account,
    Attachment,
    Collaborator,
    Message,
    Outbox,
    Ticket,
    TicketEvent,
)
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import (
    PASSWORD,
    Web,
    agent_says,
    customer_with_ticket,
    hidden_fields,
    path_of,
)

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

pytest_plugins = ["tests.support.portal"]

JEAN = addr(CUSTOMER)
PAUL = "Paul Martin <paul@autre.example>"
BOB = "bob@helpdesk.example"
ROW = re.compile(r'<tr data-ticket="(\d+)">(.*?)</tr>', re.S)
START = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def config_extra() -> str:
    return (
        'customer_id_label = "Id client Lengow"\n'
        'customer_id_pattern = "^[0-9]{4,8}$"\n'
        'problem_categories = ["Flux produits", "Commandes"]\n'
        'broadcasters = ["Amazon", "Cdiscount"]\n'
    )


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def agent_web(portal: Mailgate, make_web: Callable[..., Web]) -> Callable[..., Web]:
    """An agent made with the services (as `mailgate agent add` does), with a password set,
    signed in through /login like anyone else."""

    def make(email: str = AGENT, name: str = AGENT_NAME, locale: str = "fr") -> Web:
        with portal.app.db.write() as session:
            account = portal.app.accounts.add_agent(session, email, name)
            account.locale = locale
            portal.app.accounts.set_password(session, account, PASSWORD)
        browser = make_web()
        signed = browser.submit("/login", {"email": email, "password": PASSWORD})
        assert signed.status_code == 303, signed.text
        return browser

    return make


def queue_rows(page: str) -> list[tuple[int, str]]:
    return [(int(i), cells) for i, cells in ROW.findall(page)]


def queue_ids(page: str) -> list[int]:
    return [i for i, _ in queue_rows(page)]


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def row_of(page: str, ticket_id: int) -> str:
    return text_of(dict(queue_rows(page))[ticket_id])


def act(agent: Web, ticket_id: int, files: Any = None, **data: str) -> Any:
    """Fill the agent's form as the page shows it (hidden fields, current values) and send."""
    page = agent.get(f"/tickets/{ticket_id}").text
    fields = {**hidden_fields(page), **current_values(page), **data}
    return agent.post(f"/tickets/{ticket_id}/act", data=fields, files=files)


def current_values(page: str) -> dict[str, str]:
    """What a browser sends for the form's visible fields left as they are."""
    form = page[page.index('action="/tickets/') :]
    values = {"visibility": "public", "body": ""}
    for name in ("status", "assignee"):
        select_html = re.search(rf'<select id="{name}" name="{name}".*?</select>', form, re.S)
        assert select_html, name
        chosen = re.search(r'<option value="([^"]*)" selected', select_html.group(0))
        values[name] = html.unescape(chosen.group(1)) if chosen else ""
    category = re.search(r'id="category" name="category"[^>]*value="([^"]*)"', form)
    values["category"] = html.unescape(category.group(1)) if category else ""
    return values


def events(mg: Mailgate, ticket_id: int, kind: str | None = None) -> list[tuple[str, str, int]]:
    with mg.app.db.read() as session:
        query = select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
        if kind:
            query = query.where(TicketEvent.kind == kind)
        rows = session.exec(query.order_by(col(TicketEvent.id))).all()
        return [(e.kind, e.detail, e.actor_id or 0) for e in rows]


def account_id(mg: Mailgate, email: str) -> int:
    with mg.app.db.read() as session:
        return int(session.exec(select(Account.id).where(Account.email == email)).one() or 0)


def stored(mg: Mailgate, ticket_id: int) -> Ticket:
    with mg.app.db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        session.expunge(ticket)
        return ticket


def messages(mg: Mailgate, ticket_id: int) -> list[Message]:
    with mg.app.db.read() as session:
        rows = session.exec(
            select(Message).where(Message.ticket_id == ticket_id).order_by(col(Message.id))
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def outbox(mg: Mailgate, ticket_id: int) -> list[tuple[str, str]]:
    with mg.app.db.read() as session:
        rows = session.exec(
            select(Outbox.kind, Outbox.to_addr)
            .where(Outbox.ticket_id == ticket_id)
            .order_by(col(Outbox.id))
        ).all()
        return [(k, t) for k, t in rows]


def state(mg: Mailgate, ticket_id: int) -> tuple[Any, ...]:
    """Everything an action could change on a ticket."""
    ticket = stored(mg, ticket_id)
    with mg.app.db.read() as session:
        ccs = session.exec(
            select(Collaborator.email, Collaborator.status).where(
                Collaborator.ticket_id == ticket_id
            )
        ).all()
    return (
        ticket.status,
        ticket.assignee_id,
        ticket.category,
        len(messages(mg, ticket_id)),
        events(mg, ticket_id),
        outbox(mg, ticket_id),
        sorted(ccs),
    )


def mail_with_file(
    desk: Desk,
    sender: str,
    subject: str,
    files: list[tuple[str, bytes, str]],
    body: str = "Ci-joint.\n",
    headers: dict[str, str] | None = None,
) -> int:
    msg = desk.mail(sender, "support@example.com", subject, body, headers)
    for name, payload, content_type in files:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    desk.send(msg)
    first = str(msg["Message-ID"]).strip("<>")
    return int(
        str(
            desk.wait_mail("confirmation", addr(sender), in_reply_to=first).msg["X-Mailgate-Ticket"]
        )
    )


def seed_tickets(mg: Mailgate, requester: int, count: int, *, prefix: str, **fields: Any) -> None:
    """`count` tickets with their opening message, written straight into the database as
    years of mail would have left them; groups of three share their last exchange to the
    microsecond (the id breaks the ties)."""
    with mg.app.db.write() as session:
        tickets = []
        for i in range(count):
            last = START + timedelta(hours=i // 3)
            ticket = Ticket(
                subject=f"{prefix} {i}",
                status="open",
                requester_id=requester,
                created_at=last - timedelta(days=1),
                updated_at=last,
                last_exchange_at=last,
                **fields,
            )
            session.add(ticket)
            tickets.append(ticket)
        session.flush()
        for ticket in tickets:
            session.add(
                Message(
                    ticket_id=ticket.id or 0,
                    author_id=requester,
                    subject=ticket.subject,
                    body_text="Bonjour.",
                    message_id=f"seed-{ticket.id}@client.example",
                    created_at=ticket.created_at,
                )
            )


# -- the link in the agent's mail ------------------------------------------------------------


def test_the_link_in_the_agents_notification_opens_the_agents_page(
    helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    ticket = helpdesk.open_ticket().id
    notification = helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket)
    link = re.search(r"https?://\S+/tickets/\d+", notification.text())
    assert link, notification.text()
    agent = agent_web()
    page = agent.get(path_of(link.group(0)))
    assert page.status_code == 200
    assert "Répondre ou ajouter une note" in page.text  # the agent's form, not a customer's
    assert JEAN in page.text  # agents see addresses


# -- the queue ---------------------------------------------------------------------------------


def test_the_queue_shows_every_ticket_its_people_and_who_waits(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web], portal_clock: FixedClock
):
    helpdesk.add_agent()
    answered = helpdesk.open_ticket(subject="Facture de mars").id
    portal_clock.advance(hours=1)
    waiting = helpdesk.open_ticket(sender=PAUL, subject="Flux refusé").id
    portal_clock.advance(minutes=30)
    agent_says(helpdesk, answered, "La facture est dans votre espace.")
    portal_clock.advance(hours=2, minutes=5)
    agent = agent_web()

    page = agent.get("/tickets")
    assert page.status_code == 200
    assert "<h1>File d'attente</h1>" in html.unescape(page.text)
    assert queue_ids(page.text) == [answered, waiting]  # latest exchange first
    first = row_of(page.text, answered)
    assert "Facture de mars" in first and "Jean Dupont" in first and JEAN in first
    assert "En attente" in first and AGENT_NAME in first  # answering took the ticket
    assert first.endswith("—")  # the agent spoke last: nobody waits
    second = row_of(page.text, waiting)
    assert "Paul Martin" in second and "paul@autre.example" in second
    assert "Nouveau" in second and "Non assignée" in second
    assert second.endswith("2 h 35")  # since Paul's mail, by the service's clock
    # A second mail from Paul does not restart his wait; an internal note does not end it.
    portal_clock.advance(minutes=10)
    agent_says(helpdesk, answered, "#note\nà relancer")
    assert row_of(agent.get("/tickets").text, waiting).endswith("2 h 45")
    assert '<time datetime="' in page.text and "/static/localtime.js" in page.text


def test_queue_filters(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web], portal_clock: FixedClock
):
    helpdesk.add_agent()
    helpdesk.add_agent(BOB, "Bob Leroy")
    mine = helpdesk.open_ticket(subject="Le mien").id
    portal_clock.advance(minutes=5)
    bobs = helpdesk.open_ticket(subject="Celui de Bob").id
    portal_clock.advance(minutes=5)
    free = helpdesk.open_ticket(subject="Personne").id
    portal_clock.advance(minutes=5)
    billing = helpdesk.open_ticket(
        subject="Facture", rcpts=["billing@example.com"]
    ).id  # filed into "Billing" by its address
    agent_says(helpdesk, mine, f"#assign {AGENT}\n#status open")
    agent_says(helpdesk, bobs, f"#assign {BOB}\n#status solved")
    agent = agent_web()

    def ids(query: str) -> list[int]:
        page = agent.get("/tickets" + query)
        assert page.status_code == 200
        return queue_ids(page.text)

    assert sorted(ids("")) == sorted([mine, bobs, free, billing])
    assert ids("?assignee=mine") == [mine]
    assert sorted(ids("?assignee=unassigned")) == sorted([free, billing])
    assert ids("?status=solved") == [bobs]
    assert sorted(ids("?status=new")) == sorted([free, billing])
    assert ids("?status=new&category=Billing") == [billing]
    assert ids("?category=Billing") == [billing]
    assert ids("?assignee=mine&status=solved") == []
    assert "Aucune demande ne correspond." in agent.get("/tickets?assignee=mine&status=closed").text
    # Unknown values filter nothing rather than fail.
    assert sorted(ids("?status=bogus&assignee=everyone")) == sorted([mine, bobs, free, billing])
    # The filter form shows what is applied, and the views keep the rest of it.
    page = agent.get("/tickets?status=new&category=Billing").text
    assert '<option value="new" selected>' in page and "<option selected>Billing</option>" in page
    assert 'href="/tickets?status=new&amp;category=Billing&amp;assignee=mine"' in page


def test_queue_search(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web], portal_clock: FixedClock
):
    helpdesk.add_agent()
    printer = helpdesk.open_ticket(subject="Imprimante", body="Le voyant clignote en rouge.\n").id
    portal_clock.advance(minutes=5)
    feed = helpdesk.open_ticket(
        sender=PAUL, subject="Flux Amazon", body="Erreur 100% sur le flux_produits.\n"
    ).id
    portal_clock.advance(minutes=5)
    agent_says(helpdesk, printer, "#note\ndossier MAGENTA-4711 chez le fournisseur")
    agent = agent_web()

    def found(q: str) -> list[int]:
        page = agent.get("/tickets", params={"q": q})
        assert page.status_code == 200
        return sorted(queue_ids(page.text))

    with portal.app.db.write() as session:  # as the new-ticket form records it
        ticket = session.get(Ticket, printer)
        assert ticket is not None
        ticket.customer_ref = "778899"
    assert found("778899") == [printer]  # a customer ID, whole
    assert found("7788") == []
    assert found(f"#{feed}") == [feed]
    assert found(f"#{feed + 1000}") == []
    assert found("paul@autre.example") == [feed]
    assert found("autre.example") == [feed]
    assert found("dupont") == [printer]  # requester's name, any case
    assert found("VOYANT") == [printer]  # words of a message
    assert found("magenta-4711") == [printer]  # an internal note counts for agents
    assert found("flux amazon") == [feed]  # every word, anywhere in the ticket
    assert found("flux voyant") == []
    assert found("100%") == [feed] and found("%") == [feed]  # % and _ are literal
    assert found("flux_") == [feed] and found("x_p") == [feed]
    assert found("   ") == sorted([printer, feed])
    assert found("#99999999999999999999") == []
    page = agent.get("/tickets", params={"q": "voyant", "status": "pending"}).text
    assert 'value="voyant"' in page and queue_ids(page) == []


def test_queue_pages_keep_the_filter_and_show_each_ticket_once(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.open_ticket()
    jean = account_id(portal, JEAN)
    seed_tickets(portal, jean, 2 * QUEUE_PER_PAGE + 7, prefix="Vieux")
    seed_tickets(portal, jean, 10, prefix="Facturé", category="Billing")
    agent = agent_web()
    with portal.app.db.read() as session:
        expected = [
            t.id
            for t in session.exec(
                select(Ticket).order_by(col(Ticket.last_exchange_at).desc(), col(Ticket.id).desc())
            )
        ]
    seen: list[int] = []
    path: str | None = "/tickets"
    while path:
        page = agent.get(path).text
        seen += queue_ids(page)
        found = re.search(r'<a rel="next" href="([^"]+)"', page)
        path = html.unescape(found.group(1)) if found else None
    assert seen == expected
    assert len(seen) == 2 * QUEUE_PER_PAGE + 18
    first = agent.get("/tickets?q=Vieux").text
    assert f"Demandes 1 à {QUEUE_PER_PAGE} sur {2 * QUEUE_PER_PAGE + 7}" in first
    nxt = html.unescape(re.search(r'<a rel="next" href="([^"]+)"', first).group(1))
    assert "q=Vieux" in nxt
    assert agent.get("/tickets?after=not-a-cursor").status_code == 400


def test_a_search_that_finds_too_much_shows_the_newest_and_says_so(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.open_ticket()
    seed_tickets(portal, account_id(portal, JEAN), SEARCH_CAP + 5, prefix="Massif")
    agent = agent_web()
    page = html.unescape(agent.get("/tickets", params={"q": "massif"}).text)
    assert f"seules les plus récentes (au plus {SEARCH_CAP}) sont affichées" in page
    assert f"Demandes 1 à {QUEUE_PER_PAGE} sur {SEARCH_CAP}" in page
    with portal.app.db.read() as session:
        newest = set(
            session.exec(select(Ticket.id).order_by(col(Ticket.id).desc()).limit(SEARCH_CAP))
        )
    assert set(queue_ids(page)) <= newest
    narrowed = html.unescape(agent.get("/tickets", params={"q": f"massif {SEARCH_CAP + 3}"}).text)
    assert "correspondent" not in narrowed and queue_ids(narrowed)


# -- the agent's ticket page ----------------------------------------------------------------


def test_the_agents_page_shows_the_whole_ticket(
    portal: Mailgate, helpdesk: Desk, web: Web, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    customer_with_ticket(helpdesk, web)
    opened = web.submit(
        "/tickets/new",
        {
            "customer_id": "123456",
            "subject": "Flux Amazon en erreur",
            "description": "Le flux 42 est rejeté depuis ce matin.",
            "problem": "Flux produits",
            "broadcaster": "Amazon",
        },
        files=[("attachments", ("erreur.txt", b"ERROR 500 at line 3", "text/plain"))],
    )
    ticket = int(re.search(r"created=(\d+)", opened.headers["location"]).group(1))
    agent_says(
        helpdesk,
        ticket,
        "#note\nClient important.",
        attachment=("contrat.pdf", b"%PDF-1.4 interne", "application/pdf"),
    )
    # Jean answers by mail, putting a colleague in Cc (a pending collaborator).
    notification = helpdesk.wait_mail("confirmation", JEAN, ticket=ticket)
    reply = helpdesk.reply(
        notification, CUSTOMER, "Voici le journal.", headers={"Cc": "marie@client.example"}
    )
    helpdesk.send(reply, [addr(str(notification.msg["Reply-To"]))])
    helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket, count=2)
    assert web.submit(f"/tickets/{ticket}/delete", {}).status_code == 303
    agent = agent_web()

    page = agent.get(f"/tickets/{ticket}")
    assert page.status_code == 200
    shown = text_of(page.text)
    for expected in (
        "Flux Amazon en erreur",
        "Id client Lengow 123456",
        "Le problème concerne Flux produits",
        "Diffuseur Amazon",
        "Demandeur Jean Dupont jean@client.example",
        "Supprimée par le client",
        "marie@client.example en attente : ne reçoit rien",
        "Client important.",
        "Voici le journal.",
        "Depuis le portail",
        "rattaché par le jeton de l'adresse de réponse",
        "expéditeur non vérifié",  # the tests' mailgate checks no sender
    ):
        assert expected in shown, expected
    note = re.search(
        r'<article class="message role-agent note"[^>]*>.*?</article>', page.text, re.S
    )
    assert note and "Note interne" in note.group(0) and "Client important." in note.group(0)
    # Every file, the customer's and the note's, downloads for the agent.
    with portal.app.db.read() as session:
        files = session.exec(
            select(Attachment.id, Attachment.filename, Attachment.size)
            .join(Message, col(Message.id) == Attachment.message_pk)
            .where(Message.ticket_id == ticket)
        ).all()
    assert sorted(f[1] for f in files) == ["contrat.pdf", "erreur.txt"]
    for file_id, name, size in files:
        assert f"/tickets/{ticket}/attachments/{file_id}/{name}" in page.text
        got = agent.get(f"/tickets/{ticket}/attachments/{file_id}/{name}")
        assert got.status_code == 200 and len(got.content) == size


def test_sender_verdicts_and_how_mail_joined(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    opened = helpdesk.open_ticket()
    ticket = opened.id
    # Replies threaded by In-Reply-To (to the customer's own mail), and by the subject tag.
    by_header = helpdesk.mail(
        CUSTOMER,
        "support@example.com",
        "Re: Imprimante",
        "Et alors ?\n",
        {"In-Reply-To": f"<{opened.message_id}>"},
    )
    helpdesk.send(by_header)
    helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket, count=2)
    by_tag = helpdesk.mail(CUSTOMER, "support@example.com", f"Encore [#{ticket}]", "Hello ?\n")
    helpdesk.send(by_tag)
    helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket, count=3)
    # A mail with the agent's From but no token: kept as a flagged note.
    forged = helpdesk.mail(
        f"{AGENT_NAME} <{AGENT}>", "support@example.com", f"[#{ticket}]", "#status closed\nFermé.\n"
    )
    helpdesk.send(forged)
    with portal.app.db.write() as session:  # the verdicts our MTA would have recorded
        rows = session.exec(select(Message).where(Message.ticket_id == ticket)).all()
        rows[0].sender_auth, rows[1].sender_auth = "pass", "fail"
    agent = agent_web()
    shown = text_of(agent.get(f"/tickets/{ticket}").text)
    for expected in (
        "rattaché par un nouvel e-mail (a ouvert la demande) · expéditeur vérifié (SPF/DKIM/DMARC)",
        "rattaché par In-Reply-To · échec de la vérification de l'expéditeur",
        "rattaché par l'étiquette [#…] du sujet",
        "Expéditeur non vérifié : ce message porte l'adresse d'un agent",
    ):
        assert expected in shown, expected
    assert stored(portal, ticket).status == "new"  # the forged command did nothing


# -- actions -----------------------------------------------------------------------------------


def test_a_public_reply_with_a_file_goes_to_the_customer_by_mail(
    portal: Mailgate, helpdesk: Desk, web: Web, agent_web: Callable[..., Web], sink: SmtpSink
):
    helpdesk.add_agent()
    ticket = customer_with_ticket(helpdesk, web)
    agent = agent_web()
    sent = act(
        agent,
        ticket,
        body="Bonjour Jean,\nvoici la procédure.",
        files=[("attachments", ("procedure.pdf", b"%PDF-1.4 proc", "application/pdf"))],
    )
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"].endswith(f"/tickets/{ticket}#latest")

    assert ("agent_reply", JEAN) in outbox(portal, ticket)
    mail = helpdesk.wait_mail("agent_reply", JEAN, ticket=ticket)
    assert "voici la procédure." in mail.text()
    assert AGENT_NAME in str(mail.msg["From"])
    last = messages(portal, ticket)[-1]
    assert (last.role, last.internal, last.channel, last.matched_by) == (
        "agent",
        False,
        "portal",
        "portal",
    )
    assert last.body_text == "Bonjour Jean,\nvoici la procédure."
    with portal.app.db.read() as session:
        names = session.exec(select(Attachment.filename).where(Attachment.message_pk == last.id))
        assert list(names) == ["procedure.pdf"]
    ticket_row = stored(portal, ticket)
    assert ticket_row.status == "pending"  # as after a reply by mail
    assert ticket_row.assignee_id == account_id(portal, AGENT)  # and it took the ticket
    assert ticket_row.pending_since is not None
    # The customer sees it in the portal, file included.
    page = web.get(f"/tickets/{ticket}").text
    assert "voici la procédure." in page and "procedure.pdf" in page


def test_a_form_sent_twice_is_one_reply(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    ticket = helpdesk.open_ticket().id
    agent = agent_web()
    page = agent.get(f"/tickets/{ticket}").text
    form = {**hidden_fields(page), **current_values(page), "body": "Une seule fois."}
    for _ in range(2):
        assert agent.post(f"/tickets/{ticket}/act", data=form).status_code == 303
    assert [k for k, _ in outbox(portal, ticket)].count("agent_reply") == 1
    assert [m.body_text for m in messages(portal, ticket)].count("Une seule fois.") == 1


def test_an_internal_note_reaches_nobody_outside(
    portal: Mailgate, helpdesk: Desk, web: Web, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    ticket = customer_with_ticket(helpdesk, web)
    agent = agent_web()
    before = outbox(portal, ticket)
    done = act(
        agent,
        ticket,
        body="Client à rappeler demain.",
        visibility="note",
        files=[("attachments", ("notes.txt", b"interne", "text/plain"))],
    )
    assert done.status_code == 303
    note = messages(portal, ticket)[-1]
    assert (note.internal, note.role, note.body_text) == (
        True,
        "agent",
        "Client à rappeler demain.",
    )
    assert outbox(portal, ticket) == before  # no mail
    assert stored(portal, ticket).status == "new"  # a note changes no status
    assert stored(portal, ticket).assignee_id is None  # and takes nothing
    page = web.get(f"/tickets/{ticket}").text
    assert "rappeler" not in page and "notes.txt" not in page
    assert "Client à rappeler demain." in agent.get(f"/tickets/{ticket}").text


def test_a_status_change_records_what_the_mail_command_records(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    by_mail = helpdesk.open_ticket(subject="Par mail").id
    by_page = helpdesk.open_ticket(subject="Par le portail").id
    agent_says(helpdesk, by_mail, "#status solved")
    agent = agent_web()
    assert act(agent, by_page, status="solved").status_code == 303
    assert (
        events(portal, by_page)
        == events(portal, by_mail)
        == [("status", "new->solved", account_id(portal, AGENT))]
    )
    assert stored(portal, by_page).solved_at is not None
    assert len(messages(portal, by_page)) == 1  # commands only: no message
    # A reply with a status: pending by the reply, then the status asked for, as by mail.
    agent_says(helpdesk, by_mail, "#status open\nNous regardons.")
    assert act(agent, by_page, status="open", body="Nous regardons.").status_code == 303
    assert [e[:2] for e in events(portal, by_page)] == [e[:2] for e in events(portal, by_mail)]
    assert stored(portal, by_page).status == "open"


def test_assign_category_and_collaborators(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web], sink: SmtpSink
):
    helpdesk.add_agent()
    helpdesk.add_agent(BOB, "Bob Leroy")
    ticket = helpdesk.open_ticket(headers={"Cc": "marie@client.example"}).id
    alice, bob = account_id(portal, AGENT), account_id(portal, BOB)
    agent = agent_web()

    page = agent.get(f"/tickets/{ticket}").text
    assert f'<option value="{BOB}">Bob Leroy</option>' in page
    assert act(agent, ticket, assignee=BOB).status_code == 303
    assert stored(portal, ticket).assignee_id == bob
    assert act(agent, ticket, assignee="").status_code == 303
    assert stored(portal, ticket).assignee_id is None
    assert events(portal, ticket, "assign") == [("assign", BOB, alice), ("assign", "", alice)]

    assert act(agent, ticket, category="Billing").status_code == 303
    assert stored(portal, ticket).category == "Billing"
    assert events(portal, ticket, "category") == [("category", "Billing", alice)]
    assert "Billing" in row_of(agent.get("/tickets").text, ticket)

    def cc(email: str, action: str) -> int:
        page = agent.get(f"/tickets/{ticket}").text
        form = {**hidden_fields(page), "email": email, "action": action}
        return agent.post(f"/tickets/{ticket}/collaborators", data=form).status_code

    def collaborators() -> list[tuple[str, str]]:
        with portal.app.db.read() as session:
            rows = session.exec(
                select(Collaborator.email, Collaborator.status).where(
                    Collaborator.ticket_id == ticket
                )
            ).all()
            return sorted((e, s) for e, s in rows)

    assert collaborators() == [("marie@client.example", "pending")]
    assert cc("marie@client.example", "add") == 303  # accept the one in Cc
    assert cc("Luc@Client.Example", "add") == 303  # add another
    assert collaborators() == [
        ("luc@client.example", "accepted"),
        ("marie@client.example", "accepted"),
    ]
    assert cc("luc@client.example", "remove") == 303
    assert collaborators() == [("marie@client.example", "accepted")]
    refused = agent.post(
        f"/tickets/{ticket}/collaborators",
        data={
            **hidden_fields(agent.get(f"/tickets/{ticket}").text),
            "email": "pas une adresse\n#status closed",
            "action": "add",
        },
    )
    assert refused.status_code == 400 and "Indiquez une adresse e-mail." in refused.text
    # An accepted collaborator receives the public reply, like the requester.
    assert act(agent, ticket, body="Réponse à tous.").status_code == 303
    assert {to for kind, to in outbox(portal, ticket) if kind == "agent_reply"} == {
        JEAN,
        "marie@client.example",
    }


def test_bad_actions_change_nothing(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    ticket = helpdesk.open_ticket().id
    agent = agent_web()
    before = state(portal, ticket)
    for data, message in (
        ({"assignee": JEAN}, "Choisissez un agent de la liste."),  # a customer is no agent
        ({"assignee": "nobody@nowhere.example"}, "Choisissez un agent de la liste."),
        ({"status": "archived"}, "Choisissez un statut de la liste."),
        ({"category": "x" * 65}, "Une catégorie fait de 1 à 64 caractères"),
        ({"category": "A\n#status closed"}, "Une catégorie fait de 1 à 64 caractères"),
        ({}, "Écrivez un message, joignez un fichier ou modifiez un champ."),
        ({"body": "   "}, "Écrivez un message, joignez un fichier ou modifiez un champ."),
    ):
        refused = act(agent, ticket, **data)
        assert refused.status_code == 400, data
        assert message in html.unescape(refused.text), data
    assert state(portal, ticket) == before
    assert (
        agent.post(
            f"/tickets/{ticket + 100}/act",
            data=hidden_fields(agent.get("/tickets").text) | {"body": "x"},
        ).status_code
        == 404
    )


# -- access rules ------------------------------------------------------------------------------


def test_customers_never_reach_the_agents_side(
    portal: Mailgate,
    helpdesk: Desk,
    web: Web,
    make_web: Callable[..., Web],
    agent_web: Callable[..., Web],
):
    helpdesk.add_agent()
    own = customer_with_ticket(helpdesk, web)
    agent_says(
        helpdesk,
        own,
        "#note\nClient difficile, voir MAGENTA.",
        attachment=("interne.txt", b"secret interne", "text/plain"),
    )
    agent_says(helpdesk, own, "Bonjour, pouvez-vous redémarrer ?")
    paul = make_web()
    theirs = customer_with_ticket(helpdesk, paul, sender=PAUL, subject="Ticket de Paul")
    with portal.app.db.read() as session:
        (note_file,) = session.exec(
            select(Attachment.id)
            .join(Message, col(Message.id) == Attachment.message_pk)
            .where(Message.ticket_id == own)
        ).all()

    # GET: "My activities" with their own tickets only; their ticket without anything internal.
    listing = web.get("/tickets").text
    assert "Mes activités" in listing and "File d&#39;attente" not in listing
    assert f'href="/tickets/{own}"' in listing and f'href="/tickets/{theirs}"' not in listing
    assert web.get("/tickets?assignee=unassigned&q=Paul").text.count("data-ticket") == 0
    page = web.get(f"/tickets/{own}").text
    for secret in (
        "MAGENTA",
        "interne.txt",
        AGENT,
        "rattaché par",
        "Note interne",
        "/act",
        "/collaborators",
        "Assignée à",
        "expéditeur",
    ):
        assert secret not in page, secret
    assert web.get(f"/tickets/{theirs}").status_code == 404
    assert web.get(f"/tickets/{own}/attachments/{note_file}/interne.txt").status_code == 404

    # POST: every agent action, on their own ticket and on another's: 404, nothing changes.
    csrf = hidden_fields(listing)["csrf"]
    before = {t: state(portal, t) for t in (own, theirs)}
    for ticket in (own, theirs):
        for path, data in (
            ("act", {"body": "Forgé", "status": "closed", "status_was": "pending"}),
            ("act", {"assignee": AGENT, "visibility": "note", "body": "x"}),
            ("act", {"category": "Billing", "category_was": ""}),
            ("collaborators", {"email": "evil@attacker.example", "action": "add"}),
            ("collaborators", {"email": "marie@client.example", "action": "remove"}),
        ):
            refused = web.post(f"/tickets/{ticket}/{path}", data={"csrf": csrf, **data})
            assert refused.status_code == 404, (ticket, path)
    assert {t: state(portal, t) for t in (own, theirs)} == before

    # Agents, by contrast, reach every ticket and every file.
    agent = agent_web()
    for ticket in (own, theirs):
        assert agent.get(f"/tickets/{ticket}").status_code == 200
    assert agent.get(f"/tickets/{own}/attachments/{note_file}/interne.txt").content == (
        b"secret interne"
    )
    assert sorted(queue_ids(agent.get("/tickets").text)) == sorted([own, theirs])


def test_signed_out_visitors_reach_nothing(portal: Mailgate, helpdesk: Desk, web: Web):
    ticket = helpdesk.open_ticket().id
    for path in ("/tickets", f"/tickets/{ticket}", f"/tickets/{ticket}/attachments/1/x"):
        got = web.get(path)
        assert got.status_code == 303 and "/login" in got.headers["location"], path
    for path in (f"/tickets/{ticket}/act", f"/tickets/{ticket}/collaborators"):
        assert web.post(path, data={"body": "x"}).status_code == 403  # no CSRF token
    login = web.get("/login").text
    for path in (f"/tickets/{ticket}/act", f"/tickets/{ticket}/collaborators"):
        got = web.post(path, data={**hidden_fields(login), "body": "x", "email": "a@b.example"})
        assert got.status_code == 303 and got.headers["location"].endswith("/login")
    assert len(messages(portal, ticket)) == 1


def test_a_removed_agent_is_an_agent_no_more(
    portal: Mailgate, helpdesk: Desk, agent_web: Callable[..., Web]
):
    helpdesk.add_agent()
    ticket = helpdesk.open_ticket().id
    agent = agent_web()
    assert agent.get(f"/tickets/{ticket}").status_code == 200
    form = {**hidden_fields(agent.get(f"/tickets/{ticket}").text), "body": "x"}
    with portal.app.db.write() as session:  # what `mailgate agent remove` leaves, at least
        account = session.exec(select(Account).where(Account.email == AGENT)).one()
        account.role = "customer"
    assert agent.post(f"/tickets/{ticket}/act", data=form).status_code in (303, 404)
    assert len(messages(portal, ticket)) == 1
    assert agent.get(f"/tickets/{ticket}").status_code in (303, 404)


def test_agent_pages_speak_the_agents_language(helpdesk: Desk, agent_web: Callable[..., Web]):
    ticket = helpdesk.open_ticket().id  # Jean writes in French
    english = agent_web("ann@helpdesk.example", "Ann Smith", locale="en")
    queue = english.get("/tickets").text
    assert "<h1>Queue</h1>" in queue and "Unassigned" in queue and "Customer waiting" in queue
    page = english.get(f"/tickets/{ticket}").text
    assert "Reply or add a note" in page and "Public reply, mailed to the customer" in page
    assert "joined by a new mail (opened the ticket)" in text_of(page)
    french = agent_web()
    assert "Répondre ou ajouter une note" in french.get(f"/tickets/{ticket}").text


def test_pages_mark_every_time_for_the_browser(
    helpdesk: Desk, web: Web, agent_web: Callable[..., Web]
):
    ticket = customer_with_ticket(helpdesk, web)
    agent = agent_web()
    for browser, path in (
        (web, "/tickets"),
        (web, f"/tickets/{ticket}"),
        (agent, "/tickets"),
        (agent, f"/tickets/{ticket}"),
    ):
        page = browser.get(path).text
        times = re.findall(r'<time datetime="([^"]+)">([^<]+)</time>', page)
        assert times, path
        for iso, shown in times:
            moment = datetime.fromisoformat(iso)
            assert moment.utcoffset() == timedelta(0)
            # Without JavaScript, the site's zone ([mailgate] default_timezone) until the
            # browser has said its own.
            assert shown.endswith(moment.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M"))
        assert '<script src="/static/localtime.js" defer></script>' in page
    script = web.get("/static/localtime.js")
    assert script.status_code == 200 and "Intl.DateTimeFormat" in script.text
