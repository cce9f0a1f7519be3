"""`serve` with leases (issue 17): /healthz and /metrics name the instance and what it holds,
and a clean stop gives every lease back at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from mailgate.clock import as_utc
from mailgate.store.models import Lease
from tests.support.peers import Mailgate

JOBS = ["job:auto_resolve", "job:cleanup", "job:close", "job:digests"]


@pytest.fixture
def config_extra() -> str:
    return '[metrics]\nlisten = "127.0.0.1:0"\n\n[instance]\nid = "mg-a"\nlease_seconds = 5\n'


@pytest.fixture
def served(config_path: Path) -> Iterator[Mailgate]:
    mg = Mailgate(config_path)
    yield mg
    if mg._stop is not None:  # the test stops it itself
        mg.stop()


def test_health_and_metrics_name_the_instance_and_its_leases(served: Mailgate) -> None:
    host, port = served.app.listeners["metrics"]
    body = httpx.get(f"http://{host}:{port}/healthz", timeout=10).json()
    assert body["status"] == "ok"
    assert body["instance"] == "mg-a"
    assert body["holds"] == JOBS
    text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
    assert 'mailgate_instance_info{instance="mg-a"} 1.0' in text
    for name in JOBS:
        assert f'mailgate_lease_held{{name="{name}"}} 1.0' in text
    served.stop()
    with served.app.db.read() as session:
        rows = session.exec(select(Lease)).all()
    assert sorted(r.name for r in rows) == JOBS
    now = served.app.clock.now()
    assert all(r.holder == "mg-a" and as_utc(r.expires_at) < now for r in rows)  # released
