"""The TOML configuration: one frozen dataclass per section, strictly validated.

Unknown keys and bad values raise ConfigError naming the key (`inbound.smtp_listen`), so a
typo stops start-up instead of silently running on a default. Relative paths are resolved
against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailgate.errors import ConfigError

_MAIL_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "mail"


def mail_locales() -> tuple[str, ...]:
    """The languages mailgate speaks: the folders of templates/mail/ (issue 15: adding one is
    data only). The help centre's article languages and the CLI's `--locale` come from here."""
    return tuple(sorted(p.name for p in _MAIL_TEMPLATES.iterdir() if p.is_dir()))


DEFAULT_CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9-]{1,32}$"
DEFAULT_CUSTOMER_ID_FORMAT = {
    "fr": "1 à 32 lettres, chiffres ou tirets, tel qu'il figure dans votre espace client",
    "en": "1 to 32 letters, digits or dashes, as shown in your account page",
}

# A value shown to people (issue 15): one text for every language, or one per locale,
# `{ fr = "Id client", en = "Customer ID" }`.
Localized = str | dict[str, str]


def localized(value: Localized, locale: str, fallback: str) -> str:
    """The text of `value` for `locale`: its own, else the `fallback` locale's, else any."""
    if isinstance(value, str):
        return value
    return value.get(locale) or value.get(fallback) or next(iter(value.values()), "")


DEFAULT_CONFIG = "config/mailgate.toml"
# Each class below has a docstring: for one without, dataclass() builds one with
# inspect.signature at import, which every `mailgate` process (a `deliver` a mail) pays.
ADDR_RE = re.compile(r"^[^@\s<>\"()\[\],;:\\]+@[A-Za-z0-9.-]+$")


@dataclass(frozen=True)
class MailgateSection:
    """[mailgate]: our name, where data lives, the secret, default locale and time zone."""

    hostname: str = "localhost"
    data_dir: Path = Path("var")
    secret_key: str = ""
    secret_key_file: str = ""  # "" with no secret_key: data_dir/secret, created on first start
    default_locale: str = "fr"
    default_timezone: str = "Europe/Paris"
    warm_commands: bool = True  # serve keeps a process that runs admin commands (cli_warm.py)


@dataclass(frozen=True)
class DatabaseSection:
    """[database]: the SQLAlchemy URL (MAILGATE_DATABASE_URL overrides it)."""

    url: str = ""


@dataclass(frozen=True)
class InboundSection:
    """[inbound]: the SMTP/LMTP listeners and the limits on what they take."""

    smtp_listen: str = "127.0.0.1:2525"
    lmtp_listen: str = ""
    max_message_bytes: int = 41943040
    max_received_headers: int = 50
    parse_timeout_seconds: float = 30.0
    parse_workers: int = 2
    # SMTP/LMTP sessions in this many child processes of `serve` (0: in serve itself); serve
    # keeps the one database writer, which then has serve's GIL to itself under load.
    smtp_processes: int = 1
    max_recipients: int = 100  # RCPT per transaction; more get 452 (RFC 5321 4.5.3.1.8)
    # Message bytes all DATA transactions in flight may hold; a new DATA beyond it gets 452.
    max_inflight_bytes: int = 268435456
    # A Postfix socketmap answering "is this address ours?" (relay_recipient_maps); "" = off.
    postfix_map_listen: str = ""


@dataclass(frozen=True)
class AddressesSection:
    """[addresses]: the support address and the category addresses."""

    support: str = "support@example.com"
    categories: dict[str, str] = field(default_factory=dict)


OAUTH_PROVIDERS = ("microsoft", "google", "generic")
OAUTH_GRANTS = ("refresh_token", "client_credentials")


