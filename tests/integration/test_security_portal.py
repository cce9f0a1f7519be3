"""The portal's part of the security issue, over real HTTP against `mailgate serve` (SQLite,
and PostgreSQL when MAILGATE_TEST_DATABASE_URL is set):

- sign-in limits are checked and counted in one transaction (parallel guesses cannot slip
  past them), and they slow down the guessing client, not the address's owner;
- the CSRF token is bound to this browser's session (or anonymous cookie);
- ids out of range in any URL answer 404, never 500;
- mails a person asks for have their own limits and the page says what happened, at what
  time (in [mailgate] default_timezone), without revealing whether an address is known.

Client IPs other than 127.0.0.1 come from X-Forwarded-For, which the portal believes from a
proxy on loopback (as behind nginx).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.routing import Route

from mailgate.app import portal_asgi
from mailgate.clock import FixedClock
from mailgate.store.models import RateEvent, Ticket
from tests.support.conversation import CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import (
    PASSWORD,
    Web,
    customer_with_ticket,
    hidden_fields,
    outbox_count,
    solve_captcha,
)

pytest_plugins = ["tests.support.portal"]

JEAN = addr(CUSTOMER)
PARIS = ZoneInfo("Europe/Paris")
MINUTE = timedelta(minutes=1)
ALERT = re.compile(r'<div class="alert[^"]*" role="(?:status|alert)">([^<]*)</div>')


def active_customer(mg: Mailgate, email: str = JEAN, password: str = PASSWORD) -> None:
    """An account with a password, made directly (these tests are about signing in)."""
    accounts = mg.app.accounts
    hashed = accounts.hash_password(password)

    def job(session: Session) -> None:
        account, _ = accounts.find_or_create_customer(session, email, "Jean Dupont")
        accounts.set_password(session, account, password, hashed=hashed)

    mg.app.committer.run(job)


def from_ip(make_web: Callable[..., Web], ip: str) -> Web:
    return make_web(**{"X-Forwarded-For": ip})


def sign_in(web: Web, password: str, email: str = JEAN) -> int:
    return web.submit("/login", {"email": email, "password": password}).status_code


def failures_recorded(mg: Mailgate, limit_name: str) -> int:
    with mg.app.db.read() as session:
        query = select(func.count()).select_from(RateEvent)
        query = query.where(col(RateEvent.key).startswith(f"{limit_name}:"))
        return int(session.exec(query).one())


def alert(page: httpx.Response) -> str:
    found = ALERT.search(page.text)
    assert found, page.text
    return found.group(1)


def paris(moment: datetime, lang: str = "fr") -> str:
    """The time on a Paris wall clock, written the way the page's language writes it."""
    local = moment.astimezone(PARIS)
    if lang == "en":  # "2:34 PM", a narrow no-break space before the period
        return local.strftime("%I:%M").lstrip("0") + "\u202f" + local.strftime("%p")
    return local.strftime("%H:%M")


# -- sign-in ---------------------------------------------------------------------------------


def test_parallel_wrong_guesses_cannot_slip_past_the_limit(portal: Mailgate, make_web):
    active_customer(portal)
    guessers = [from_ip(make_web, "198.51.100.7") for _ in range(30)]
    forms = [{**hidden_fields(g.get("/login").text), "email": JEAN} for g in guessers]
    start = threading.Barrier(len(guessers))

    def guess(n: int) -> int:
        start.wait(timeout=30)
        form = {**forms[n], "password": f"wrong guess {n}"}
        return guessers[n].post("/login", data=form).status_code

    with ThreadPoolExecutor(len(guessers)) as pool:
        codes = list(pool.map(guess, range(len(guessers))))
    # Only as many passwords checked (401) as the limit allows; the rest refused unchecked.
    assert codes.count(401) == 5, codes
    assert codes.count(429) == 25, codes
    assert failures_recorded(portal, "signin-fail-client") == 5


def test_an_attacker_does_not_lock_the_owner_out(
    portal: Mailgate, make_web, portal_clock: FixedClock
):
    active_customer(portal)
    attacker = from_ip(make_web, "198.51.100.7")
    codes = [sign_in(attacker, f"guess {n}") for n in range(8)]
    assert codes == [401] * 5 + [429] * 3
    refused = attacker.submit("/login", {"email": JEAN, "password": PASSWORD})
    assert refused.status_code == 429  # that client waits, even with the right password
    assert int(refused.headers["retry-after"]) == 15 * 60 + 1
    assert attacker.session_cookie() is None
    # The owner, from their own connection, gets in at once.
    owner = from_ip(make_web, "203.0.113.20")
    assert sign_in(owner, PASSWORD) == 303
    assert owner.session_cookie() is not None
    # One typo by the owner first changes nothing either.
    other_device = from_ip(make_web, "203.0.113.21")
    assert sign_in(other_device, "typo") == 401
    assert sign_in(other_device, PASSWORD) == 303
    portal_clock.advance(minutes=16)
    assert sign_in(attacker, PASSWORD) == 303


