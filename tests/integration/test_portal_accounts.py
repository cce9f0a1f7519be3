"""Portal accounts over real HTTP: activation from the mailed link, sign-in and sign-out,
forgotten password and reset links (single use, one hour, dead after a password change),
sign-up with the proof-of-work captcha. Mail is read from the real SMTP sink."""

from __future__ import annotations

from mailgate.clock import FixedClock
from tests.support.conversation import CUSTOMER, Desk
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import (
    PASSWORD,
    Web,
    activation_link,
    customer_with_ticket,
    hidden_fields,
    outbox_count,
    path_of,
    reset_link,
    set_password,
    solve_captcha,
)

pytest_plugins = ["tests.support.portal"]

JEAN = "jean@client.example"


def test_activation_link_sets_password_and_signs_in(helpdesk: Desk, web: Web, sink: SmtpSink):
    helpdesk.open_ticket()
    url = activation_link(sink, JEAN)
    assert url.startswith(web.base_url + "/activate/")
    page = web.get(path_of(url))
    assert page.status_code == 200
    assert JEAN in page.text and 'name="password_confirm"' in page.text

    done = set_password(web, url)
    assert done.status_code == 303
    assert done.headers["location"] == web.base_url + "/tickets?welcome=1"
    dashboard = web.get("/tickets")
    assert dashboard.status_code == 200
    assert "Imprimante en panne" in dashboard.text

    # Single use: the account is active now, the link is dead.
    again = web.get(path_of(url))
    assert again.status_code == 404
    assert "/password/forgot" in again.text


def test_activation_refuses_short_or_mismatched_passwords(helpdesk: Desk, web: Web, sink: SmtpSink):
    helpdesk.open_ticket()
    path = path_of(activation_link(sink, JEAN))
    short = web.submit(path, {"password": "short", "password_confirm": "short"})
    assert short.status_code == 400
    assert "au moins 10 caractères" in short.text
    mismatch = web.submit(path, {"password": PASSWORD, "password_confirm": PASSWORD + "x"})
    assert mismatch.status_code == 400
    assert 'aria-invalid="true"' in mismatch.text
    # Nothing was used up: the link still works.
    assert set_password(web, path).status_code == 303


def test_activation_link_expires_after_72_hours(
    helpdesk: Desk, web: Web, sink: SmtpSink, portal_clock: FixedClock
):
    helpdesk.open_ticket()
    url = activation_link(sink, JEAN)
    portal_clock.advance(hours=71, minutes=59)
    assert web.get(path_of(url)).status_code == 200
    portal_clock.advance(minutes=2)
    assert web.get(path_of(url)).status_code == 404
    # Posting the form kept open in another tab does not work either.
    csrf = hidden_fields(web.get("/login").text)["csrf"]
    refused = web.post(
        path_of(url), data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}
    )
    assert refused.status_code == 404
    assert web.session_cookie() is None


def test_sign_in_and_out(helpdesk: Desk, web: Web, make_web):
    customer_with_ticket(helpdesk, web)
    browser = make_web()
    assert browser.get("/tickets").headers["location"].endswith("/login?next=/tickets")
    wrong = browser.submit("/login", {"email": JEAN, "password": "not the password"})
    assert wrong.status_code == 401
    assert "incorrect" in wrong.text
    assert browser.session_cookie() is None

    ok = browser.submit("/login?next=/tickets/1", {"email": JEAN.upper(), "password": PASSWORD})
    assert ok.status_code == 303
    assert ok.headers["location"] == browser.base_url + "/tickets/1"
    assert browser.get("/tickets/1").status_code == 200

    out = browser.submit("/tickets", {}, action="/logout")
    assert out.status_code == 303
    assert out.headers["location"] == browser.base_url + "/login"
    assert browser.get("/tickets").status_code == 303


def test_login_next_never_leaves_the_site(helpdesk: Desk, web: Web, make_web):
    customer_with_ticket(helpdesk, web)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        browser = make_web()
        done = browser.submit(f"/login?next={target}", {"email": JEAN, "password": PASSWORD})
        assert done.headers["location"] == browser.base_url + "/tickets", target