@dataclass(frozen=True)
class OAuthKeys:
    """The `oauth_*` keys shared by `[[imap.mailboxes]]` and `[outbound]` (`auth = "oauth2"`)."""

    oauth_provider: str = ""  # "microsoft", "google" or "generic"
    oauth_token_url: str = ""  # generic (the presets know theirs)
    oauth_authorize_url: str = ""  # generic: for `mailgate oauth authorize` (code flow)
    oauth_device_url: str = ""  # generic: device authorization endpoint, when there is one
    oauth_client_id: str = ""
    oauth_client_secret: str = ""
    oauth_client_secret_file: str = ""
    oauth_tenant: str = ""  # microsoft: the tenant id or domain
    oauth_scope: str = ""  # default: the provider's IMAP/SMTP scope
    oauth_grant: str = "refresh_token"  # or "client_credentials" (app-only access)
    oauth_refresh_token_file: str = ""  # default: data_dir/oauth/NAME.refresh_token
    oauth_client_auth: str = "basic"  # client secret sent as HTTP Basic, or "post" (in the form)
    oauth_sasl: str = "xoauth2"  # or "oauthbearer" (RFC 7628)
    oauth_redirect_uri: str = "http://localhost:8400/"  # `oauth authorize` listens there


@dataclass(frozen=True)
class OutboundSection(OAuthKeys):
    """[outbound]: how mail leaves (transport, smarthost auth) and its caps."""

    auth: str = "none"  # or "oauth2": AUTH XOAUTH2 at the smarthost (then username is required)
    username: str = ""
    transport: str = "maildir:var/sent"
    from_name: Localized = "Support"  # or { fr = "Assistance", en = "Support" }
    max_attempts: int = 12
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    auto_per_hour: int = 5
    auto_per_day: int = 10
    first_contact_per_hour: int = 200  # mail to never-heard-from addresses, all together
    agent_notifications_per_hour: int = 30  # per agent; beyond, one digest a period
    notification_attachment_bytes: int = 10 * 1024 * 1024  # customer files attached, in all
    connections: int = 2  # SMTP connections kept to the smarthost; maildir: files written at once
    # A due row is leased to one sender this long; one whose sender died is taken over after it.
    lease_seconds: float = 60.0


@dataclass(frozen=True)
class PortalSection:
    """[portal]: the web portal's address and the request form's fields."""

    listen: str = "127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8025"
    customer_id_label: Localized = field(
        default_factory=lambda: {"fr": "Identifiant client", "en": "Customer ID"}
    )
    customer_id_pattern: str = DEFAULT_CUSTOMER_ID_PATTERN
    # What the pattern asks for, in words, for the form's error (issue 15); "" with the
    # default pattern: DEFAULT_CUSTOMER_ID_FORMAT.
    customer_id_format: Localized = ""
    problem_categories: list[Localized] = field(
        default_factory=lambda: [
            {"fr": "Compte", "en": "Account"},
            {"fr": "Facturation", "en": "Billing"},
            {"fr": "Problème technique", "en": "Technical issue"},
        ]
    )
    broadcasters: list[Localized] = field(default_factory=list)


@dataclass(frozen=True)
class TicketsSection:
    """[tickets]: when pending tickets are solved and solved ones closed."""

    auto_resolve_after_days: int = 7
    close_after_days: int = 28


@dataclass(frozen=True)
class HelpCentreSection:
    """[helpcentre]: articles offered in the confirmation mail."""

    suggest_in_confirmation: int = 3  # articles listed in the confirmation mail (0: none)


@dataclass(frozen=True)
class SecuritySection:
    """[security]: sender authentication and verification mail held back."""

    authserv_id: str = ""
    require_dmarc_for_threading: bool = False
    verify_sender: str = "auto"  # "auto": SPF/DKIM/DMARC ourselves when no authserv_id; "off"
    dns_resolver: str = ""  # "host:port"; "" = the system's resolver
    dns_timeout_seconds: float = 2.0  # all DNS work for one message, together
    hold_verification_mail: bool = True  # third-party sign-up codes and links: quarantined
    verification_senders: list[str] = field(default_factory=list)  # more no-reply local parts
    verification_phrases: list[str] = field(default_factory=list)  # more phrases (regexes)


@dataclass(frozen=True)
class MetricsSection:
    """[metrics]: the Prometheus listener ("" = off)."""

    listen: str = ""


@dataclass(frozen=True)
class InstanceSection:
    """Several `serve` processes on one database (issue 17)."""

    id: str = ""  # unique per running process; "" = hostname:pid
    # Jobs and IMAP mailboxes are held by one instance at a time, for this long unless
    # renewed (every third of it); when the holder dies another takes over after it.
    lease_seconds: float = 30.0


