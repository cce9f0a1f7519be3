"""The customer's "My activities" and long conversations in keyset pages, over real HTTP:
every ticket once and in order across pages (ties on the last exchange included), the status
filter kept in the links, the counts, cursors that cannot reach another customer's tickets,
and bad page links answered with a 400 page, never a 500.

The customer signs in the real way (a mailed ticket, then the activation link); the many
tickets and messages beside it are written straight into the database, as years of mail
would have left them."""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from mailgate.services.keyset import ID_MAX, Key, encode
from mailgate.services.portal_views import MESSAGES_PER_PAGE, TICKETS_PER_PAGE
from tests.support.conversation import CUSTOMER, Desk, addr
from tests.support.peers import Mailgate
from tests.support.portal_web import Web, customer_with_ticket

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

pytest_plugins = ["tests.support.portal"]

OTHER = "Marie Curie <marie@autre.example>"
TICKET_ROW = re.compile(r'<td><a href="/tickets/(\d+)">')
MESSAGE = re.compile(r'<div class="body">([^<]*)</div>')
START = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


def ids_on(page: str) -> list[int]:
    return [int(i) for i in TICKET_ROW.findall(page)]


def account_of(mg: Mailgate, email: str) -> int:
    from mailgate.store.models import Account

    with mg.app.db.read() as session:
        found = session.exec(select(Account.id).where(Account.email == email)).one()
        return int(found or 0)


def seed_tickets(
    mg: Mailgate, requester: int, count: int, *, prefix: str, statuses: tuple[str, ...] = ("open",)
) -> None:
    """`count` tickets; groups of three share their last exchange to the microsecond, so the
    id has to break ties; every seventh is deleted by the customer."""
    from mailgate.store.models import Ticket

    with mg.app.db.write() as session:
        for i in range(count):
            last = START + timedelta(hours=i // 3)
            session.add(
                Ticket(
                    subject=f"{prefix} {i}",
                    status=statuses[i % len(statuses)],
                    requester_id=requester,
                    created_at=last - timedelta(days=1),
                    updated_at=last,
                    last_exchange_at=last,
                    customer_deleted_at=last if i % 7 == 6 else None,
                )
            )


def visible_in_order(mg: Mailgate, requester: int, status: str | None = None) -> list[int]:
    """What the list must show, newest exchange first, computed independently in Python."""
    from mailgate.store.models import Ticket

    with mg.app.db.read() as session:
        query = select(Ticket).where(
            Ticket.requester_id == requester, col(Ticket.customer_deleted_at).is_(None)
        )
        if status:
            query = query.where(Ticket.status == status)
        rows = [(t.last_exchange_at.replace(tzinfo=None), t.id or 0) for t in session.exec(query)]
    return [tid for _, tid in sorted(rows, reverse=True)]


def walk(web: Web, start: str, rel: str) -> tuple[list[list[int]], list[str]]:
    pages, texts, path = [], [], start
    while path:
        response = web.get(path)
        assert response.status_code == 200, (path, response.status_code)
        pages.append(ids_on(response.text))
        texts.append(response.text)
        path = link(response.text, rel)
        assert len(pages) < 50, "the links go round in circles"
    return pages, texts


@pytest.fixture
def jean(portal: Mailgate, helpdesk: Desk, web: Web) -> int:
    """Jean, signed in on `web`, with one mailed ticket; returns his account id."""
    customer_with_ticket(helpdesk, web)
    return account_of(portal, addr(CUSTOMER))


def test_pages_show_every_ticket_once_in_order_both_ways(portal: Mailgate, web: Web, jean: int):
    seed_tickets(portal, jean, 70, prefix="Seeded")
    expected = visible_in_order(portal, jean)
    assert len(expected) == 61  # 70 seeded, 10 deleted, and the mailed one

    forward, texts = walk(web, "/tickets", "next")
    assert [len(p) for p in forward] == [TICKETS_PER_PAGE, TICKETS_PER_PAGE, 11]
    assert [t for p in forward for t in p] == expected
    assert "Demandes 1 à 25 sur 61" in texts[0]
    assert "Demandes 26 à 50 sur 61" in texts[1]
    assert "Demandes 51 à 61 sur 61" in texts[2]
    assert link(texts[0], "prev") is None  # the first page links only onwards
    assert link(texts[2], "next") is None

    # Back from the last page by the "previous" links: the same pages, in reverse.
    last = web.get(link(texts[1], "next") or "").text
    assert link(last, "prev")
    backward, _ = walk(web, link(last, "prev") or "", "prev")
    assert backward == forward[:2][::-1]
    assert 'href="/tickets">Demandes les plus récentes</a>' in texts[1]


def test_filter_is_kept_in_the_page_links(portal: Mailgate, web: Web, jean: int):
    seed_tickets(portal, jean, 90, prefix="Mixed", statuses=("pending", "solved"))
    expected = visible_in_order(portal, jean, "pending")
    assert len(expected) > TICKETS_PER_PAGE

    pages, texts = walk(web, "/tickets?status=pending", "next")
    assert [t for p in pages for t in p] == expected
    assert len(pages) == 2
    assert "status=pending" in (link(texts[0], "next") or "")
    assert "status=pending" in (link(texts[1], "prev") or "")
    assert f"sur {len(expected)}</p>" in texts[1]
    assert ">Résolu</span>" not in texts[0] + texts[1]


def test_a_forged_cursor_never_shows_another_customers_tickets(
    portal: Mailgate, helpdesk: Desk, web: Web, make_web, jean: int
):
    other_web = make_web()
    customer_with_ticket(helpdesk, other_web, sender=OTHER, subject="Chez Marie")
    marie = account_of(portal, addr(OTHER))
    seed_tickets(portal, jean, 30, prefix="Jean")
    seed_tickets(portal, marie, 30, prefix="Marie")
    jeans = set(visible_in_order(portal, jean))
    maries = set(visible_in_order(portal, marie))

    # Marie's own page link, replayed by Jean, and cursors made up around her tickets.
    her_next = link(other_web.get("/tickets").text, "next")
    assert her_next
    forged = [her_next, "/tickets?after=" + encode(Key(START + timedelta(days=3650), ID_MAX))]
    for ticket in sorted(maries)[:3]:
        for hours in (-1, 0, 1):
            key = encode(Key(START + timedelta(hours=hours), ticket))
            forged += [f"/tickets?after={key}", f"/tickets?before={key}"]
    for path in forged:
        page = web.get(path)
        assert page.status_code == 200, path
        shown = set(ids_on(page.text))
        assert shown <= jeans, path
        assert not shown & maries
        assert "Marie" not in page.text

    # Her ticket stays a 404 for Jean, with or without a page link.
    ticket = min(maries)
    assert web.get(f"/tickets/{ticket}?before={encode(Key(START, ticket))}").status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        "after=x",
        "after=%21%21%21%21",
        "after=" + "A" * 500,
        "after=" + base64.urlsafe_b64encode(b"1.12.abc").decode().rstrip("="),
        "after=" + base64.urlsafe_b64encode(b"1.999999999999999999.5").decode().rstrip("="),
        "after=" + base64.urlsafe_b64encode(b"1.5.99999999999").decode().rstrip("="),
        "after=" + base64.urlsafe_b64encode("1.5.٣".encode()).decode().rstrip("="),
        "before=%C3%A9t%C3%A9",
        "after=MS4xLjE&before=MS4xLjE",
    ],
)
def test_a_bad_page_link_is_a_400_page(web: Web, jean: int, query: str):
    for path in ("/tickets", f"/tickets/{_first_ticket(web)}"):
        response = web.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query)
        assert "Ce lien de page n'est pas valide" in html.unescape(response.text)


