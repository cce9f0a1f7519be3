"""Sign-in with a provider in a real browser (issue 14): headless Chromium clicks "Se connecter
avec Google" on the sign-in page, signs in at the provider (oidc-provider-mock on loopback,
configured as `google` with its issuer pointed there), and comes back signed in to the account
its first mail made, now active. A refusal (the address not verified) shows its page and signs
nobody in. Nothing leaves the machine: any request off loopback is aborted.

The sign-in page with its buttons goes to $MAILGATE_SCREENSHOTS/login-oidc.png when set
(`MAILGATE_SCREENSHOTS=docs/screenshots pytest tests/e2e/test_oidc_browser.py`), else to tmp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.browser import CHROMIUM, chromium_page, screenshots_folder
from tests.support.conversation import CUSTOMER, Desk, addr
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, MockProvider, mock_provider
from tests.support.peers import Mailgate

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

pytest_plugins = ["tests.support.portal"]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run)"
    ),
]

playwright_api = pytest.importorskip("playwright.sync_api")
JEAN = addr(CUSTOMER)


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    with mock_provider() as provider:
        yield provider


@pytest.fixture
def config_extra(mock: MockProvider) -> str:
    return f"""
[[auth.oidc]]
name = "google"
issuer = "{mock.issuer}"   # the preset's issuer is Google's; here, the provider on loopback
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"

[[auth.oidc]]
name = "lengow"
label = "Lengow"
issuer = "{mock.issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
"""


@pytest.fixture
def page(portal: Mailgate) -> Iterator[object]:
    portal_host = urlsplit(portal.config.portal.base_url).netloc

    def loopback_only(context: object) -> None:
        # The provider's page links a stylesheet on a CDN: nothing may leave the machine.
        context.route(  # type: ignore[attr-defined]
            "**/*",
            lambda route: (
                route.continue_()
                if urlsplit(route.request.url).hostname in LOOPBACK
                else route.abort()
            ),
        )

    # Console errors count on our pages only: the provider's page is not ours.
    with chromium_page(
        1200, 720, prepare=loopback_only, ours=lambda page: portal_host in page.url
    ) as page:
        yield page


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshots_folder(tmp_path)


def test_sign_in_with_google_in_chromium(
    portal: Mailgate, helpdesk: Desk, page, mock: MockProvider, shots: Path
) -> None:
    base = portal.config.portal.base_url
    helpdesk.open_ticket()  # the account exists, never activated
    mock.user("jean-google-1", JEAN, name="Jean Dupont")

    page.goto(base + "/login")
    google = page.get_by_role("link", name="Se connecter avec Google")
    assert google.is_visible()
    assert page.get_by_role("link", name="Se connecter avec Lengow").is_visible()
    page.screenshot(path=str(shots / "login-oidc.png"), full_page=True)

    google.click()
    page.wait_for_url(mock.issuer + "/oauth2/authorize*", wait_until="domcontentloaded")
    page.fill("input[name=sub]", "jean-google-1")
    page.click("button:has-text('Authorize')")
    page.wait_for_url(base + "/tickets")
    assert "Imprimante en panne" in page.content()
    assert page.get_by_role("button", name="Se déconnecter").is_visible()
    listing = json.loads(portal.cli("account", "list", "--json").stdout)
    assert [a["active"] for a in listing if a["email"] == JEAN] == [True]

    page.goto(base + "/account/sign-in")
    assert "Google : jean@client.example" in page.content()
    assert page.problems == []


def test_a_refusal_in_chromium(portal: Mailgate, page, mock: MockProvider) -> None:
    base = portal.config.portal.base_url
    mock.user("unverified-browser", "paul@client.example", verified=False)
    page.goto(base + "/login")
    page.get_by_role("link", name="Se connecter avec Lengow").click()
    page.wait_for_url(mock.issuer + "/oauth2/authorize*", wait_until="domcontentloaded")
    page.fill("input[name=sub]", "unverified-browser")
    page.click("button:has-text('Authorize')")
    page.wait_for_url(base + "/auth/lengow/callback*")
    assert "Connexion refusée" in page.content()
    assert "pas confirmé votre adresse" in page.content()
    page.goto(base + "/tickets")
    assert page.url.startswith(base + "/login")  # nobody signed in
    # The refusal page itself answers 403, which Chromium reports; nothing else may fail.
    assert [p for p in page.problems if "status of 403" not in p] == []