@dataclass(frozen=True)
class BlobsSection:
    """[blobs]: where raw mail and attachments are kept."""

    # "file:PATH" (default: data_dir/blobs) or "s3://BUCKET/PREFIX?endpoint=http://HOST:PORT"
    url: str = ""


@dataclass(frozen=True)
class ImapMailbox(OAuthKeys):
    """One `[[imap.mailboxes]]` entry: a mailbox polled for mail to support."""

    name: str = ""  # `mailgate oauth authorize NAME`; defaults to the username
    auth: str = "password"  # or "oauth2"
    host: str = ""
    port: int = 993
    security: str = "tls"
    username: str = ""
    password: str = ""
    password_file: str = ""
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = "Failed"
    address: str = ""
    poll_seconds: float = 60.0


@dataclass(frozen=True)
class ImapSection:
    """The `[[imap.mailboxes]]` polled (none by default)."""

    mailboxes: list[ImapMailbox] = field(default_factory=list)


GOOGLE_ISSUER = "https://accounts.google.com"
OIDC_USERS = ("customers", "agents")


@dataclass(frozen=True)
class OidcProvider:
    """One `[[auth.oidc]]` provider: "Sign in with ..." (OpenID Connect, issue 14)."""

    name: str = ""  # in URLs: /auth/NAME/login; "google" presets the issuer
    label: str = ""  # the button's text; default: the name, capitalised
    issuer: str = ""  # discovery at ISSUER/.well-known/openid-configuration
    client_id: str = ""
    client_secret: str = ""
    client_secret_file: str = ""
    scopes: list[str] = field(default_factory=lambda: ["openid", "email", "profile"])
    allowed_domains: list[str] = field(default_factory=list)  # [] = any verified address
    users: list[str] = field(default_factory=lambda: list(OIDC_USERS))
    timeout_seconds: float = 10.0  # each call to the provider (discovery, keys, token)


