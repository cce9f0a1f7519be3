"""Sign-in with OpenID Connect providers (issue 14), over real HTTP against real providers on
loopback: oidc-provider-mock (Authlib's server side) and a provider of our own that signs what
a real one never should. Every refusal: a page that says why, and nobody signed in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from mailgate import config as config_mod
from mailgate.errors import ConfigError
from mailgate.store.models import Account, OidcIdentity, OidcLogin
from tests.support.conversation import Desk
from tests.support.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    ForgeProvider,
    MockProvider,
    forge_provider,
    mock_provider,
    silent_port,
)
from tests.support.peers import Mailgate
from tests.support.portal_web import (
    PASSWORD,
    Web,
    customer_with_ticket,
    path_of,
    reset_link,
    set_password,
)

pytest_plugins = ["tests.support.portal"]

JEAN = "jean@client.example"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    with mock_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def forge() -> Iterator[ForgeProvider]:
    with forge_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def silent() -> Iterator[int]:
    with silent_port() as port:
        yield port


@pytest.fixture(autouse=True)
def forge_mode(forge: ForgeProvider) -> Iterator[None]:
    forge.mode, forge.claims = "good", {}
    yield
    forge.mode = "good"


@pytest.fixture
def config_extra(mock: MockProvider, forge: ForgeProvider, silent: int) -> str:
    return f"""
[auth]
agents_password = false

[[auth.oidc]]
name = "corp"
label = "Corp SSO"
issuer = "{mock.issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
users = ["customers", "agents"]
timeout_seconds = 5

[[auth.oidc]]
name = "strict"
issuer = "{mock.issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
allowed_domains = ["client.example", "helpdesk.example"]
users = ["customers"]

[[auth.oidc]]
name = "forge"
issuer = "{forge.issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
timeout_seconds = 1

[[auth.oidc]]
name = "down"
issuer = "http://127.0.0.1:{silent}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
timeout_seconds = 0.5
"""


def start(web: Web, provider: str, next_path: str = "") -> str:
    """Click the button: the provider's authorization URL."""
    response = web.get(f"/auth/{provider}/login" + (f"?next={next_path}" if next_path else ""))
    assert response.status_code == 303, response.text
    return response.headers["location"]


def mock_sign_in(web: Web, mock: MockProvider, sub: str, provider: str = "corp") -> httpx.Response:
    """The whole round trip at oidc-provider-mock; the callback's answer."""
    callback = mock.authorize(start(web, provider), sub)
    return web.get(path_of(callback))


def forge_sign_in(web: Web) -> httpx.Response:
    authorize = httpx.get(start(web, "forge"), timeout=10)
    assert authorize.status_code == 302
    return web.get(path_of(authorize.headers["location"]))


def accounts(portal: Mailgate) -> list[dict[str, object]]:
    listing: list[dict[str, object]] = json.loads(portal.cli("account", "list", "--json").stdout)
    return listing


def identities(portal: Mailgate) -> list[tuple[str, str, int]]:
    with portal.app.db.read() as session:
        rows = session.exec(select(OidcIdentity)).all()
        return [(r.provider, r.subject, r.account_id) for r in rows]


