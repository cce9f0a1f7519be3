"""Rate limits of the portal (kept in the database): sign-in failures per client (IP and
address) and per IP, reset mails per address and per IP, sign-ups, new tickets. Over a limit
the answer is 429 and no mail is queued, hence none is sent; the window slides with the service
clock. tests/integration/test_security_portal.py has the races, the per-address ceiling and
the pages' wording."""

from __future__ import annotations

import re

from mailgate.clock import FixedClock
from tests.support.conversation import CUSTOMER, Desk, addr
from tests.support.peers import Mailgate
from tests.support.portal_web import (
    PASSWORD,
    Web,
    customer_with_ticket,
    outbox_count,
    solve_captcha,
)

pytest_plugins = ["tests.support.portal"]

JEAN = addr(CUSTOMER)


def test_sign_in_failures_per_client(helpdesk: Desk, web: Web, make_web, portal_clock: FixedClock):
    customer_with_ticket(helpdesk, web)
    attacker = make_web()
    for _ in range(5):
        assert attacker.submit("/login", {"email": JEAN, "password": "guess"}).status_code == 401
    blocked = attacker.submit("/login", {"email": JEAN, "password": PASSWORD})
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"].isdigit()
    assert attacker.session_cookie() is None
    # The limit is on this client (this IP on this address): the owner elsewhere gets in.
    owner = make_web(**{"X-Forwarded-For": "203.0.113.20"})
    assert owner.submit("/login", {"email": JEAN, "password": PASSWORD}).status_code == 303
    portal_clock.advance(minutes=16)
    assert make_web().submit("/login", {"email": JEAN, "password": PASSWORD}).status_code == 303


def test_sign_in_failures_per_ip(helpdesk: Desk, web: Web, make_web):
    customer_with_ticket(helpdesk, web)
    sprayer = make_web()
    for n in range(20):
        tried = sprayer.submit("/login", {"email": f"user{n}@client.example", "password": "x"})
        assert tried.status_code == 401
    assert sprayer.submit("/login", {"email": JEAN, "password": PASSWORD}).status_code == 429


def test_reset_mails_per_address(
    portal: Mailgate, helpdesk: Desk, web: Web, portal_clock: FixedClock
):
    helpdesk.open_ticket()
    for _ in range(3):
        assert web.submit("/password/forgot", {"email": JEAN}).status_code == 200
        portal_clock.advance(minutes=15, seconds=1)  # one link per 15 minutes
    assert outbox_count(portal, "password_reset", JEAN) == 3
    refused = web.submit("/password/forgot", {"email": JEAN})
    assert refused.status_code == 429
    assert "déjà envoyé un lien" in refused.text
    assert outbox_count(portal, "password_reset", JEAN) == 3
    portal_clock.advance(minutes=15)
    assert web.submit("/password/forgot", {"email": JEAN}).status_code == 200
    assert outbox_count(portal, "password_reset", JEAN) == 4


def test_reset_mails_per_ip(portal: Mailgate, helpdesk: Desk, web: Web):
    helpdesk.open_ticket()
    for n in range(10):
        sent = web.submit("/password/forgot", {"email": f"someone{n}@client.example"})
        assert sent.status_code == 200
    assert web.submit("/password/forgot", {"email": JEAN}).status_code == 429
    assert outbox_count(portal, "password_reset") == 0


def test_sign_ups_per_ip(portal: Mailgate, web: Web):
    for n in range(5):
        done = web.submit(
            "/signup",
            {"name": f"Person {n}", "email": f"p{n}@client.example", "altcha": solve_captcha(web)},
        )
        assert done.status_code == 200
    refused = web.submit(
        "/signup",
        {"name": "One more", "email": "more@client.example", "altcha": solve_captcha(web)},
    )
    assert refused.status_code == 429
    assert outbox_count(portal, "activation") == 5
    assert outbox_count(portal, "activation", "more@client.example") == 0


def test_new_tickets_per_account(portal: Mailgate, helpdesk: Desk, web: Web):
    customer_with_ticket(helpdesk, web)
    form = {"customer_id": "C-1", "subject": "Encore", "description": "…", "problem": "Other"}
    created = []
    for _ in range(20):
        done = web.submit("/tickets/new", form)
        assert done.status_code == 303
        created.append(re.search(r"created=(\d+)", done.headers["location"]).group(1))
    assert len(set(created)) == 20
    refused = web.submit("/tickets/new", form)
    assert refused.status_code == 429
    assert len(helpdesk.tickets()) == 21
