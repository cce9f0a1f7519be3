"""The OpenID Connect client (issue 14): discovery, the provider's keys, the authorization URL
(code flow with PKCE S256, `state` and `nonce`), the code exchange and the ID token's checks.

Authlib does the protocol (its httpx OAuth2 client builds the URL and redeems the code; its
`CodeIDToken` claims and joserfc, the JOSE library it is built on, check the token): nothing
here parses or verifies a JWT by hand. What this module adds is the policy:

- `iss` must be the configured issuer (and discovery must say the same), `aud` must name our
  client id (and `azp` too when there are several audiences), `exp` in the future, `iat` not
  in the future nor older than ID_TOKEN_MAX_AGE, `nonce` the one this sign-in sent; the
  signature must verify with an asymmetric algorithm the provider announces (never `none`,
  never HMAC with the client secret) against its JWKS.
- Keys rotate: a token signed by a key id we do not know refetches the JWKS once (at most
  every KEYS_REFETCH_SECONDS, so junk tokens cannot make us hammer the provider).
- Every call has the provider's `timeout_seconds`; any failure becomes ProviderFailure with a
  reason (unreachable, provider_error, bad_token), so the page says what happened at once.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from mailgate import logs
from mailgate.clock import Clock
from mailgate.config import OidcProvider
from mailgate.services.oidc import Claims, ProviderFailure, Refusal

with warnings.catch_warnings():
    # Authlib >= 1.7 prefers the `httpx2` fork and says so when it finds plain httpx, which
    # it keeps supporting; mailgate uses httpx.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
    from authlib.oidc.core import CodeIDToken

DISCOVERY = "/.well-known/openid-configuration"
METADATA_TTL_SECONDS = 3600.0
KEYS_REFETCH_SECONDS = 10.0
LEEWAY_SECONDS = 120  # clock skew between us and the provider
ID_TOKEN_MAX_AGE = 600  # an ID token issued longer ago than this is not a fresh sign-in
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
ASYMMETRIC += ("EdDSA",)
MAX_RESPONSE_BYTES = 1024 * 1024


class OidcClient:
    """One provider. Holds its discovery document and keys between sign-ins (one event loop:
    the portal's)."""

    def __init__(
        self,
        provider: OidcProvider,
        client_secret: str,
        redirect_uri: str,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = provider.name
        self.issuer = provider.issuer
        self.client_id = provider.client_id
        self.client_secret = client_secret
        self.scope = " ".join(provider.scopes)
        self.redirect_uri = redirect_uri
        self.timeout = httpx.Timeout(provider.timeout_seconds)
        self.clock = clock
        self.transport = transport
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._forced_at = -KEYS_REFETCH_SECONDS

    # -- what the sign-in calls ----------------------------------------------------------

    async def authorization_url(self, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        async with self._oauth() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=state,
                nonce=nonce,
                code_verifier=code_verifier,
            )
        return str(url)

    async def redeem(self, code: str, code_verifier: str, nonce: str) -> Claims:
        """The code for tokens, and the ID token checked; the person's claims."""
        metadata = await self.metadata()
        try:
            async with self._oauth() as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
        except OAuthError as exc:
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"token endpoint: {exc.error}") from None
        except httpx.TimeoutException:
            raise ProviderFailure(Refusal.UNREACHABLE, "token endpoint: timeout") from None
        except httpx.HTTPError as exc:
            raise _failure("token endpoint", exc) from None
        except ValueError as exc:  # not JSON
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"token endpoint: {exc}") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderFailure(Refusal.PROVIDER_ERROR, "token response without id_token")
        access_token = token.get("access_token")
        return await self._verify(id_token, nonce, access_token if access_token else None)

    async def check(self) -> str:
        """For `check-config`: discovery answers and agrees, and the keys load."""
        metadata = await self.metadata(fresh=True)
        keys = await self._key_set(force=True)
        return (
            f"{self.issuer}: discovery ok, {len(keys.keys)} signing keys ({metadata['jwks_uri']})"
        )

    # -- discovery and keys --------------------------------------------------------------

    async def metadata(self, fresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if not fresh and self._metadata and now - self._metadata_at < METADATA_TTL_SECONDS:
            return self._metadata
        document = await self._get_json(self.issuer + DISCOVERY, "discovery")
        if document.get("issuer") != self.issuer:
            raise ProviderFailure(
                Refusal.PROVIDER_ERROR,
                f"discovery names issuer {document.get('issuer')!r}, not {self.issuer!r}",
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(key)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise ProviderFailure(Refusal.PROVIDER_ERROR, f"discovery: no {key}")
        self._metadata, self._metadata_at = document, now
        return document

    async def _key_set(self, force: bool = False) -> KeySet:
        now = time.monotonic()
        if self._keys is not None and not force:
            return self._keys
        if self._keys is not None and now - self._forced_at < KEYS_REFETCH_SECONDS:
            return self._keys  # refetched for an unknown key a moment ago already
        if force:
            self._forced_at = now
        metadata = await self.metadata()
        document = await self._get_json(metadata["jwks_uri"], "jwks")
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"jwks: {exc}") from None
        self._keys = keys
        logs.info("oidc.keys_loaded", provider=self.name, keys=len(keys.keys))
        return keys

    async def _verify(self, id_token: str, nonce: str, access_token: str | None) -> Claims:
        metadata = await self.metadata()
        announced = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in announced if a in ASYMMETRIC]
        if not algorithms:
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"no usable algorithm in {announced}")
        registry = JWSRegistry(algorithms=algorithms, strict_check_header=False)
        keys = await self._key_set()
        try:
            try:
                token = jwt.decode(id_token, keys, registry=registry)
            except InvalidKeyIdError:  # a key we do not know yet: the provider rotated
                keys = await self._key_set(force=True)
                token = jwt.decode(id_token, keys, registry=registry)
            params = {"nonce": nonce, "client_id": self.client_id}
            if access_token:
                params["access_token"] = access_token
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "value": self.issuer},
                    "aud": {"essential": True, "value": self.client_id},
                    "nonce": {"essential": True, "value": nonce},
                    "sub": {"essential": True},
                },
                params,
            )
            now = int(self.clock.now().timestamp())
            claims.validate(now=now, leeway=LEEWAY_SECONDS)
        except (JoseError, ValueError, TypeError) as exc:
            raise ProviderFailure(Refusal.BAD_TOKEN, f"{type(exc).__name__}: {exc}") from None
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or issued < now - ID_TOKEN_MAX_AGE - LEEWAY_SECONDS:
            raise ProviderFailure(Refusal.BAD_TOKEN, "iat: issued too long ago")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise ProviderFailure(Refusal.BAD_TOKEN, "sub: missing or longer than 255")
        email = claims.get("email")
        verified = claims.get("email_verified")
        # Some providers send "true" as a string; anything else is not a yes.
        return Claims(
            subject=subject,
            email=email if isinstance(email, str) else "",
            email_verified=verified is True or verified == "true",
            name=str(claims.get("name") or "")[:200],
        )

    # -- HTTP ------------------------------------------------------------------------------

    def _oauth(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scope,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=self.timeout,
            transport=self.transport,
            follow_redirects=False,
            trust_env=False,
        )

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout, transport=self.transport, trust_env=False
            ) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise ProviderFailure(Refusal.UNREACHABLE, f"{what}: timeout ({url})") from None
        except httpx.HTTPError as exc:
            raise _failure(what, exc) from None
        if response.status_code != 200:
            raise ProviderFailure(
                Refusal.PROVIDER_ERROR, f"{what}: HTTP {response.status_code} ({url})"
            )
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"{what}: response too large")
        try:
            document = response.json()
        except ValueError:
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"{what}: not JSON ({url})") from None
        if not isinstance(document, dict):
            raise ProviderFailure(Refusal.PROVIDER_ERROR, f"{what}: not a JSON object")
        return document


def _failure(what: str, exc: httpx.HTTPError) -> ProviderFailure:
    """Cannot connect, connection reset, DNS: the provider is out of reach."""
    if isinstance(exc, httpx.TransportError):
        return ProviderFailure(Refusal.UNREACHABLE, f"{what}: {type(exc).__name__}: {exc}")
    return ProviderFailure(Refusal.PROVIDER_ERROR, f"{what}: {type(exc).__name__}: {exc}")


def read_secret(provider: OidcProvider) -> str:
    """The client secret, inline or from its file (read once, at start-up)."""
    if provider.client_secret:
        return provider.client_secret
    from pathlib import Path

    from mailgate.errors import ConfigError

    try:
        return Path(provider.client_secret_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"auth.oidc {provider.name}: client_secret_file: {exc.strerror} "
            f"({provider.client_secret_file})"
        ) from None