def test_the_address_ceiling_slows_a_botnet_but_not_the_owner(portal: Mailgate, make_web):
    active_customer(portal)
    bots = [from_ip(make_web, f"198.51.100.{n}") for n in range(1, 51)]
    with ThreadPoolExecutor(8) as pool:  # 50 failures from 50 IPs: the address's ceiling
        codes = list(pool.map(lambda bot: sign_in(bot, "guess"), bots))
    assert codes == [401] * 50
    # Now each client gets one try on this address per window instead of five...
    assert sign_in(bots[0], "another guess") == 429
    fresh_bot = from_ip(make_web, "192.0.2.99")
    assert sign_in(fresh_bot, "guess") == 401
    assert sign_in(fresh_bot, "guess again") == 429
    # ...and a client with no failure on it (the owner) still gets in with the right password.
    assert sign_in(from_ip(make_web, "203.0.113.20"), PASSWORD) == 303
    # Other addresses are not slowed down by it.
    active_customer(portal, "paul@autre.example")
    assert sign_in(from_ip(make_web, "192.0.2.99"), PASSWORD, "paul@autre.example") == 303


# -- CSRF ------------------------------------------------------------------------------------


def test_csrf_token_of_another_browser_is_refused(helpdesk: Desk, web: Web, make_web):
    ticket_id = customer_with_ticket(helpdesk, web)
    # Another browser (the attacker's): its anonymous cookie and the token made for it.
    attacker = make_web()
    attacker_token = hidden_fields(attacker.get("/login").text)["csrf"]
    attacker_cookie = attacker.http.cookies["mg_csrf"]
    # Planted in the victim's browser (cookie tossing from a sibling host, or plain http),
    # that pair must not stand in for the victim's session token.
    web.http.cookies.set("mg_csrf", attacker_cookie, domain="127.0.0.1", path="/")
    forged = web.post(f"/tickets/{ticket_id}/delete", data={"csrf": attacker_token})
    assert forged.status_code == 403
    # The token of another signed-in session is refused as well.
    paul = make_web()
    paul_ticket = customer_with_ticket(helpdesk, paul, sender="Paul <paul@autre.example>")
    paul_token = hidden_fields(paul.get("/tickets/new").text)["csrf"]
    assert web.post(f"/tickets/{ticket_id}/delete", data={"csrf": paul_token}).status_code == 403
    # Signed out: a token made for another anonymous cookie is refused.
    stranger = make_web()
    stranger.get("/login")
    refused = stranger.post("/password/forgot", data={"csrf": attacker_token, "email": JEAN})
    assert refused.status_code == 403
    # Nothing happened, and this browser's own token still works.
    assert [t["id"] for t in helpdesk.tickets() if t["id"] == ticket_id] == [ticket_id]
    own = hidden_fields(web.get(f"/tickets/{ticket_id}/delete").text)["csrf"]
    assert web.post(f"/tickets/{paul_ticket}/delete", data={"csrf": own}).status_code == 404
    assert web.post(f"/tickets/{ticket_id}/delete", data={"csrf": own}).status_code == 303


# -- ids out of range ------------------------------------------------------------------------

BAD_IDS = [
    "0",
    "-1",
    "2147483647",  # the largest id an INTEGER column holds: looked up, names nothing
    "2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999",
    "9" * 5000,  # more digits than Python's int() accepts by default
    "%D9%A3",  # an Arabic-Indic digit: int() would take it
    "1.0",
    "abc",
]


def id_routes(mg: Mailgate) -> list[tuple[str, str]]:
    app = portal_asgi(mg.app)
    found = []
    for route in app.routes:
        if isinstance(route, Route) and "_id" in route.path:
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, route.path))
    return found