@dataclass(frozen=True)
class AuthSection:
    """[auth]: how agents may sign in, and the `[[auth.oidc]]` providers."""

    agents_password: bool = True  # false: agents sign in through a provider only
    oidc: list[OidcProvider] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated (`load`)."""

    path: Path
    mailgate: MailgateSection
    database: DatabaseSection
    inbound: InboundSection
    addresses: AddressesSection
    outbound: OutboundSection
    portal: PortalSection
    tickets: TicketsSection
    security: SecuritySection
    metrics: MetricsSection
    imap: ImapSection
    auth: AuthSection = field(default_factory=AuthSection)
    helpcentre: HelpCentreSection = field(default_factory=HelpCentreSection)
    instance: InstanceSection = field(default_factory=InstanceSection)
    blobs: BlobsSection = field(default_factory=BlobsSection)

    @property
    def data_dir(self) -> Path:
        return self.mailgate.data_dir

    @property
    def support_address(self) -> str:
        return self.addresses.support

    @property
    def secret_file(self) -> Path:
        """Where the secret is kept when the config gives none inline."""
        return Path(self.mailgate.secret_key_file or self.data_dir / "secret")


_SECTIONS: dict[str, type] = {
    "mailgate": MailgateSection,
    "database": DatabaseSection,
    "inbound": InboundSection,
    "addresses": AddressesSection,
    "outbound": OutboundSection,
    "portal": PortalSection,
    "tickets": TicketsSection,
    "security": SecuritySection,
    "metrics": MetricsSection,
    "imap": ImapSection,
    "auth": AuthSection,
    "helpcentre": HelpCentreSection,
    "instance": InstanceSection,
    "blobs": BlobsSection,
}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a path string, got {value!r}")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{key}: expected a table of strings")
        return dict(value)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if dataclasses.is_dataclass(item_hint):
            return [_build(f"{key}[{i}]", v, item_hint) for i, v in enumerate(value)]
        return [_coerce(f"{key}[{i}]", v, item_hint) for i, v in enumerate(value)]
    if hint == Localized:
        if isinstance(value, str):
            return value
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items())
        ):
            # A typo ("dr") would otherwise leave that language on another's words, silently.
            unknown = sorted(set(value) - set(mail_locales()))
            if unknown:
                known = ", ".join(mail_locales())
                raise ConfigError(f"{key}.{unknown[0]}: expected a language of {known}")
            return dict(value)
        raise ConfigError(
            f'{key}: expected a string or a table per locale {{ fr = "…", en = "…" }}'
        )
    if isinstance(hint, types.UnionType):  # pragma: no cover - no optional keys yet
        return value
    raise ConfigError(f"{key}: unsupported type")


def _build(prefix: str, table: Any, cls: type) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"{prefix}.{key}: unknown key")
    values = {k: _coerce(f"{prefix}.{k}", v, hints[k]) for k, v in table.items()}
    return cls(**values)


def _resolve(base: Path, value: str | Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (base / path).resolve()


def _check_listen(key: str, value: str) -> None:
    if value == "" or value.startswith("unix:"):
        return
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT or unix:/path, got {value!r}")


def _resolve_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            return prefix + str(_resolve(base, rest))
    return url


def _validate(cfg: Config) -> None:
    m = cfg.mailgate
    # The languages are the folders of templates/mail/ (issue 15: a third one is data only).
    if (
        not re.fullmatch(r"[a-z]{2,3}", m.default_locale)
        or not (_MAIL_TEMPLATES / m.default_locale).is_dir()
    ):
        known = ", ".join(mail_locales())
        raise ConfigError(f"mailgate.default_locale: expected one of {known}")
    if m.secret_key and m.secret_key_file:
        raise ConfigError("mailgate.secret_key: set secret_key or secret_key_file, not both")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", m.hostname):
        raise ConfigError("mailgate.hostname: expected a host name")
    if not ADDR_RE.match(cfg.addresses.support) or "+" in cfg.addresses.support.split("@")[0]:
        raise ConfigError("addresses.support: expected a plain address without '+'")
    for addr in cfg.addresses.categories:
        if not ADDR_RE.match(addr):
            raise ConfigError(f"addresses.categories.{addr}: not an e-mail address")
    _check_listen("inbound.smtp_listen", cfg.inbound.smtp_listen)
    _check_listen("inbound.lmtp_listen", cfg.inbound.lmtp_listen)
    _check_listen("inbound.postfix_map_listen", cfg.inbound.postfix_map_listen)
    _check_listen("portal.listen", cfg.portal.listen)
    _check_listen("metrics.listen", cfg.metrics.listen)
    if not cfg.blobs.url.startswith(("file:", "s3://")):
        raise ConfigError('blobs.url: expected "file:PATH" or "s3://BUCKET/PREFIX?endpoint=..."')
    if cfg.instance.lease_seconds < 1:
        raise ConfigError("instance.lease_seconds: must be at least 1")
    if cfg.outbound.lease_seconds < 2:
        raise ConfigError("outbound.lease_seconds: must be at least 2")
    if len(cfg.instance.id) > 200:
        raise ConfigError("instance.id: at most 200 characters")
    if cfg.inbound.parse_timeout_seconds <= 0:
        raise ConfigError("inbound.parse_timeout_seconds: must be more than 0")
    if cfg.inbound.parse_workers < 1:
        raise ConfigError("inbound.parse_workers: must be at least 1")
    if not 0 <= cfg.inbound.smtp_processes <= 32:
        raise ConfigError("inbound.smtp_processes: must be between 0 and 32")
    if cfg.inbound.max_message_bytes < 1024:
        raise ConfigError("inbound.max_message_bytes: must be at least 1024")
    t = cfg.outbound.transport
    if not (t.startswith("maildir:") or re.fullmatch(r"smtp://[^:/]+(:\d+)?/?", t)):
        raise ConfigError(
            f"outbound.transport: expected maildir:PATH or smtp://host:port, got {t!r}"
        )
    if not 1 <= cfg.outbound.connections <= 32:
        raise ConfigError("outbound.connections: expected 1 to 32")
    if not cfg.portal.base_url.startswith(("http://", "https://")):
        raise ConfigError("portal.base_url: must start with http:// or https://")
    if cfg.tickets.auto_resolve_after_days < 1 or cfg.tickets.close_after_days < 1:
        raise ConfigError("tickets: days must be at least 1")
    if not 0 <= cfg.helpcentre.suggest_in_confirmation <= 10:
        raise ConfigError("helpcentre.suggest_in_confirmation: expected 0 to 10")
    try:
        re.compile(cfg.portal.customer_id_pattern)
    except re.error as exc:
        raise ConfigError(f"portal.customer_id_pattern: {exc}") from None
    _validate_security(cfg)
    _validate_auth(cfg)
    _validate_oauth_section(cfg)
    if not 1 <= cfg.inbound.max_recipients <= 1000:
        raise ConfigError("inbound.max_recipients: expected 1 to 1000 (RFC 5321 asks for 100)")
    if cfg.inbound.max_inflight_bytes < cfg.inbound.max_message_bytes:
        raise ConfigError(
            "inbound.max_inflight_bytes: must be at least inbound.max_message_bytes, or no "
            "message of the largest allowed size could ever be received"
        )
    fronts = max(1, cfg.inbound.smtp_processes)
    if cfg.inbound.max_inflight_bytes // fronts < cfg.inbound.max_message_bytes:
        raise ConfigError(
            f"inbound.max_inflight_bytes: each of the {fronts} smtp_processes gets a "
            f"{fronts}th of it, which must be at least inbound.max_message_bytes (else a mail "
            "of that size, or one that does not announce its size, is always refused)"
        )
    if cfg.outbound.first_contact_per_hour < 1:
        raise ConfigError("outbound.first_contact_per_hour: must be at least 1")
    if cfg.outbound.agent_notifications_per_hour < 1:
        raise ConfigError("outbound.agent_notifications_per_hour: must be at least 1")
    for i, box in enumerate(cfg.imap.mailboxes):
        key = f"imap.mailboxes[{i}]"
        if not box.host or not box.username:
            raise ConfigError(f"{key}.host: host and username are required")
        if box.security not in ("tls", "starttls", "none"):
            raise ConfigError(f"{key}.security: expected tls, starttls or none")
        if box.auth not in ("password", "oauth2"):
            raise ConfigError(f'{key}.auth: expected "password" or "oauth2"')
        if box.auth == "oauth2":
            _validate_oauth(key, box)
        elif not box.password and not box.password_file:
            raise ConfigError(f"{key}.password: set password or password_file")
        if box.address and not ADDR_RE.match(box.address):
            raise ConfigError(f"{key}.address: not an e-mail address")


def _validate_oauth_section(cfg: Config) -> None:
    for i, box in enumerate(cfg.imap.mailboxes):
        if not re.fullmatch(r"[A-Za-z0-9._@+-]{1,64}", box.name):
            raise ConfigError(f"imap.mailboxes[{i}].name: letters, digits and ._@+- only")
    out = cfg.outbound
    if out.auth not in ("none", "oauth2"):
        raise ConfigError('outbound.auth: expected "none" or "oauth2"')
    if out.auth == "oauth2":
        if not out.transport.startswith("smtp://"):
            raise ConfigError('outbound.auth: "oauth2" needs an smtp:// transport')
        if not out.username:
            raise ConfigError('outbound.username: required with auth = "oauth2"')
        _validate_oauth("outbound", out)


def _validate_oauth(key: str, keys: OAuthKeys) -> None:
    from urllib.parse import urlsplit

    if keys.oauth_provider not in OAUTH_PROVIDERS:
        raise ConfigError(f'{key}.oauth_provider: expected "microsoft", "google" or "generic"')
    if keys.oauth_grant not in OAUTH_GRANTS:
        raise ConfigError(f'{key}.oauth_grant: expected "refresh_token" or "client_credentials"')
    if not keys.oauth_client_id:
        raise ConfigError(f"{key}.oauth_client_id: required")
    if keys.oauth_client_secret and keys.oauth_client_secret_file:
        raise ConfigError(f"{key}.oauth_client_secret: set it or oauth_client_secret_file")
    secret = keys.oauth_client_secret or keys.oauth_client_secret_file
    if keys.oauth_grant == "client_credentials" and not secret:
        raise ConfigError(f"{key}.oauth_client_secret: the client credentials grant needs one")
    if keys.oauth_provider == "microsoft" and not keys.oauth_tenant:
        raise ConfigError(f"{key}.oauth_tenant: required for microsoft (tenant id or domain)")
    if keys.oauth_provider == "google" and keys.oauth_grant == "client_credentials":
        raise ConfigError(
            f"{key}.oauth_grant: Google offers no client credentials grant for mail; use "
            '"refresh_token" (obtained once with `mailgate oauth authorize`)'
        )
    if keys.oauth_provider == "generic" and not keys.oauth_token_url:
        raise ConfigError(f"{key}.oauth_token_url: required for a generic provider")
    if keys.oauth_client_auth not in ("basic", "post"):
        raise ConfigError(f'{key}.oauth_client_auth: expected "basic" or "post"')
    if keys.oauth_sasl not in ("xoauth2", "oauthbearer"):
        raise ConfigError(f'{key}.oauth_sasl: expected "xoauth2" or "oauthbearer"')
    for name in ("oauth_token_url", "oauth_authorize_url", "oauth_device_url"):
        value = getattr(keys, name)
        url = urlsplit(value)
        loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
        if value and not (url.scheme == "https" or (url.scheme == "http" and loopback)):
            raise ConfigError(f"{key}.{name}: expected an https:// URL")
    redirect = urlsplit(keys.oauth_redirect_uri)
    if redirect.scheme not in ("http", "https") or not redirect.hostname:
        raise ConfigError(f"{key}.oauth_redirect_uri: expected an http(s):// URL")


def _validate_security(cfg: Config) -> None:
    sec = cfg.security
    if sec.verify_sender not in ("auto", "off"):
        raise ConfigError('security.verify_sender: expected "auto" or "off"')
    if sec.dns_resolver:
        host, sep, port = sec.dns_resolver.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"security.dns_resolver: expected HOST:PORT, got {sec.dns_resolver!r}"
            )
    if not 0 < sec.dns_timeout_seconds <= 30:
        raise ConfigError("security.dns_timeout_seconds: expected more than 0, at most 30")
    if sec.require_dmarc_for_threading and not sec.authserv_id and sec.verify_sender == "off":
        # Settings that cannot work together: nobody would ever say DMARC passed or failed.
        raise ConfigError(
            "security.require_dmarc_for_threading: needs a trusted security.authserv_id (the MTA "
            'that stamps Authentication-Results) or security.verify_sender = "auto"'
        )
    for i, pattern in enumerate(sec.verification_senders + sec.verification_phrases):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"security.verification_*[{i}]: {exc}") from None


_OAuthT = typing.TypeVar("_OAuthT", bound=OAuthKeys)


def _oauth_paths(base: Path, data_dir: Path, keys: _OAuthT, name: str) -> _OAuthT:
    """The mailbox's name (default: its username), its secret and refresh-token files
    resolved; the refresh token's default place is data_dir/oauth/NAME.refresh_token."""
    token_file = keys.oauth_refresh_token_file
    safe = re.sub(r"[^A-Za-z0-9._@+-]", "_", name) or "mailbox"
    changes: dict[str, Any] = {
        "oauth_refresh_token_file": str(_resolve(base, token_file))
        if token_file
        else str(data_dir / "oauth" / f"{safe}.refresh_token"),
        "oauth_client_secret_file": str(_resolve(base, keys.oauth_client_secret_file))
        if keys.oauth_client_secret_file
        else "",
    }
    if isinstance(keys, ImapMailbox):
        changes["name"] = name
    return dataclasses.replace(keys, **changes)


