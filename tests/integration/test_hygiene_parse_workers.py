"""Issue 4, the parse deadline: parsing runs in child processes a deadline can kill. A hung
parse costs one worker for `timeout` seconds and comes back as a MailParseError (the mail is
quarantined); a parser that raises or a worker that dies comes back as a crash; either way the
worker is replaced and the next parse works. Issue 11: big attachments are stored by the worker
and come back as BlobRefs; a worker that parsed a big mail is replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import pickle
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from mailgate.adapters.parsing import ParseCrashed, ParseWorkers
from mailgate.core.mail import BlobRef, InboundMail, MailParseError, parse_mail
from mailgate.store.blobs import BlobStore
from tests.conftest import make_mail
from tests.support.bigmail import payload, sha256, with_attachments
from tests.support.hygiene import crlf
from tests.support.peers import wait_until

MAIL = crlf(make_mail(subject="Bonjour").as_bytes())


def hang_on_request(raw: bytes) -> InboundMail:
    """A parser that never returns on one input (the workers import it by name)."""
    if b"HANG" in raw:
        threading.Event().wait()
    if b"BOOM" in raw:
        raise KeyError("an unexpected bug")
    if b"DIE" in raw:
        os._exit(1)  # the worker dies mid-parse
    return parse_mail(raw)


def wait_on_request(raw: bytes) -> InboundMail:
    """A parser that, on `PAUSE:<folder>`, says it started (a file) and waits for the test's
    go-ahead (it opens a FIFO, which blocks until the test opens it too)."""
    found = re.search(rb"PAUSE:(\S+)", raw)
    if found:
        folder = Path(found.group(1).decode())
        (folder / "started").touch()
        with open(folder / "go", "rb") as go:
            go.read()
    return parse_mail(raw)


@pytest.fixture
def workers() -> ParseWorkers:
    pool = ParseWorkers(workers=2, timeout=1.0, parse=hang_on_request)
    pool.start()
    yield pool
    pool.stop()


def _worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "mailgate-parse"]


def _worker_pids() -> set[int]:
    return {p.pid for p in _worker_processes() if p.pid is not None}


def test_before_start_parsing_runs_in_the_callers_process():
    pool = ParseWorkers(workers=1, timeout=1.0, parse=hang_on_request)
    assert pool(MAIL).subject == "Bonjour"
    assert _worker_pids() == set()


def test_a_hung_parse_is_stopped_at_the_deadline_while_the_other_worker_serves(
    workers: ParseWorkers,
):
    before = _worker_pids()
    assert len(before) == 2
    outcome: dict[str, object] = {}

    def hung() -> None:
        started = time.monotonic()
        try:
            workers(MAIL.replace(b"Bonjour", b"HANG"))
        except MailParseError as exc:
            outcome["error"], outcome["seconds"] = str(exc), time.monotonic() - started

    thread = threading.Thread(target=hung)
    thread.start()
    assert workers(MAIL).subject == "Bonjour"  # served by the other worker meanwhile
    thread.join(30)
    assert outcome["error"] == "over a limit: parsing took more than 1 s"
    assert 1.0 <= outcome["seconds"] < 5  # type: ignore[operator]
    # The hung worker was killed and is replaced on the next parse.
    assert [workers(MAIL).subject for _ in range(4)] == ["Bonjour"] * 4
    after = _worker_pids()
    assert len(after) == 2 and after != before


def test_a_parser_bug_and_a_worker_dying_mid_parse_are_crashes_and_the_next_parse_works(
    workers: ParseWorkers,
):
    with pytest.raises(ParseCrashed, match="KeyError: 'an unexpected bug'"):
        workers(MAIL.replace(b"Bonjour", b"BOOM"))
    assert workers(MAIL).subject == "Bonjour"
    with pytest.raises(ParseCrashed, match="parse worker died"):
        workers(MAIL.replace(b"Bonjour", b"DIE"))
    assert [workers(MAIL).subject for _ in range(4)] == ["Bonjour"] * 4


def test_workers_that_died_while_idle_are_replaced_without_failing_a_mail(
    workers: ParseWorkers,
):
    processes = _worker_processes()
    dead = _worker_pids()
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)  # say, the kernel's OOM killer
    for process in processes:
        process.join(10)
    assert [workers(MAIL).subject for _ in range(4)] == ["Bonjour"] * 4
    assert len(_worker_pids() - dead) >= 1


def test_a_stop_signal_to_the_whole_service_lets_the_parses_in_flight_finish(tmp_path):
    """systemd stops a unit with SIGTERM to every process in it (Ctrl-C: SIGINT to the
    terminal's process group). Stopping is the parent's job (it finishes what is in flight,
    then closes the pipe): a worker mid-parse must not die of it, or the mail counts a crash
    (three stops at the wrong moment would quarantine it)."""
    os.mkfifo(tmp_path / "go")
    pool = ParseWorkers(workers=1, timeout=60.0, parse=wait_on_request)
    pool.start()
    try:
        results: list[object] = []
        mail = crlf(make_mail(subject="Bonjour", body=f"PAUSE:{tmp_path}\n").as_bytes())
        parsing = threading.Thread(target=lambda: results.append(_outcome(pool, mail)))
        parsing.start()
        wait_until(lambda: (tmp_path / "started").exists(), 30, "the parse to start")
        for pid in _worker_pids():
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGINT)
        with open(tmp_path / "go", "wb"):
            pass  # the go-ahead: the parse finishes
        parsing.join(30)
        assert [getattr(r, "subject", r) for r in results] == ["Bonjour"]
    finally:
        pool.stop()


def _outcome(pool: ParseWorkers, raw: bytes) -> object:
    try:
        return pool(raw)
    except Exception as exc:
        return exc


# -- issue 11: big attachments -------------------------------------------------------------


def test_big_attachments_come_back_from_the_worker_as_stored_blobs_not_bytes(tmp_path):
    """With the blob store, the worker writes every attachment of STORE_BYTES or more (base64
    decoded outside the parser, or quoted-printable decoded by it) and sends back its digest
    and size: the reply through the pipe stays small whatever the attachments weigh."""
    blobs = BlobStore(tmp_path / "blobs")
    big, qp, small = payload(3_000_000, 1), payload(1_500_000, 2), b"petit"
    raw = with_attachments(
        ("big.bin", big, "base64"), ("qp.bin", qp, "quoted-printable"), ("s.bin", small, "base64")
    )
    pool = ParseWorkers(workers=1, timeout=60.0, blobs=blobs)
    pool.start()
    try:
        mail = pool(raw)
    finally:
        pool.stop()
    refs = [a.payload for a in mail.attachments]
    assert refs[:2] == [BlobRef(sha256(big), len(big)), BlobRef(sha256(qp), len(qp))]
    assert refs[2] == small
    assert blobs.get(sha256(big)) == big and blobs.get(sha256(qp)) == qp
    assert len(pickle.dumps(mail)) < 64 * 1024
    # The same mail as parsed in one piece, payloads aside.
    whole = parse_mail(raw)
    assert [a.payload for a in whole.attachments] == [big, qp, small]
    assert dataclasses.replace(whole, attachments=mail.attachments) == mail
    # What the ingest does with them: put() checks a BlobRef, len() is its size.
    assert blobs.put(mail.attachments[0].payload) == sha256(big)
    assert len(mail.attachments[0].payload) == len(big)


def test_without_a_blob_store_big_attachments_come_back_as_bytes():
    data = payload(2_000_000, 3)
    pool = ParseWorkers(workers=1, timeout=60.0)
    pool.start()
    try:
        mail = pool(with_attachments(("a.bin", data, "base64")))
    finally:
        pool.stop()
    assert mail.attachments[0].payload == data


def test_a_worker_that_parsed_a_big_mail_is_replaced_and_a_small_one_kept(tmp_path):
    pool = ParseWorkers(workers=1, timeout=60.0, blobs=BlobStore(tmp_path), recycle_bytes=100_000)
    pool.start()
    try:
        first = _worker_pids()
        assert pool(MAIL).subject == "Bonjour" and _worker_pids() == first
        assert len(pool(with_attachments(("a.bin", payload(200_000), "base64"))).attachments) == 1
        second = _worker_pids()
        assert len(second) == 1 and second != first
        assert pool(MAIL).subject == "Bonjour" and _worker_pids() == second
    finally:
        pool.stop()


def _kib(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc needed")
@pytest.mark.parametrize("cte", ["base64", "quoted-printable"])
def test_a_stored_big_mail_is_mapped_by_the_worker_never_held_whole(tmp_path, cte):
    """Ingest stores the raw mail before parsing it: the worker maps that blob instead of
    receiving or reading the bytes, and its peak memory stays far below the mail's size
    (read whole, it rose by at least the size; parsed whole, ~8 times)."""
    blobs = BlobStore(tmp_path / "blobs")
    data = payload(24_000_000 if cte == "base64" else 12_000_000, 4)
    raw = with_attachments(("dump.bin", data, cte), subject="Gros fichier")
    blobs.put(raw)
    pool = ParseWorkers(workers=1, timeout=60.0, blobs=blobs, recycle_bytes=1 << 40)
    pool.start()
    try:
        (pid,) = _worker_pids()
        assert pool(MAIL).subject == "Bonjour"  # the parser's first use, lazy imports
        before = _kib(pid, "VmRSS")
        mail = pool(raw)
        peak = _kib(pid, "VmHWM")
        assert _worker_pids() == {pid}
    finally:
        pool.stop()
    assert mail.attachments[0].payload == BlobRef(sha256(data), len(data))
    assert blobs.get(sha256(data)) == data
    assert (mail.subject, mail.from_addr) == ("Gros fichier", "jean@client.example")
    assert [a.filename for a in mail.attachments] == ["dump.bin"]
    assert (peak - before) * 1024 < len(raw) // 3, f"the worker rose by {peak - before} KiB"


def test_parse_async_gives_what_a_blocking_parse_gives_and_keeps_the_deadline(
    workers: ParseWorkers,
):
    """parse_async (an SMTP front's parse, on its event loop): the mail, a crash, a worker
    dying mid-parse, a hung parse stopped at the deadline while others go on; each time the
    next parse works, on a replaced worker when one was lost."""

    async def outcome(raw: bytes) -> str:
        try:
            return (await workers.parse_async(raw)).subject
        except (MailParseError, ParseCrashed) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def run() -> list[str]:
        hung = asyncio.create_task(outcome(MAIL.replace(b"Bonjour", b"HANG")))
        others = [await outcome(MAIL.replace(b"Bonjour", word)) for word in (b"BOOM", b"DIE")]
        return [await hung, *others, *[await outcome(MAIL) for _ in range(4)]]

    started = time.monotonic()
    assert asyncio.run(run()) == [
        "MailParseError: over a limit: parsing took more than 1 s",
        "ParseCrashed: KeyError: 'an unexpected bug'",
        "ParseCrashed: parse worker died: EOFError",
        *["Bonjour"] * 4,
    ]
    assert time.monotonic() - started < 10
    assert workers(MAIL).subject == "Bonjour"  # the blocking path shares the same workers
