"""GET /healthz and GET /metrics over real HTTP, on the `[metrics] listen` server of `serve`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from mailgate import config as config_mod
from mailgate.adapters.health import health_routes
from mailgate.adapters.httpserver import HttpServer
from mailgate.app import build
from mailgate.clock import FixedClock
from tests.conftest import make_mail, send
from tests.support.peers import Mailgate, SmtpSink, _LoopThread, wait_until, write_config

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both


@pytest.fixture
def config_extra() -> str:
    return '[metrics]\nlisten = "127.0.0.1:0"\n'


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def served(config_path: Path, clock: FixedClock) -> Iterator[Mailgate]:
    mg = Mailgate(config_path, clock=clock)
    yield mg
    mg.stop()


def url(mg: Mailgate, path: str) -> str:
    host, port = mg.app.listeners["metrics"]
    return f"http://{host}:{port}{path}"


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_healthz_reports_listeners_queue_and_quarantine(
    served: Mailgate, sink: SmtpSink, clock: FixedClock
):
    first = httpx.get(url(served, "/healthz"), timeout=10)
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "ok" and body["database_reachable"] is True
    assert set(body["listeners"]) >= {"smtp", "lmtp", "metrics"}
    assert body["listeners"]["smtp"] == f"127.0.0.1:{served.smtp_port}"
    assert (body["outbox_queued"], body["oldest_unsent_age_seconds"]) == (0, None)
    assert body["quarantine_size"] == 0

    sink.fail_with = "451 4.3.0 try later"  # outbound mail stays queued
    send(served.smtp_port, make_mail())
    wait_until(lambda: _attempted(served), 15, "the sender to try and fail")
    send(served.smtp_port, make_mail(subject="Absent", headers={"Auto-Submitted": "auto-replied"}))
    clock.advance(seconds=90)

    body = httpx.get(url(served, "/healthz"), timeout=10).json()
    assert body["outbox_queued"] == 2  # confirmation + activation
    assert body["oldest_unsent_age_seconds"] == 90.0
    assert body["quarantine_size"] == 1  # automatic mail matching no ticket


def _attempted(mg: Mailgate) -> bool:
    from sqlmodel import select

    from mailgate.store.models import Outbox

    with mg.app.db.read() as session:
        rows = list(session.exec(select(Outbox)))
    return len(rows) == 2 and all(r.attempts == 1 for r in rows)


def test_metrics_count_messages_tickets_and_outbound(served: Mailgate, sink: SmtpSink):
    send(served.smtp_port, make_mail())
    send(served.smtp_port, make_mail(subject="Encore", sender="ana@client.example"))
    sink.wait_for(4)

    def text() -> str:
        reply = httpx.get(url(served, "/metrics"), timeout=10)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        return reply.text

    wait_until(lambda: metric(text(), 'mailgate_outbound_total{result="sent"}') == 4, 10,
               "the sender to count its four sent mails")
    t = text()
    assert metric(t, 'mailgate_messages_received_total{channel="smtp",outcome="ticketed"}') == 2
    assert metric(t, 'mailgate_ingest_seconds_count{channel="smtp"}') == 2
    assert metric(t, "mailgate_tickets_created_total") == 2
    assert metric(t, "mailgate_outbound_queued") == 0
    assert metric(t, "mailgate_database_up") == 1


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path: Path, sink: SmtpSink):
    # Nothing listens on port 1: every connection is refused at once.
    cfg = write_config(
        tmp_path,
        database_url="postgresql+psycopg://mailgate@127.0.0.1:1/mailgate",
        sink_port=sink.port,
    )
    app = build(config_mod.load(cfg))
    lt = _LoopThread("health-http")
    server = HttpServer(Starlette(routes=health_routes(app)), "127.0.0.1:0")
    try:
        lt.call(server.start())
        host, port = server.address
        health = httpx.get(f"http://{host}:{port}/healthz", timeout=10)
        assert health.status_code == 503
        assert health.json()["database_reachable"] is False
        assert health.json()["status"] == "unavailable"
        metrics = httpx.get(f"http://{host}:{port}/metrics", timeout=10)
        assert metrics.status_code == 200  # Prometheus still learns that the database is down
        assert metric(metrics.text, "mailgate_database_up") == 0
    finally:
        lt.call(server.stop())
        lt.close()
        app.db.dispose()


def test_http_server_serves_on_a_unix_socket(tmp_path: Path, config_path: Path):
    app = build(config_mod.load(config_path))
    app.db.upgrade()
    path = tmp_path / "metrics.sock"
    server = HttpServer(Starlette(routes=health_routes(app)), f"unix:{path}")
    lt = _LoopThread("health-unix")
    try:
        lt.call(server.start())
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport) as client:
            assert client.get("http://mailgate/healthz").json()["database_reachable"] is True
    finally:
        lt.call(server.stop())
        lt.close()
        app.db.dispose()


def test_stop_returns_promptly_with_a_client_connected(config_path: Path):
    """A keep-alive client must not hold `serve` open on SIGTERM."""
    app = build(config_mod.load(config_path))
    app.db.upgrade()
    server = HttpServer(Starlette(routes=health_routes(app)), "127.0.0.1:0")
    lt = _LoopThread("health-stop")
    try:
        lt.call(server.start())
        host, port = server.address
        with httpx.Client() as client:
            assert client.get(f"http://{host}:{port}/healthz").status_code == 200
            lt.call(asyncio.wait_for(server.stop(), timeout=10))
    finally:
        lt.close()
        app.db.dispose()