OIDC_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
DOMAIN_RE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _validate_auth(cfg: Config) -> None:
    from urllib.parse import urlsplit

    names: set[str] = set()
    for i, p in enumerate(cfg.auth.oidc):
        key = f"auth.oidc[{i}]"
        if not OIDC_NAME_RE.match(p.name):
            raise ConfigError(f"{key}.name: expected lowercase letters, digits and '-'")
        if p.name in names:
            raise ConfigError(f"{key}.name: {p.name!r} is used twice")
        names.add(p.name)
        url = urlsplit(p.issuer)
        loopback = url.hostname in LOOPBACK_HOSTS  # a provider on this machine (tests)
        if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
            raise ConfigError(f"{key}.issuer: expected an https:// URL")
        if not p.client_id:
            raise ConfigError(f"{key}.client_id: required")
        if bool(p.client_secret) == bool(p.client_secret_file):
            raise ConfigError(f"{key}.client_secret: set client_secret or client_secret_file")
        if "openid" not in p.scopes:
            raise ConfigError(f'{key}.scopes: must include "openid"')
        for domain in p.allowed_domains:
            if not DOMAIN_RE.match(domain):
                raise ConfigError(f"{key}.allowed_domains: {domain!r} is not a domain name")
        if not p.users or any(u not in OIDC_USERS for u in p.users):
            raise ConfigError(f'{key}.users: expected a list of "customers" and "agents"')
        if not 0 < p.timeout_seconds <= 60:
            raise ConfigError(f"{key}.timeout_seconds: expected more than 0, at most 60")
    if not cfg.auth.agents_password and not any("agents" in p.users for p in cfg.auth.oidc):
        raise ConfigError(
            "auth.agents_password: false needs an [[auth.oidc]] provider whose users include "
            '"agents", or no agent could sign in'
        )


