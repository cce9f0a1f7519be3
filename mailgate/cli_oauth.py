"""`mailgate oauth authorize NAME` (issue 16): obtain a refresh token for an OAuth2 mailbox (or,
with NAME `outbound`, for the smarthost) and store it, mode 0600, where the config says.

- The device-code flow (RFC 8628) where the provider offers it (Microsoft; a generic provider
  with `oauth_device_url`): prints a URL and a code to enter there from any browser, then
  polls the token endpoint at the interval the provider asks for.
- Otherwise the authorization-code flow with PKCE (Google; a generic provider): prints the URL
  to open, then waits for the provider's redirect to `oauth_redirect_uri` on this machine (a
  one-request listener when the URI is on loopback) or for the address the browser ended on,
  pasted on standard input (when the browser runs on another machine).
- With the client credentials grant there is nothing to authorize: it obtains a token to show
  the grant works.

Tokens are never printed; the answer says where the refresh token went.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import queue
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from mailgate import config as config_mod

if TYPE_CHECKING:  # imported where used: every CLI call registers this command (issue 11)
    from http.server import HTTPServer

    import httpx

    from mailgate.adapters.oauth_tokens import OAuthSettings

EX_OK, EX_USAGE, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG = 0, 64, 69, 75, 78
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def register(sub: Any, add: Any) -> None:
    """The `oauth` command group, on the top-level subparsers of cli.parser()."""
    group = sub.add_parser("oauth", help="OAuth2 for IMAP mailboxes and the smarthost")
    oauth = group.add_subparsers(dest="sub", required=True)
    auth = add("authorize", cmd_authorize, "obtain and store a refresh token", oauth)
    auth.add_argument("name", help="the mailbox's name (default: its username), or `outbound`")
    auth.add_argument(
        "--no-device",
        action="store_true",
        help="use the browser redirect even where the provider offers the device-code flow",
    )
    auth.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the person (600)"
    )


def settings_for(cfg: config_mod.Config, name: str) -> OAuthSettings | None:

    from mailgate.adapters.oauth_tokens import (
        OAuthSettings,
    )

    for box in cfg.imap.mailboxes:
        if box.name == name and box.auth == "oauth2":
            return OAuthSettings.from_config(box.name, box.username, box)
    if name == "outbound" and cfg.outbound.auth == "oauth2":
        return OAuthSettings.from_config("outbound", cfg.outbound.username, cfg.outbound)
    return None


def cmd_authorize(args: argparse.Namespace) -> int:
    import httpx

    from mailgate.adapters.oauth_tokens import (
        OAuthTokens,
        TokenError,
        write_refresh_token,
    )

    cfg = config_mod.load(args.config)
    settings = settings_for(cfg, args.name)
    if settings is None:
        names = [b.name for b in cfg.imap.mailboxes if b.auth == "oauth2"]
        names += ["outbound"] if cfg.outbound.auth == "oauth2" else []
        known = ", ".join(names) or "none"
        print(f"mailgate: no OAuth2 mailbox named {args.name!r} (known: {known})", file=sys.stderr)
        return EX_USAGE
    http = httpx.Client(timeout=30.0)
    try:
        if settings.grant == "client_credentials":
            tokens = OAuthTokens(settings, http=http)
            tokens.access_token()
            left = int((tokens.expires_at or time.time()) - time.time())
            print(f"{settings.name}: client credentials grant, nothing to store; a token was "
                  f"issued (valid {left} s)")  # fmt: skip
            return EX_OK
        if settings.device_url and not args.no_device:
            body = device_flow(http, settings, args.timeout)
        elif settings.authorize_url:
            body = code_flow(http, settings, args.timeout)
        else:
            print(f"mailgate: {settings.name}: no authorization endpoint: set "
                  "oauth_authorize_url (or oauth_device_url)", file=sys.stderr)  # fmt: skip
            return EX_CONFIG
    except TokenError as exc:
        print(f"mailgate: {settings.name}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if exc.temporary else EX_UNAVAILABLE
    except AuthorizationFailed as exc:
        print(f"mailgate: {settings.name}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    finally:
        http.close()
    refresh = body.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        print(f"mailgate: {settings.name}: the provider issued no refresh token (ask for "
              "offline access: Microsoft's offline_access scope, Google's consent prompt)",
              file=sys.stderr)  # fmt: skip
        return EX_UNAVAILABLE
    write_refresh_token(settings.refresh_token_file, refresh)
    print(f"{settings.name}: refresh token stored in {settings.refresh_token_file} (mode 0600)")
    return EX_OK


class AuthorizationFailed(Exception):
    """The person refused, the provider answered with an error, or nobody came in time."""


# -- device-code flow (RFC 8628) ---------------------------------------------------------------


def device_flow(http: httpx.Client, s: OAuthSettings, timeout: float) -> dict[str, Any]:
    import httpx

    from mailgate.adapters.oauth_tokens import (
        TokenError,
        token_request,
    )

    try:
        answer = http.post(s.device_url, data={"client_id": s.client_id, "scope": s.scope})
        start = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise AuthorizationFailed(f"device authorization endpoint: {exc}") from None
    if answer.status_code != 200 or "device_code" not in start:
        raise AuthorizationFailed(f"device authorization endpoint refused: {start}")
    url = start.get("verification_uri_complete") or start.get("verification_uri")
    print(f"Open {url} and enter the code {start.get('user_code')}", flush=True)
    interval = float(start.get("interval") or 5)
    deadline = time.monotonic() + min(timeout, float(start.get("expires_in") or timeout))
    form = {"grant_type": DEVICE_GRANT, "device_code": start["device_code"]}
    while time.monotonic() < deadline:
        time.sleep(interval)  # the protocol's pace: the provider says how often to ask
        try:
            return token_request(http, s, form)
        except TokenError as exc:
            if exc.error == "slow_down":
                interval += 5
            elif exc.error != "authorization_pending":
                raise
    raise AuthorizationFailed("nobody entered the code in time")


# -- authorization-code flow with PKCE ---------------------------------------------------------


def authorization_url(s: OAuthSettings, state: str, verifier: str) -> str:

    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "client_id": s.client_id,
        "redirect_uri": s.redirect_uri,
        "response_type": "code",
        "scope": s.scope,
        "state": state,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "login_hint": s.username,
        **dict(s.authorize_params),
    }
    sep = "&" if "?" in s.authorize_url else "?"
    return f"{s.authorize_url}{sep}{urlencode(params)}"


def code_flow(http: httpx.Client, s: OAuthSettings, timeout: float) -> dict[str, Any]:

    from mailgate.adapters.oauth_tokens import (
        token_request,
    )

    state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    answers: queue.Queue[str] = queue.Queue()
    server = _listen(s.redirect_uri, answers)
    print("Open this address in a browser and sign in as the mailbox's account:", flush=True)
    print(authorization_url(s, state, verifier), flush=True)
    where = f"waiting for the redirect to {s.redirect_uri}" if server else "waiting"
    print(f"({where}; or paste the address the browser ended on, then Enter)", flush=True)
    reader = threading.Thread(target=_read_stdin, args=(answers,), daemon=True)
    reader.start()
    try:
        try:
            back = answers.get(timeout=timeout)
        except queue.Empty:
            raise AuthorizationFailed("nobody came back from the provider in time") from None
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    query = parse_qs(urlsplit(back.strip()).query) if "?" in back else {"code": [back.strip()]}
    if "error" in query:
        detail = query.get("error_description", query["error"])[0]
        raise AuthorizationFailed(f"the provider said {query['error'][0]}: {detail}")
    if "state" in query and query["state"][0] != state:
        raise AuthorizationFailed("the answer is for another authorization (state differs)")
    code = query.get("code", [""])[0]
    if not code:
        raise AuthorizationFailed("no code in the answer")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": s.redirect_uri,
        "code_verifier": verifier,
    }
    return token_request(http, s, form)


def _read_stdin(answers: queue.Queue[str]) -> None:
    for line in sys.stdin:
        if line.strip():
            answers.put(line)
            return


def _listen(redirect_uri: str, answers: queue.Queue[str]) -> HTTPServer | None:
    """A one-shot listener for the provider's redirect, when the URI points at this machine."""
    url = urlsplit(redirect_uri)
    if url.scheme != "http" or url.hostname not in LOOPBACK:
        return None
    path = url.path or "/"
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the URL holds the code
            pass

        def do_GET(self) -> None:
            if urlsplit(self.path).path != path:
                self.send_error(404)
                return
            answers.put(f"{redirect_uri}?{urlsplit(self.path).query}")
            body = b"mailgate: authorization received, you can close this page.\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    host = "127.0.0.1" if url.hostname == "localhost" else url.hostname or "127.0.0.1"
    try:
        server = HTTPServer((host, url.port or 80), Handler)
    except OSError as exc:
        print(f"(cannot listen on {host}:{url.port or 80}: {exc})", file=sys.stderr)
        return None
    threading.Thread(target=server.serve_forever, name="oauth-redirect", daemon=True).start()
    return server
