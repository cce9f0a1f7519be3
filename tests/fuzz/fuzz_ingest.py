"""Fuzz the whole ingest path: raw bytes -> Ingestor.ingest, with a real SQLite database and
blob store. Any exception that is not one of mailgate's own (MailgateError: refused, try again
later) is a failure, and so is a message quietly counted as a crash (an IngestFailure row).

    make fuzz                                   # atheris (libFuzzer, coverage-guided)
    .venv/bin/python tests/fuzz/fuzz_ingest.py -atheris_runs=20000 [CORPUS_DIR ...]

Seeds: CPython's test/test_email/data/ messages when that folder is installed next to the
running Python, plus every .eml under tests/data/ (tests/data/fuzz_seeds/ holds copies of a
handful of CPython's). Without atheris (it needs a wheel or clang to build), the same loop runs
on hypothesis with byte-level mutations of the seeds, as many runs as -atheris_runs says.
tests/integration/test_hygiene_fuzz.py runs the hypothesis side in the test suite.
"""

from __future__ import annotations

import atexit
import email
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CPYTHON_SEEDS = Path(email.__file__).resolve().parents[1] / "test" / "test_email" / "data"
OUR_SEEDS = ROOT / "tests" / "data"
# Byte strings a mail parser branches on: spliced into seeds by the hypothesis mutator.
TOKENS = [
    b"\r\n", b"\n", b"\r\n\r\n", b"\r", b"--", b"--b--", b"\x00", b"\xff\xfe", b"\t", b" ",
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
    b"Content-Type: message/delivery-status\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n", b"=?utf-8?q?=C3=A9?=", b"=?x?b?@@?=",
    b"boundary=\"", b"charset*=us-ascii''%FF", b"From: <@>\r\n", b"From: a@b\r\n",
    b"Received: x\r\n", b"Auto-Submitted: auto-replied\r\n", b"X-Mailgate-Loop: fuzz.test\r\n",
    b"Message-ID: <a@b>\r\n", b"In-Reply-To: <mg.1@fuzz.test>\r\n", b"Subject: [#1] \r\n",
    b"Final-Recipient: rfc822; a@b\r\nStatus: 5.1.1\r\n", b"filename*0*=utf-8''%e9",
]


def seed_corpus() -> list[bytes]:
    files = sorted(p for p in CPYTHON_SEEDS.glob("msg_*.txt")) if CPYTHON_SEEDS.is_dir() else []
    files += sorted(OUR_SEEDS.rglob("*.eml"))
    return [p.read_bytes() for p in files]


def build_ingestor(folder: Path) -> Any:
    """A real Ingestor on a fresh SQLite database and blob store under `folder`."""
    from mailgate import config as config_mod
    from mailgate.app import build

    cfg = config_mod.from_dict(
        {
            "mailgate": {"hostname": "fuzz.test", "data_dir": "data", "secret_key": "f" * 32},
            "inbound": {"smtp_listen": "", "lmtp_listen": ""},
            "outbound": {"transport": "maildir:sent"},
            "portal": {"listen": ""},
        },
        folder / "mailgate.toml",
        {},
    )
    app = build(cfg)
    app.db.upgrade()
    return app.ingestor


ENVELOPES = [
    ("jean@client.example", ("support@example.com",)),
    ("", ("support@example.com",)),
    (None, ("support+1-1-aaaaaaaaaaaaaaaaaaaa@example.com",)),
]


def ingest_one(ingestor: Any, data: bytes, which: int = 0) -> None:
    """Raises only what the fuzzer must report."""
    from sqlalchemy import func
    from sqlmodel import select

    from mailgate.errors import MailgateError
    from mailgate.services.ingest import Envelope
    from mailgate.store.models import IngestFailure

    mail_from, rcpts = ENVELOPES[which % len(ENVELOPES)]
    try:
        ingestor.ingest(data, Envelope(mail_from=mail_from, recipients=rcpts, channel="fuzz"))
    except MailgateError:
        pass
    with ingestor.db.read() as session:
        crashes = session.exec(select(func.count()).select_from(IngestFailure)).one()
    if crashes:
        raise AssertionError("ingest counted a crash (see the ingest.crashed log line)")


def mutate(seed: bytes, edits: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply (operation, position, length, bytes) edits: insert, delete, overwrite, repeat."""
    data = bytearray(seed)
    for op, pos, length, chunk in edits:
        at = pos % (len(data) + 1)
        if op == 0:
            data[at:at] = chunk
        elif op == 1:
            del data[at : at + length]
        elif op == 2:
            data[at : at + len(chunk)] = chunk
        else:
            data[at:at] = bytes(data[at : at + length]) * 3
    return bytes(data)


def mutations(seeds: list[bytes]) -> Any:
    """A hypothesis strategy: a seed, a few edits, and which envelope it arrives with."""
    from hypothesis import strategies as st

    chunk = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40))
    edit = st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 200), chunk)
    return st.tuples(st.sampled_from(seeds), st.lists(edit, max_size=6), st.integers(0, 2))


def _runs(argv: list[str]) -> int:
    for arg in argv:
        if arg.startswith("-atheris_runs="):
            return int(arg.split("=", 1)[1])
    return 2000


def main(argv: list[str]) -> None:
    import logging

    from mailgate import logs

    logs.setup(level=logging.ERROR)  # quarantines are expected; crashes are not
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-fuzz-", dir=_fast_tmp()))
    atexit.register(_clean, workdir)
    seeds = seed_corpus()
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: fuzzing with hypothesis instead", file=sys.stderr)
        _hypothesis(workdir, seeds, _runs(argv))
        return
    with atheris.instrument_imports():
        ingestor = build_ingestor(workdir)
    corpus = workdir / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    args = list(argv)
    if not [a for a in argv[1:] if not a.startswith("-")]:
        args.append(str(corpus))
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        args.append(f"-artifact_prefix={workdir}/")  # crash files there, not in the checkout
    print(f"fuzzing in {workdir}", file=sys.stderr)

    def test_one_input(data: bytes) -> None:
        ingest_one(ingestor, data, data[-1] if data else 0)

    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def _hypothesis(workdir: Path, seeds: list[bytes], runs: int) -> None:
    from hypothesis import HealthCheck, given, settings

    ingestor = build_ingestor(workdir)

    @settings(max_examples=runs, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations(seeds))
    def run(case: tuple[bytes, list[tuple[int, int, int, bytes]], int]) -> None:
        seed, edits, which = case
        ingest_one(ingestor, mutate(seed, edits), which)

    run()
    print(f"hypothesis: {runs} runs, no failure", file=sys.stderr)


def _clean(workdir: Path) -> None:
    """Remove the run's database and corpus, unless it holds a crash to look at."""
    if not any(workdir.glob("crash-*")):
        shutil.rmtree(workdir, ignore_errors=True)


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None  # tmpfs: fsync costs nothing there


if __name__ == "__main__":
    main(sys.argv)