def _oidc_providers(base: Path, providers: list[OidcProvider]) -> list[OidcProvider]:
    """The Google preset (issuer, label), default labels, secret files resolved."""
    out = []
    for p in providers:
        issuer = p.issuer or (GOOGLE_ISSUER if p.name == "google" else "")
        out.append(
            dataclasses.replace(
                p,
                issuer=issuer.rstrip("/"),
                label=p.label or ("Google" if p.name == "google" else p.name.capitalize()),
                client_secret_file=str(_resolve(base, p.client_secret_file))
                if p.client_secret_file
                else "",
                allowed_domains=[d.lower().lstrip("@") for d in p.allowed_domains],
            )
        )
    return out


def load(path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    chosen = Path(path or env.get("MAILGATE_CONFIG") or DEFAULT_CONFIG)
    try:
        doc = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {chosen}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: {exc}") from None
    return from_dict(doc, chosen, env)


def from_dict(
    doc: dict[str, Any], path: Path, environ: typing.Mapping[str, str] | None = None
) -> Config:
    env = os.environ if environ is None else environ
    base = path.resolve().parent
    for key in doc:
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown section")
    sections = {name: _build(name, doc.get(name, {}), cls) for name, cls in _SECTIONS.items()}
    m: MailgateSection = sections["mailgate"]
    data_dir = _resolve(base, m.data_dir)
    secret_file = str(_resolve(base, m.secret_key_file)) if m.secret_key_file else ""
    sections["mailgate"] = dataclasses.replace(m, data_dir=data_dir, secret_key_file=secret_file)
    url = env.get("MAILGATE_DATABASE_URL") or sections["database"].url
    url = url or f"sqlite:///{data_dir / 'mailgate.db'}"
    sections["database"] = DatabaseSection(url=_resolve_sqlite(url, base))
    out: OutboundSection = sections["outbound"]
    if out.transport.startswith("maildir:"):
        maildir = _resolve(base, out.transport[len("maildir:") :])
        sections["outbound"] = dataclasses.replace(out, transport=f"maildir:{maildir}")
    addrs: AddressesSection = sections["addresses"]
    sections["addresses"] = AddressesSection(
        support=addrs.support.lower(),
        categories={k.lower(): v for k, v in addrs.categories.items()},
    )
    boxes = []
    named = [box.name for box in sections["imap"].mailboxes if box.name]
    for i, box in enumerate(sections["imap"].mailboxes):
        if box.name and named.count(box.name) > 1:  # a default name (the username) may repeat
            raise ConfigError(f"imap.mailboxes[{i}].name: {box.name!r} is used twice")
        pw_file = str(_resolve(base, box.password_file)) if box.password_file else ""
        box = _oauth_paths(base, data_dir, box, box.name or box.username)
        boxes.append(dataclasses.replace(box, password_file=pw_file, address=box.address.lower()))
    sections["imap"] = ImapSection(mailboxes=boxes)
    auth: AuthSection = sections["auth"]
    sections["auth"] = dataclasses.replace(auth, oidc=_oidc_providers(base, auth.oidc))
    sections["outbound"] = _oauth_paths(base, data_dir, sections["outbound"], "outbound")
    blobs_url = sections["blobs"].url or f"file:{data_dir / 'blobs'}"
    if blobs_url.startswith("file:"):  # relative to the config file's folder
        blobs_url = f"file:{_resolve(base, blobs_url[len('file:') :])}"
    sections["blobs"] = BlobsSection(url=blobs_url)
    cfg = Config(path=path, **sections)
    _validate(cfg)
    return cfg
