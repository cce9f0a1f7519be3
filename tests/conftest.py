"""Shared fixtures: real SQLite and (when MAILGATE_TEST_DATABASE_URL is set) PostgreSQL,
a real SMTP sink for outbound mail, and mailgate serving on port 0."""

from __future__ import annotations

import os
import smtplib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.peers import Mailgate, SmtpSink, write_config

# No per-example deadline: a property holds or not whatever the machine's load (a deadline is a
# timed test, and a loaded CI machine failed one that passed alone). Speed lives in `make bench`.
settings.register_profile("mailgate", deadline=None)
settings.load_profile("mailgate")

# Fixtures of the mail-hygiene tests (issue 4), in their own file.
pytest_plugins = ("tests.support.hygiene",)

PG_URL = os.environ.get("MAILGATE_TEST_DATABASE_URL", "")
DB_KINDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_database() -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL)
    name = f"mgtest_{uuid.uuid4().hex[:12]}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False), name


def _pg_drop(name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With PostgreSQL available, every unit and service-tier test runs on both databases, and
    so do the socket-level modules marked `postgres` (where the engine shows: durability,
    concurrency, dedupe, caps, pagination, search, imports, health; statuses, agents and what
    the admin commands change run on both in tests/service). The other socket-level and browser
    tests exercise protocols and pages the database does not change: on SQLite only, which
    keeps the suite under 10 minutes on 2 cores."""
    if not PG_URL:
        return
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        on_pg = params is not None and "postgresql" in params.params.values()
        socket_level = item.nodeid.startswith(("tests/integration/", "tests/e2e/"))
        if on_pg and socket_level and item.get_closest_marker("postgres") is None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=DB_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailgate.db'}"
        return
    url, name = _pg_database()
    try:
        yield url
    finally:
        _pg_drop(name)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    s = SmtpSink()
    yield s
    s.close()


@pytest.fixture
def config_extra() -> str:
    """Override in a test module to add TOML to the generated config."""
    return ""


@pytest.fixture
def config_path(tmp_path: Path, database_url: str, sink: SmtpSink, config_extra: str) -> Path:
    return write_config(tmp_path, database_url=database_url, sink_port=sink.port,
                        extra=config_extra)


@pytest.fixture
def mailgate(config_path: Path) -> Iterator[Mailgate]:
    mg = Mailgate(config_path)
    yield mg
    mg.stop()


def make_mail(
    sender: str = "Jean Dupont <jean@client.example>",
    to: str = "support@example.com",
    subject: str = "Imprimante en panne",
    body: str = "Bonjour,\nmon imprimante ne marche plus.\n",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@client.example>"
    msg.set_content(body)
    # After set_content(), which drops every Content-* header set before it (Content-Language).
    for k, v in (headers or {}).items():
        msg[k] = v
    return msg


def send(port: int, msg: EmailMessage | bytes, rcpts: list[str] | None = None,
         mail_from: str = "jean@client.example") -> dict[str, tuple[int, bytes]]:
    """Send over real SMTP; returns smtplib's refused map (raises on a non-250 DATA)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        if isinstance(msg, bytes):
            return s.sendmail(mail_from, rcpts or ["support@example.com"], msg)
        return s.send_message(msg, from_addr=mail_from, to_addrs=rcpts)