def _first_ticket(web: Web) -> int:
    return ids_on(web.get("/tickets").text)[0]


def test_a_cursor_past_the_end_says_so_and_links_back(web: Web, jean: int):
    page = web.get("/tickets?after=" + encode(Key(datetime(1990, 1, 1, tzinfo=UTC), 1)))
    assert page.status_code == 200
    assert ids_on(page.text) == []
    assert "Aucune autre demande." in page.text
    assert 'href="/tickets">Demandes les plus récentes</a>' in page.text


def test_a_long_conversation_in_pages(portal: Mailgate, helpdesk: Desk, web: Web, jean: int):
    from mailgate.store.models import Message

    ticket = _first_ticket(web)
    public = 2 * MESSAGES_PER_PAGE + 7
    with portal.app.db.write() as session:
        for i in range(public):
            at = START + timedelta(minutes=i // 2)  # pairs share a timestamp
            session.add(
                Message(
                    ticket_id=ticket,
                    author_id=jean,
                    role="customer",
                    body_text=f"Message numéro {i}",
                    message_id=f"seed-{i}@client.example",
                    created_at=at,
                )
            )
            if i % 10 == 0:  # agents' internal notes, never shown to the customer
                session.add(
                    Message(
                        ticket_id=ticket,
                        author_id=None,
                        role="agent",
                        internal=True,
                        body_text=f"Note interne {i}",
                        message_id=f"note-{i}@helpdesk.example",
                        created_at=at,
                    )
                )
    total = public + 1  # and the mailed first message, the newest of all

    latest = web.get(f"/tickets/{ticket}")
    assert latest.status_code == 200
    assert f"Messages {total - MESSAGES_PER_PAGE + 1} à {total} sur {total}" in latest.text
    assert 'id="latest"' in latest.text
    assert link(latest.text, "next") is None
    _, texts = walk(web, f"/tickets/{ticket}", "prev")
    bodies = [b for text in reversed(texts) for b in MESSAGE.findall(text)]
    assert bodies[:public] == [f"Message numéro {i}" for i in range(public)]
    assert len(bodies) == total
    assert all("Note interne" not in text for text in texts)
    sizes = [len(MESSAGE.findall(t)) for t in texts]
    assert sizes == [MESSAGES_PER_PAGE, MESSAGES_PER_PAGE, total % MESSAGES_PER_PAGE]
    assert 'id="latest"' not in texts[1]
    assert (link(texts[1], "prev") or "").endswith("#conversation")
    # and forward again from the oldest page, by the "later" links
    forward, _ = walk(web, link(texts[1], "prev") or "", "next")
    assert len(forward) == 3
