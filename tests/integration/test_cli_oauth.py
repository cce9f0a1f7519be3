"""`mailgate oauth authorize NAME` (issue 16) against the loopback provider: it prints the URL,
the person signs in there, the provider sends the browser back to the command's loopback
listener (or the person pastes the address), and the refresh token lands in its 0600 file,
good for the token endpoint; then `check-config` logs in to the Dovecot mailbox with it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from mailgate import config as config_mod
from mailgate.adapters.oauth_tokens import OAuthTokens, mailbox_tokens
from tests.support.peers import ROOT, free_port

if TYPE_CHECKING:
    from tests.support.oauth_provider import DovecotOAuth, OAuthMailbox, OAuthProvider

pytest_plugins = ["tests.support.oauth_provider"]


@pytest.fixture
def box(dovecot_oauth: DovecotOAuth) -> OAuthMailbox:
    return dovecot_oauth.take()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "oauth" / "box.refresh_token"


@pytest.fixture
def config_extra(oauth_provider: OAuthProvider, box: OAuthMailbox, token_file: Path) -> str:
    oauth_provider.user(box.email)
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    return box.toml(oauth_provider, token_file) + f'oauth_redirect_uri = "{redirect}"\n'


def authorize(config_path: Path, name: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "mailgate", "--config", str(config_path), "oauth", "authorize",
         name, "--timeout", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env=env,
    )  # fmt: skip


def the_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("http"):
            return line.strip()
    raise AssertionError(f"no URL printed: {proc.communicate(timeout=10)}")


@pytest.mark.parametrize("way_back", ["redirect", "pasted"])
def test_authorize_stores_a_working_refresh_token(
    config_path: Path, oauth_provider: OAuthProvider, box: OAuthMailbox, token_file: Path,
    way_back: str,
):  # fmt: skip
    proc = authorize(config_path, box.local)
    url = the_url(proc)
    assert url.startswith(oauth_provider.authorize_url) and "code_challenge=" in url

    back = oauth_provider.consent(url, box.email)  # the person signs in at the provider
    if way_back == "redirect":
        assert httpx.get(back, timeout=10).status_code == 200  # the browser follows it
        out, err = proc.communicate(timeout=60)
    else:  # the browser ran elsewhere: the person pastes where it ended
        out, err = proc.communicate(back + "\n", timeout=60)

    assert proc.returncode == 0, err
    assert f"refresh token stored in {token_file} (mode 0600)" in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    refresh = token_file.read_text().strip()
    assert refresh not in out + err  # never printed
    cfg = config_mod.load(config_path)
    tokens = mailbox_tokens(cfg.imap.mailboxes[0])
    assert isinstance(tokens, OAuthTokens)
    assert (oauth_provider.userinfo(tokens.access_token()) or {})["email"] == box.email

    check = subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(config_path), "check-config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    (line,) = [x for x in check.stdout.splitlines() if " imap " in x]
    assert line.startswith("ok   imap") and "login ok with OAuth2 (XOAUTH2)" in line


def test_authorize_says_what_the_provider_refused(config_path: Path, box: OAuthMailbox):
    proc = authorize(config_path, box.local)
    the_url(proc)
    back = "http://127.0.0.1/callback?error=access_denied&error_description=no+thanks"
    _out, err = proc.communicate(back + "\n", timeout=60)
    assert proc.returncode == 69
    assert "the provider said access_denied: no thanks" in err


def test_authorize_an_unknown_name(config_path: Path):
    proc = authorize(config_path, "nobody")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 64 and "no OAuth2 mailbox named 'nobody'" in err