def test_mail_only_account_is_activated_through_forgot_password(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    """The Zapiens guide: a customer who only ever mailed us sets a password via "forgot"."""
    helpdesk.open_ticket()
    sent = web.submit("/password/forgot", {"email": JEAN})
    assert sent.status_code == 200
    url = reset_link(sink, JEAN)
    assert url.startswith(web.base_url + "/password/reset/")
    assert set_password(web, url).status_code == 303
    assert "Imprimante en panne" in web.get("/tickets").text
    listing = portal.cli("account", "list", "--json").stdout.decode()
    assert '"active": true' in listing


def test_forgot_password_answers_the_same_for_unknown_addresses(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    helpdesk.open_ticket()
    known = web.submit("/password/forgot", {"email": JEAN})
    unknown = web.submit("/password/forgot", {"email": "nobody@client.example"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    sink.wait_kind("password_reset", to=JEAN)
    assert outbox_count(portal, "password_reset", "nobody@client.example") == 0


def test_reset_link_works_once(helpdesk: Desk, web: Web, sink: SmtpSink, make_web):
    customer_with_ticket(helpdesk, web)
    browser = make_web()
    browser.submit("/password/forgot", {"email": JEAN})
    url = reset_link(sink, JEAN)
    assert browser.get(path_of(url)).status_code == 200  # looking at it uses nothing
    assert set_password(browser, url, "a brand new passphrase").status_code == 303
    assert browser.get(path_of(url)).status_code == 404
    replay = make_web().submit("/login", {"email": JEAN, "password": "a brand new passphrase"})
    assert replay.status_code == 303


def test_reset_link_expires_after_one_hour(
    helpdesk: Desk, web: Web, sink: SmtpSink, portal_clock: FixedClock
):
    customer_with_ticket(helpdesk, web)
    web.submit("/password/forgot", {"email": JEAN})
    url = reset_link(sink, JEAN)
    portal_clock.advance(minutes=59)
    assert web.get(path_of(url)).status_code == 200
    portal_clock.advance(minutes=2)
    expired = web.get(path_of(url))
    assert expired.status_code == 404
    assert "une heure" in expired.text


def test_reset_links_die_after_any_password_change(
    helpdesk: Desk, web: Web, sink: SmtpSink, portal_clock: FixedClock
):
    customer_with_ticket(helpdesk, web)
    web.submit("/password/forgot", {"email": JEAN})
    first = reset_link(sink, JEAN)
    portal_clock.advance(minutes=16)  # one link per 15 minutes
    web.submit("/password/forgot", {"email": JEAN})
    second = reset_link(sink, JEAN, count=2)
    assert set_password(web, second, "another good passphrase").status_code == 303
    assert web.get(path_of(first)).status_code == 404


def test_activation_link_is_refused_as_a_reset_link(helpdesk: Desk, web: Web, sink: SmtpSink):
    helpdesk.open_ticket()
    token = activation_link(sink, JEAN).rsplit("/", 1)[1]
    assert web.get(f"/password/reset/{token}").status_code == 404
    web.submit("/password/forgot", {"email": JEAN})
    reset_token = reset_link(sink, JEAN).rsplit("/", 1)[1]
    assert web.get(f"/activate/{reset_token}").status_code == 404
    assert web.get(f"/activate/{token}").status_code == 200


def test_sign_up_with_captcha_sends_an_activation_mail(portal: Mailgate, web: Web, sink: SmtpSink):
    page = web.get("/signup")
    assert "<altcha-widget" in page.text and "/static/captcha.js" in page.text
    done = web.submit(
        "/signup",
        {"name": "Marie Curie", "email": "marie@client.example", "altcha": solve_captcha(web)},
    )
    assert done.status_code == 200
    url = activation_link(sink, "marie@client.example")
    assert set_password(web, url).status_code == 303
    assert web.get("/tickets").status_code == 200
    accounts = portal.cli("account", "list", "--json").stdout.decode()
    assert "Marie Curie" in accounts


def test_sign_up_needs_a_solved_unused_captcha(portal: Mailgate, web: Web):
    form = {"name": "Bot", "email": "bot@client.example"}
    missing = web.submit("/signup", form)
    assert missing.status_code == 400
    forged = web.submit("/signup", {**form, "altcha": "eyJmb28iOiAiYmFyIn0="})
    assert forged.status_code == 400
    solved = solve_captcha(web)
    assert web.submit("/signup", {**form, "altcha": solved}).status_code == 200
    replayed = web.submit("/signup", {**form, "email": "bot2@client.example", "altcha": solved})
    assert replayed.status_code == 400
    assert outbox_count(portal, "activation", "bot@client.example") == 1
    assert outbox_count(portal, "activation", "bot2@client.example") == 0


def test_sign_up_of_a_known_address_looks_the_same(
    portal: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    customer_with_ticket(helpdesk, web)
    anonymous = Web(web.base_url)
    try:
        known = anonymous.submit(
            "/signup", {"name": "Jean", "email": JEAN, "altcha": solve_captcha(anonymous)}
        )
        new = anonymous.submit(
            "/signup",
            {"name": "Paul", "email": "paul@client.example", "altcha": solve_captcha(anonymous)},
        )
    finally:
        anonymous.close()
    assert known.status_code == new.status_code == 200
    assert known.text == new.text
    # The active account gets a way back in, not a second activation.
    assert reset_link(sink, JEAN)
    assert outbox_count(portal, "activation", JEAN) == 1


def test_pages_follow_the_customer_language(helpdesk: Desk, web: Web, make_web):
    english = make_web(**{"Accept-Language": "en-GB,en;q=0.9,fr;q=0.5"})
    assert "Forgot your password?" in english.get("/login").text
    french = make_web(**{"Accept-Language": "fr-CH, en;q=0.8"})
    assert "Avez-vous oublié votre mot de passe ?" in french.get("/login").text
    assert '<html lang="fr">' in make_web(**{"Accept-Language": "de"}).get("/login").text

    # Signed in, the account's language wins over the browser's.
    customer_with_ticket(
        helpdesk,
        english,
        sender="Ann Smith <ann@client.example>",
        headers={"Accept-Language": "en-US"},
    )
    assert "My activities" in english.get("/tickets").text
    customer_with_ticket(helpdesk, web, sender=CUSTOMER)  # a French customer ...
    web.http.headers["Accept-Language"] = "en"  # ... on an English browser
    assert "Mes activités" in web.get("/tickets").text