def refused(response: httpx.Response, web: Web, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.text, response.text
    assert "/login" in response.text
    assert web.session_cookie() is None
    assert web.get("/tickets").status_code == 303  # still signed out


# -- signing in --------------------------------------------------------------------------


def test_pages_show_one_button_per_provider(portal: Mailgate, web: Web) -> None:
    login = web.get("/login?next=/tickets/3").text
    for name in ("corp", "strict", "forge", "down"):
        assert f'href="/auth/{name}/login?next=/tickets/3"' in login
    assert "Se connecter avec Corp SSO" in login
    assert "Se connecter avec Strict" in login
    signup = web.get("/signup").text
    assert "S&#39;inscrire avec Corp SSO" in signup or "S'inscrire avec Corp SSO" in signup


def test_unknown_address_creates_an_active_account(
    portal: Mailgate, web: Web, mock: MockProvider
) -> None:
    mock.user("new-1", "Marie@Client.example", name="Marie Curie")
    done = mock_sign_in(web, mock, "new-1")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == web.base_url + "/tickets"
    assert web.session_cookie() is not None
    assert web.get("/tickets").status_code == 200
    (row,) = [a for a in accounts(portal) if a["email"] == "marie@client.example"]
    assert row["active"] is True and row["role"] == "customer" and row["name"] == "Marie Curie"
    assert identities(portal) == [("corp", "new-1", row["id"])]
    # Signing out and in again: the same account, no second one.
    web.submit("/tickets", {}, action="/logout")
    assert mock_sign_in(web, mock, "new-1").status_code == 303
    assert len([a for a in accounts(portal) if a["email"] == "marie@client.example"]) == 1


def test_mail_account_is_activated_and_opened(
    portal: Mailgate, helpdesk: Desk, web: Web, mock: MockProvider
) -> None:
    helpdesk.open_ticket()
    assert [a["active"] for a in accounts(portal) if a["email"] == JEAN] == [False]
    mock.user("jean-corp", JEAN)
    callback = mock.authorize(start(web, "corp", "/tickets/1"), "jean-corp")
    done = web.get(path_of(callback))
    assert done.status_code == 303
    assert done.headers["location"] == web.base_url + "/tickets/1"
    assert "Imprimante en panne" in web.get("/tickets").text
    assert [a["active"] for a in accounts(portal) if a["email"] == JEAN] == [True]


def test_password_account_signs_in_with_a_provider_too(
    portal: Mailgate, helpdesk: Desk, web: Web, make_web, mock: MockProvider
) -> None:
    customer_with_ticket(helpdesk, web)
    mock.user("jean-pw", JEAN)
    other = make_web()
    assert mock_sign_in(other, mock, "jean-pw").status_code == 303
    assert "Imprimante en panne" in other.get("/tickets").text
    # Password sign-in still works, and the first browser is still signed in.
    third = make_web()
    assert third.submit("/login", {"email": JEAN, "password": PASSWORD}).status_code == 303
    assert web.get("/tickets").status_code == 200


def test_unverified_address_is_refused(portal: Mailgate, web: Web, mock: MockProvider) -> None:
    mock.user("unverified-1", "paul@client.example", verified=False)
    refused(mock_sign_in(web, mock, "unverified-1"), web, 403, "pas confirmé votre adresse")
    assert not [a for a in accounts(portal) if a["email"] == "paul@client.example"]
    assert identities(portal) == []


def test_unverified_address_does_not_open_the_existing_account(
    portal: Mailgate, helpdesk: Desk, web: Web, mock: MockProvider
) -> None:
    helpdesk.open_ticket()
    mock.user("jean-unverified", JEAN, verified=False)
    refused(mock_sign_in(web, mock, "jean-unverified"), web, 403, "pas confirmé")
    assert [a["active"] for a in accounts(portal) if a["email"] == JEAN] == [False]


def test_address_outside_allowed_domains_is_refused(
    portal: Mailgate, web: Web, make_web, mock: MockProvider
) -> None:
    mock.user("outsider-1", "eve@elsewhere.example")
    refused(mock_sign_in(web, mock, "outsider-1", "strict"), web, 403, "ce domaine")
    assert not [a for a in accounts(portal) if a["email"] == "eve@elsewhere.example"]
    mock.user("insider-1", "luc@client.example")
    assert mock_sign_in(make_web(), mock, "insider-1", "strict").status_code == 303


def test_linked_by_subject_then_never_by_address(
    portal: Mailgate, helpdesk: Desk, web: Web, make_web, mock: MockProvider
) -> None:
    """The account at the provider that linked first keeps opening it; another account at
    the same provider claiming the same verified address is refused (a recycled mailbox),
    and a linked provider account whose address changes still opens its own account only."""
    helpdesk.open_ticket()
    mock.user("jean-first", JEAN)
    assert mock_sign_in(web, mock, "jean-first").status_code == 303
    (jean_id,) = [a["id"] for a in accounts(portal) if a["email"] == JEAN]

    mock.user("attacker-1", JEAN)
    attacker = make_web()
    refused(mock_sign_in(attacker, mock, "attacker-1"), attacker, 403, "autre compte")

    mock.user("jean-first", "jean.new@client.example")
    moved = make_web()
    assert mock_sign_in(moved, mock, "jean-first").status_code == 303
    assert "Imprimante en panne" in moved.get("/tickets").text
    assert not [a for a in accounts(portal) if a["email"] == "jean.new@client.example"]
    assert identities(portal) == [("corp", "jean-first", jean_id)]


def test_a_refusal_by_the_person_at_the_provider(
    portal: Mailgate, web: Web, mock: MockProvider
) -> None:
    callback = mock.authorize(start(web, "corp"), "", deny=True)
    assert "error=access_denied" in callback
    refused(web.get(path_of(callback)), web, 502, "ne vous a pas connecté")


# -- the flow: state, browser, single use ----------------------------------------------------


def test_callback_without_a_request_is_refused(portal: Mailgate, web: Web) -> None:
    refused(web.get("/auth/corp/callback?code=abc&state=def"), web, 400, "Recommencez")
    refused(web.get("/auth/corp/callback"), web, 400, "Recommencez")


def test_state_works_once_and_in_its_browser_only(
    portal: Mailgate, web: Web, make_web, mock: MockProvider
) -> None:
    mock.user("replay-1", "replay@client.example")
    callback = path_of(mock.authorize(start(web, "corp"), "replay-1"))
    # Another browser (the link sent to a victim, say): no flow cookie, no sign-in; and the
    # attempt used the state up.
    thief = make_web()
    refused(thief.get(callback), thief, 400, "Recommencez")
    refused(web.get(callback), web, 400, "Recommencez")

    callback = path_of(mock.authorize(start(web, "corp"), "replay-1"))
    assert web.get(callback).status_code == 303
    web.submit("/tickets", {}, action="/logout")
    refused(web.get(callback), web, 400, "Recommencez")  # replayed
    with portal.app.db.read() as session:
        assert session.exec(select(OidcLogin)).all() == []


def test_a_flow_expires(portal: Mailgate, web: Web, mock: MockProvider, portal_clock) -> None:
    mock.user("slow-1", "slow@client.example")
    url = start(web, "corp")
    portal_clock.advance(minutes=11)
    refused(web.get(path_of(mock.authorize(url, "slow-1"))), web, 400, "Recommencez")


def test_a_state_from_another_provider_is_refused(
    portal: Mailgate, web: Web, mock: MockProvider
) -> None:
    mock.user("cross-1", "cross@client.example")
    callback = path_of(mock.authorize(start(web, "corp"), "cross-1"))
    refused(web.get(callback.replace("/auth/corp/", "/auth/strict/")), web, 400, "Recommencez")


def test_unknown_provider_is_not_found(portal: Mailgate, web: Web) -> None:
    assert web.get("/auth/nobody/login").status_code == 404
    assert web.get("/auth/nobody/callback?state=x&code=y").status_code == 404


# -- the ID token's checks (our own provider signs what it is told) ------------------------


def test_forge_provider_good_token_signs_in_with_pkce(
    portal: Mailgate, web: Web, forge: ForgeProvider
) -> None:
    done = forge_sign_in(web)  # the forge checks the PKCE verifier against the challenge
    assert done.status_code == 303, done.text
    assert web.get("/tickets").status_code == 200


@pytest.mark.parametrize(
    "mode",
    ["bad_signature", "other_audience", "expired", "old_nonce"],
)
def test_a_token_that_fails_a_check_is_refused(
    portal: Mailgate, web: Web, make_web, forge: ForgeProvider, mode: str
) -> None:
    if mode == "old_nonce":
        assert forge_sign_in(make_web()).status_code == 303  # a nonce to replay
    forge.mode = mode
    refused(forge_sign_in(web), web, 502, "pas pu être vérifiée")
    assert not [a for a in accounts(portal) if a["email"] == "forge@client.example" and
                mode != "old_nonce"]  # fmt: skip


def test_an_issuer_other_than_the_configured_one_is_refused(
    portal: Mailgate, web: Web, forge: ForgeProvider
) -> None:
    forge.claims = {"iss": "https://accounts.google.com"}
    refused(forge_sign_in(web), web, 502, "pas pu être vérifiée")


def test_keys_rotate(portal: Mailgate, web: Web, make_web, forge: ForgeProvider) -> None:
    assert forge_sign_in(web).status_code == 303
    before = forge.jwks_fetches
    forge.mode = "rotated"
    other = make_web()
    assert forge_sign_in(other).status_code == 303  # unknown kid: the JWKS fetched again
    assert forge.jwks_fetches == before + 1


def test_an_error_from_the_token_endpoint(portal: Mailgate, web: Web, forge: ForgeProvider) -> None:
    forge.mode = "error"
    refused(forge_sign_in(web), web, 502, "ne vous a pas connecté")


def test_an_unreachable_provider_answers_quickly(
    portal: Mailgate, web: Web, forge: ForgeProvider
) -> None:
    began = time.monotonic()
    refused(web.get("/auth/down/login"), web, 504, "ne répond pas")
    assert time.monotonic() - began < 5
    forge.mode = "hang"  # the token endpoint accepts and never answers (timeout_seconds = 1)
    began = time.monotonic()
    refused(forge_sign_in(web), web, 504, "ne répond pas")
    assert time.monotonic() - began < 6


# -- agents ---------------------------------------------------------------------------------


def test_agents_sign_in_through_a_provider_only(
    portal: Mailgate, web: Web, make_web, mock: MockProvider
) -> None:
    with portal.app.db.write() as session:  # `agent add`, on the portal's clock
        agent = portal.app.accounts.add_agent(session, "alice@helpdesk.example", "Alice Martin")
        link = portal.app.accounts.activation_url(agent)
    # An agent who set a password (the activation link) cannot use it: agents_password = false.
    assert set_password(make_web(), link).status_code == 303
    browser = make_web()
    wrong = browser.submit("/login", {"email": "alice@helpdesk.example", "password": "nope" * 3})
    assert wrong.status_code == 401
    right = browser.submit("/login", {"email": "alice@helpdesk.example", "password": PASSWORD})
    assert right.status_code == 403 and "compte d&#39;entreprise" in right.text
    assert browser.session_cookie() is None
    # A customers-only provider will not open an agent's account either.
    mock.user("alice-strict", "alice@helpdesk.example")
    refused(mock_sign_in(web, mock, "alice-strict", "strict"), web, 403, "ne peut pas")
    mock.user("alice-corp", "alice@helpdesk.example")
    assert mock_sign_in(web, mock, "alice-corp").status_code == 303
    assert web.get("/tickets").status_code == 200


# -- the account page -------------------------------------------------------------------


def test_account_page_lists_and_unlinks_while_another_way_in_remains(
    portal: Mailgate, web: Web, sink, mock: MockProvider
) -> None:
    mock.user("lina-1", "lina@client.example")
    assert mock_sign_in(web, mock, "lina-1").status_code == 303
    assert 'href="/account/sign-in"' in web.get("/tickets").text  # the name in the header
    page = web.get("/account/sign-in")
    assert page.status_code == 200
    assert "Corp SSO : lina@client.example" in page.text
    assert "seul moyen de connexion" in page.text  # no password: no unlink button
    last = web.submit("/account/sign-in", {"provider": "corp"}, action="/account/sign-in/unlink")
    assert last.status_code == 409
    assert identities(portal)

    # With a password, the provider may go.
    web.submit("/password/forgot", {"email": "lina@client.example"})
    assert set_password(web, reset_link(sink, "lina@client.example")).status_code == 303
    done = web.submit("/account/sign-in", {"provider": "corp"}, action="/account/sign-in/unlink")
    assert done.status_code == 303
    assert "ne vous connecte plus" in web.get("/account/sign-in?done=1").text
    assert identities(portal) == []
    # Signed out, the page sends to sign in.
    web.submit("/tickets", {}, action="/logout")
    assert web.get("/account/sign-in").status_code == 303


# -- configuration and check-config -------------------------------------------------------


def test_google_preset_needs_only_client_id_and_secret(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    (tmp_path / "google-secret").write_text("s3cret\n")
    doc = {
        "auth": {
            "oidc": [
                {"name": "google", "client_id": "x.apps.googleusercontent.com",
                 "client_secret_file": "google-secret"}
            ]
        }
    }  # fmt: skip
    cfg = config_mod.from_dict(doc, path, {})
    (google,) = cfg.auth.oidc
    assert google.issuer == "https://accounts.google.com"
    assert google.label == "Google"
    assert google.client_secret_file == str(tmp_path / "google-secret")
    assert google.users == ["customers", "agents"]
    for bad, key in (
        ({"name": "google", "client_id": "x"}, "client_secret"),
        ({"name": "corp", "client_id": "x", "client_secret": "y"}, "issuer"),
        ({"name": "c", "issuer": "http://idp.example", "client_id": "x", "client_secret": "y"},
         "issuer"),
        ({"name": "Bad Name", "issuer": "https://a.example", "client_id": "x",
          "client_secret": "y"}, "name"),
        ({"name": "g", "issuer": "https://a.example", "client_id": "x", "client_secret": "y",
          "users": ["admins"]}, "users"),
        ({"name": "g", "issuer": "https://a.example", "client_id": "x", "client_secret": "y",
          "allowed_domains": ["not a domain"]}, "allowed_domains"),
        ({"name": "google", "client_id": "x", "client_secret": "y", "colour": "red"}, "colour"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"auth\.oidc\[0\]\.{key}"):
            config_mod.from_dict({"auth": {"oidc": [bad]}}, path, {})
    with pytest.raises(ConfigError, match=r"auth\.agents_password"):
        config_mod.from_dict({"auth": {"agents_password": False}}, path, {})


def test_check_config_fetches_each_discovery_document(portal: Mailgate) -> None:
    result = portal.cli("check-config", check=False)
    out = result.stdout.decode()
    assert "ok   oidc corp http://localhost:" in out and "discovery ok" in out
    assert "ok   oidc forge" in out
    assert "FAIL oidc down" in out and "timeout" in out
    assert result.returncode != 0
    with portal.app.db.read() as session:  # check-config signed nobody in
        assert session.exec(select(Account)).all() == []