def test_out_of_range_ids_answer_404(portal: Mailgate, helpdesk: Desk, web: Web):
    ticket_id = customer_with_ticket(helpdesk, web)
    routes = id_routes(portal)
    assert len(routes) >= 5  # ticket, reply, delete (GET, POST), attachment
    csrf = hidden_fields(web.get("/tickets/new").text)["csrf"]
    for method, path in routes:
        params = re.findall(r"\{(\w+)[^}]*\}", path)
        for bad in BAD_IDS:
            for param in (p for p in params if p.endswith("_id")):
                values = {"ticket_id": str(ticket_id), "attachment_id": "1", "name": "x.txt"}
                values[param] = bad
                url = re.sub(r"\{(\w+)[^}]*\}", lambda m, v=values: v[m.group(1)], path)
                data = {"csrf": csrf, "body": "x"} if method == "POST" else None
                answer = web.http.request(method, url, data=data)
                assert answer.status_code == 404, (method, url[:80], answer.status_code)
    # Still there, still signed in.
    assert web.get(f"/tickets/{ticket_id}").status_code == 200
    with portal.app.db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.customer_deleted_at is None


# -- mails a person asks for -----------------------------------------------------------------


def test_reset_page_says_when_the_link_went_and_when_to_ask_again(
    portal: Mailgate, make_web, portal_clock: FixedClock, sink: SmtpSink
):
    active_customer(portal)
    web = make_web(**{"Accept-Language": "en"})
    first_at = portal_clock.now()
    sent = web.submit("/password/forgot", {"email": JEAN})
    assert sent.status_code == 200
    assert f"we sent it a link at {paris(first_at, 'en')}" in alert(sent)
    assert outbox_count(portal, "password_reset", JEAN) == 1
    sink.wait_kind("password_reset", to=JEAN)
    portal_clock.advance(minutes=5)
    again = web.submit("/password/forgot", {"email": JEAN})
    assert again.status_code == 429
    assert f"already sent it a link at {paris(first_at, 'en')}" in alert(again)
    assert "check your spam folder" in alert(again)
    assert f"ask again after {paris(first_at + 15 * MINUTE, 'en')}" in alert(again)
    assert int(again.headers["retry-after"]) == 10 * 60 + 1
    assert outbox_count(portal, "password_reset", JEAN) == 1  # nothing promised, none queued
    portal_clock.advance(minutes=11)
    assert web.submit("/password/forgot", {"email": JEAN}).status_code == 200
    assert outbox_count(portal, "password_reset", JEAN) == 2
    # Three an hour at most: the fourth waits for the first to leave the hour.
    portal_clock.advance(minutes=16)
    assert web.submit("/password/forgot", {"email": JEAN}).status_code == 200
    portal_clock.advance(minutes=16)
    fourth = web.submit("/password/forgot", {"email": JEAN})
    assert fourth.status_code == 429
    assert f"ask again after {paris(first_at + 60 * MINUTE, 'en')}" in alert(fourth)
    assert outbox_count(portal, "password_reset", JEAN) == 3


def test_reset_pages_are_the_same_for_unknown_addresses(
    portal: Mailgate, make_web, portal_clock: FixedClock
):
    active_customer(portal)
    known, unknown = make_web(), make_web()
    pages = []
    for _ in range(2):  # "sent", then "already sent at ..."
        pages.append(
            (
                known.submit("/password/forgot", {"email": JEAN}),
                unknown.submit("/password/forgot", {"email": "nobody@client.example"}),
            )
        )
        portal_clock.advance(minutes=3)
    for of_known, of_unknown in pages:
        assert of_known.status_code == of_unknown.status_code
        assert alert(of_known) == alert(of_unknown)
        assert of_known.headers.get("retry-after") == of_unknown.headers.get("retry-after")
    assert "Si un compte existe" in alert(pages[1][0])  # fr: the config's default locale
    assert outbox_count(portal, "password_reset") == 1


def test_sign_up_mail_is_not_sent_twice_and_the_page_says_so(
    portal: Mailgate, web: Web, portal_clock: FixedClock
):
    form = {"name": "Zoé", "email": "zoe@client.example"}
    first_at = portal_clock.now()
    done = web.submit("/signup", {**form, "altcha": solve_captcha(web)})
    assert done.status_code == 200
    assert f"à {paris(first_at)}, nous avons envoyé un e-mail" in alert(done)
    portal_clock.advance(minutes=2)
    again = web.submit("/signup", {**form, "altcha": solve_captcha(web)})
    assert again.status_code == 429
    assert f"déjà envoyé un e-mail à cette adresse à {paris(first_at)}" in alert(again)
    assert f"après {paris(first_at + 15 * MINUTE)}" in alert(again)
    assert outbox_count(portal, "activation", "zoe@client.example") == 1
