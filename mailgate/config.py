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

DEFAULT_CONFIG = "config/mailgate.toml"
ADDR_RE = re.compile(r"^[^@\s<>\"()\[\],;:\\]+@[A-Za-z0-9.-]+$")


@dataclass(frozen=True)
class MailgateSection:
    hostname: str = "localhost"
    data_dir: Path = Path("var")
    secret_key: str = ""
    secret_key_file: str = ""  # "" with no secret_key: data_dir/secret, created on first start
    default_locale: str = "fr"
    default_timezone: str = "Europe/Paris"


@dataclass(frozen=True)
class DatabaseSection:
    url: str = ""


@dataclass(frozen=True)
class InboundSection:
    smtp_listen: str = "127.0.0.1:2525"
    lmtp_listen: str = ""
    max_message_bytes: int = 41943040
    max_received_headers: int = 50
    parse_timeout_seconds: float = 30.0
    parse_workers: int = 2
    max_recipients: int = 100  # RCPT per transaction; more get 452 (RFC 5321 4.5.3.1.8)
    # Message bytes all DATA transactions in flight may hold; a new DATA beyond it gets 452.
    max_inflight_bytes: int = 268435456
    # A Postfix socketmap answering "is this address ours?" (relay_recipient_maps); "" = off.
    postfix_map_listen: str = ""


@dataclass(frozen=True)
class AddressesSection:
    support: str = "support@example.com"
    categories: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundSection:
    transport: str = "maildir:var/sent"
    from_name: str = "Support"
    max_attempts: int = 12
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    auto_per_hour: int = 5
    auto_per_day: int = 10
    first_contact_per_hour: int = 200  # mail to never-heard-from addresses, all together
    agent_notifications_per_hour: int = 30  # per agent; beyond, one digest a period
    notification_attachment_bytes: int = 10 * 1024 * 1024  # customer files attached, in all
    connections: int = 2  # SMTP connections kept to the smarthost; maildir: files written at once


@dataclass(frozen=True)
class PortalSection:
    listen: str = "127.0.0.1:8025"
    base_url: str = "http://127.0.0.1:8025"
    customer_id_label: str = "Customer ID"
    customer_id_pattern: str = r"^[A-Za-z0-9-]{1,32}$"
    problem_categories: list[str] = field(
        default_factory=lambda: ["Account", "Billing", "Technical issue"]
    )
    broadcasters: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TicketsSection:
    auto_resolve_after_days: int = 7
    close_after_days: int = 28


@dataclass(frozen=True)
class HelpCentreSection:
    suggest_in_confirmation: int = 3  # articles listed in the confirmation mail (0: none)


@dataclass(frozen=True)
class SecuritySection:
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
    listen: str = ""


@dataclass(frozen=True)
class ImapMailbox:
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
    mailboxes: list[ImapMailbox] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
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
    helpcentre: HelpCentreSection = field(default_factory=HelpCentreSection)

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
    "helpcentre": HelpCentreSection,
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
    if m.default_locale not in ("fr", "en"):
        raise ConfigError('mailgate.default_locale: expected "fr" or "en"')
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
    if cfg.inbound.parse_timeout_seconds <= 0:
        raise ConfigError("inbound.parse_timeout_seconds: must be more than 0")
    if cfg.inbound.parse_workers < 1:
        raise ConfigError("inbound.parse_workers: must be at least 1")
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
    if not 1 <= cfg.inbound.max_recipients <= 1000:
        raise ConfigError("inbound.max_recipients: expected 1 to 1000 (RFC 5321 asks for 100)")
    if cfg.inbound.max_inflight_bytes < cfg.inbound.max_message_bytes:
        raise ConfigError(
            "inbound.max_inflight_bytes: must be at least inbound.max_message_bytes, or no "
            "message of the largest allowed size could ever be received"
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
        if not box.password and not box.password_file:
            raise ConfigError(f"{key}.password: set password or password_file")
        if box.address and not ADDR_RE.match(box.address):
            raise ConfigError(f"{key}.address: not an e-mail address")


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
    for box in sections["imap"].mailboxes:
        pw_file = str(_resolve(base, box.password_file)) if box.password_file else ""
        boxes.append(dataclasses.replace(box, password_file=pw_file, address=box.address.lower()))
    sections["imap"] = ImapSection(mailboxes=boxes)
    cfg = Config(path=path, **sections)
    _validate(cfg)
    return cfg
