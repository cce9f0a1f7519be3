"""Issue 10: mailgate behind a real Postfix (3.7, Debian), set up with the exact main.cf and
master.cf lines docs/operations.md gives, in front of `mailgate serve` (LMTP + the socketmap
that tells Postfix which recipients are ours) and of the pipe to `mailgate deliver`.

Each recipe runs one private Postfix per module (own config, queue and data directories on
127.0.0.1, `maillog_file`, no syslog, /etc/postfix untouched), started by
tools/peers/start-postfix.sh. Waiting is on the queue, the log or the database, never a sleep.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import Message, Ticket
from tests.conftest import make_mail
from tests.support.conversation import addr
from tests.support.mailflow import crlf
from tests.support.peers import ROOT, Mailgate, SmtpSink, free_port, wait_until, write_config

PEERS = ROOT / "tools" / "peers"
DOCS = ROOT / "docs" / "operations.md"
HAVE_POSTFIX = os.path.exists("/usr/sbin/postfix") and os.path.exists("/usr/sbin/postqueue")
pytestmark = [
    pytest.mark.skipif(
        not HAVE_POSTFIX, reason="postfix is not installed (tools/peers/install-peers.sh)"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]

# ---------------------------------------------------------------- the recipes, as documented
# Each line, rendered with DOC_VALUES, is in docs/operations.md word for word
# (test_the_documentation_carries_the_lines_these_tests_use); the tests render the same
# lines with their own ports and paths.
LMTP_MAIN_CF = [
    "relay_domains = {domain}",
    "relay_recipient_maps = socketmap:inet:127.0.0.1:{map_port}:mailgate",
    "transport_maps = hash:{postfix_dir}/transport",
    "recipient_delimiter = +",
    "message_size_limit = {max_bytes}",
]
LMTP_TRANSPORT = [
    "support@{domain}   lmtp:inet:127.0.0.1:{lmtp_port}",
    "billing@{domain}   lmtp:inet:127.0.0.1:{lmtp_port}",
]
MAILGATE_LMTP_TOML = [
    'lmtp_listen = "127.0.0.1:{lmtp_port}"',
    'postfix_map_listen = "127.0.0.1:{map_port}"',
]
PIPE_MAIN_CF = [
    "relay_domains = {domain}",
    "relay_recipient_maps = hash:{postfix_dir}/mailgate_recipients",
    "transport_maps = hash:{postfix_dir}/transport",
    "recipient_delimiter = +",
    "message_size_limit = {max_bytes}",
    "mailgate_destination_recipient_limit = 1",
]
PIPE_MASTER_CF = [
    "mailgate  unix  -       n       n       -       10      pipe",
    "  flags=DRhu user=mailgate null_sender= argv={mailgate} --config {config}"
    " deliver --sender ${{sender}} --recipient ${{recipient}}",
]
PIPE_TRANSPORT = [
    "support@{domain}   mailgate:",
    "billing@{domain}   mailgate:",
]
PIPE_RECIPIENTS = [
    "support@{domain}   OK",
    "billing@{domain}   OK",
]
DOC_VALUES = {
    "domain": "example.com",
    "map_port": 2426,
    "lmtp_port": 2424,
    "postfix_dir": "/etc/postfix",
    "max_bytes": 41943040,
    "mailgate": "/opt/mailgate/.venv/bin/mailgate",
    "config": "/etc/mailgate/mailgate.toml",
}
MAX_BYTES = 200000  # tests/support/peers.py's max_message_bytes
OUTSIDE = "sender.test"  # our customers' domain: Postfix hands their mail (DSNs) to a sink


def render(lines: list[str], **values: object) -> list[str]:
    return [line.format(**values) for line in lines]


def test_the_documentation_carries_the_lines_these_tests_use():
    doc = DOCS.read_text()
    recipes = (
        LMTP_MAIN_CF
        + LMTP_TRANSPORT
        + MAILGATE_LMTP_TOML
        + PIPE_MAIN_CF
        + PIPE_MASTER_CF
        + PIPE_TRANSPORT
        + PIPE_RECIPIENTS
    )
    missing = [line for line in render(recipes, **DOC_VALUES) if line not in doc.splitlines()]
    assert not missing, f"docs/operations.md lacks: {missing}"
    # main.cf has no trailing comments: "recipient_delimiter = +  # x" would set "+  # x".
    for block in re.findall(r"# (?:/etc/postfix/)?main\.cf[^\n]*\n(.*?)```", doc, re.S):
        for line in block.splitlines():
            assert line.startswith("#") or "#" not in line, line


# ---------------------------------------------------------------- a private Postfix
@dataclass
class Postfix:
    dir: Path
    smtp_port: int
    dsn: SmtpSink  # where bounces (DSNs) to OUTSIDE senders land

    @property
    def conf(self) -> Path:
        return self.dir / "config"

    def log(self) -> str:
        return (self.dir / "maillog").read_text(errors="replace")

    def queue_ids(self) -> list[str]:
        out = subprocess.run(
            ["postqueue", "-c", str(self.conf), "-j"], capture_output=True, text=True, check=True
        ).stdout
        return re.findall(r'"queue_id": "([0-9A-Za-z]+)"', out)

    def queue(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.queue_json().splitlines() if line.strip()]

    def queue_json(self) -> str:
        return subprocess.run(
            ["postqueue", "-c", str(self.conf), "-j"], capture_output=True, text=True, check=True
        ).stdout

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.conf), "-f"], check=True)

    def release_held(self) -> None:
        subprocess.run(
            ["postsuper", "-c", str(self.conf), "-H", "ALL"], check=True, capture_output=True
        )

    def wait_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[str]:
        found: list[str] = []

        def seen() -> bool:
            found[:] = re.findall(pattern, self.log())
            return len(found) >= count

        wait_until(seen, timeout, f"maillog line {pattern!r} x{count}")
        return found

    def wait_empty(self, timeout: float = 30.0) -> None:
        wait_until(lambda: not self.queue_ids(), timeout, "Postfix's queue to drain")

    def send(self, msg: EmailMessage | bytes, rcpts: list[str], mail_from: str) -> str:
        """One SMTP transaction; returns Postfix's queue id (raises on any refusal)."""
        raw = msg if isinstance(msg, bytes) else msg.as_bytes()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            s.ehlo("client.sender.test")
            code, reply = s.mail(mail_from)
            assert code == 250, reply
            for r in rcpts:
                code, reply = s.rcpt(r)
                assert code == 250, (r, code, reply)
            code, reply = s.data(raw)
            assert code == 250, reply
        return re.search(rb"queued as ([0-9A-Za-z]+)", reply).group(1).decode()  # type: ignore[union-attr]

    def rcpt_reply(self, rcpt: str) -> tuple[int, str]:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            s.ehlo("client.sender.test")
            s.mail(f"someone@{OUTSIDE}")
            code, reply = s.rcpt(rcpt)
            s.rset()
        return code, reply.decode()


def _private_dir(prefix: str) -> Path:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700 and the pipe user must get in.
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


def _start_postfix(
    base: Path,
    main_cf: list[str],
    tables: dict[str, list[str]],
    master_cf: list[str] = (),
    pipe_cmd: str = "",
) -> Postfix:
    dsn = SmtpSink()
    recipe = base / "recipe"
    recipe.mkdir()
    tables = {**tables}
    # Test plumbing, not part of the recipe: DSNs to our customers go to a sink.
    tables["transport"] = [*tables["transport"], f"{OUTSIDE}   smtp:[127.0.0.1]:{dsn.port}"]
    for name, lines in tables.items():
        (recipe / name).write_text("\n".join(lines) + "\n")
    (recipe / "hold_checks").write_text("/^X-Test-Hold: yes/ HOLD\n")
    (recipe / "main.cf").write_text(
        "\n".join([*main_cf, f"header_checks = regexp:{recipe}/hold_checks"]) + "\n"
    )
    (recipe / "master.cf").write_text("\n".join(master_cf) + "\n")
    smtp_port = free_port()
    env = {
        **os.environ,
        "RECIPE_MAIN_CF": str(recipe / "main.cf"),
        "RECIPE_MASTER_CF": str(recipe / "master.cf"),
        "RECIPE_TABLES": " ".join(str(recipe / n) for n in tables),
        "PIPE_CMD": pipe_cmd,
        "RECIPIENTS": "",
    }
    proc = subprocess.run(
        [str(PEERS / "start-postfix.sh"), str(base / "pf"), str(smtp_port), "none", "example.com"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        dsn.close()
        raise AssertionError(f"start-postfix.sh failed: {proc.stderr}")
    return Postfix(base / "pf", smtp_port, dsn)


def _stop_postfix(pf: Postfix) -> None:
    subprocess.run([str(PEERS / "stop-postfix.sh"), str(pf.dir)], capture_output=True, timeout=60)
    pf.dsn.close()


def _db_messages(db: Database, message_ids: set[str]) -> list[Message]:
    with db.read() as session:
        return [m for m in session.exec(select(Message)) if m.message_id in message_ids]


def _tickets(db: Database, subject: str) -> list[Ticket]:
    with db.read() as session:
        return [t for t in session.exec(select(Ticket)) if t.subject == subject]


def _customer() -> str:
    return f"c{uuid.uuid4().hex[:10]}@{OUTSIDE}"


def _mail(subject: str, **kw: object) -> EmailMessage:
    sender = str(kw.pop("sender", None) or _customer())
    msg = make_mail(sender=sender, subject=subject, **kw)  # type: ignore[arg-type]
    return msg


def _mid(msg: EmailMessage) -> str:
    return str(msg["Message-ID"]).strip("<>")


# ---------------------------------------------------------------- Postfix -> LMTP (serve)
@dataclass
class LmtpDesk:
    postfix: Postfix
    config_path: Path
    outbound: SmtpSink
    map_port: int = 0
    mg: Mailgate | None = None
    db: Database = field(init=False)

    def __post_init__(self) -> None:
        self.db = Database(_config_url(self.config_path))

    def start(self) -> None:
        self.mg = Mailgate(self.config_path)

    def stop(self) -> None:
        if self.mg is not None:
            self.mg.stop()
            self.mg = None


def _config_url(config_path: Path) -> str:
    from mailgate import config as config_mod

    return config_mod.load(config_path).database.url


@pytest.fixture(scope="module")
def lmtp_desk() -> Iterator[LmtpDesk]:
    base = _private_dir("mgpfl-")
    outbound = SmtpSink()
    lmtp_port, map_port = free_port(), free_port()
    mg_dir = base / "mailgate"
    mg_dir.mkdir()
    config_path = write_config(
        mg_dir, database_url=f"sqlite:///{mg_dir / 'mailgate.db'}", sink_port=outbound.port
    )
    text = config_path.read_text()
    toml = "\n".join(render(MAILGATE_LMTP_TOML, lmtp_port=lmtp_port, map_port=map_port))
    config_path.write_text(text.replace('lmtp_listen = "127.0.0.1:0"', toml))
    desk = LmtpDesk(
        postfix=None,
        config_path=config_path,
        outbound=outbound,
        map_port=map_port,  # type: ignore[arg-type]
    )
    desk.start()
    values = {
        "domain": "example.com",
        "map_port": map_port,
        "lmtp_port": lmtp_port,
        "postfix_dir": base / "pf" / "config",
        "max_bytes": MAX_BYTES,
    }
    try:
        desk.postfix = _start_postfix(
            base,
            render(LMTP_MAIN_CF, **values),
            {"transport": render(LMTP_TRANSPORT, **values)},
        )
    except BaseException:
        desk.stop()
        outbound.close()
        raise
    yield desk
    _stop_postfix(desk.postfix)
    desk.stop()
    desk.db.dispose()
    outbound.close()
    shutil.rmtree(base, ignore_errors=True)


def test_twenty_mails_through_postfix_are_twenty_tickets(lmtp_desk: LmtpDesk):
    pf = lmtp_desk.postfix
    mails = [_mail(f"Burst {i} {uuid.uuid4().hex[:6]}") for i in range(20)]
    for m in mails:
        pf.send(m, ["support@example.com"], addr(str(m["From"])))
    ids = {_mid(m) for m in mails}
    wait_until(lambda: len(_db_messages(lmtp_desk.db, ids)) >= 20, 60, "20 messages stored")
    pf.wait_empty()
    stored = _db_messages(lmtp_desk.db, ids)
    assert len(stored) == 20 and len({m.ticket_id for m in stored}) == 20


def test_unknown_recipients_are_refused_at_rcpt_by_postfix(lmtp_desk: LmtpDesk):
    pf = lmtp_desk.postfix
    code, reply = pf.rcpt_reply("nobody@example.com")
    assert code == 550 and "User unknown in relay recipient table" in reply, reply
    # Ours, as the socketmap answers them: support, its +token form, a category address.
    for ours in ("support@example.com", "support+abc123@example.com", "Billing@Example.com"):
        assert pf.rcpt_reply(ours)[0] == 250, ours
    # Nothing was queued for the unknown one: no bounce (backscatter) to anyone.
    assert "nobody@example.com" not in pf.queue_json()
    # The check the documentation gives, from Postfix's side.
    table = f"socketmap:inet:127.0.0.1:{lmtp_desk.map_port}:mailgate"

    def query(key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postmap", "-c", str(pf.conf), "-q", key, table],
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert query("support+x@example.com").stdout.strip() == "OK"
    unknown = query("nobody@example.com")
    assert (unknown.returncode, unknown.stdout) == (1, "")


def test_a_reply_to_the_token_address_threads_through_postfix(lmtp_desk: LmtpDesk):
    pf = lmtp_desk.postfix
    customer = _customer()
    subject = f"Imprimante {uuid.uuid4().hex[:6]}"
    pf.send(_mail(subject, sender=customer), ["support@example.com"], customer)
    (confirmation,) = lmtp_desk.outbound.wait_kind("confirmation", to=customer)
    token_address = addr(str(confirmation.msg["Reply-To"]))
    assert token_address.startswith("support+"), token_address
    reply = _mail(f"Re: {subject}", sender=customer, to=token_address, body="Toujours en panne.\n")
    pf.send(reply, [token_address], customer)
    wait_until(lambda: _db_messages(lmtp_desk.db, {_mid(reply)}), 30, "the reply stored")
    (ticket,) = _tickets(lmtp_desk.db, subject)
    (stored,) = _db_messages(lmtp_desk.db, {_mid(reply)})
    assert stored.ticket_id == ticket.id


def test_a_mail_to_two_of_our_addresses_is_one_ticket_through_lmtp(lmtp_desk: LmtpDesk):
    pf = lmtp_desk.postfix
    subject = f"Deux adresses {uuid.uuid4().hex[:6]}"
    msg = _mail(subject, to="support@example.com, billing@example.com")
    qid = pf.send(msg, ["support@example.com", "billing@example.com"], addr(str(msg["From"])))
    pf.wait_log(rf"{qid}: to=<[^>]+>, relay=127\.0\.0\.1.*status=sent", count=2)
    assert len(_tickets(lmtp_desk.db, subject)) == 1


def test_postfix_enforces_the_size_limit_so_mailgate_never_has_to_bounce(lmtp_desk: LmtpDesk):
    pf = lmtp_desk.postfix
    customer = _customer()
    # Postfix's limit is mailgate's (the recipe): a mail over it is refused at SMTP time
    # (552, the sender's own MTA tells the sender), never accepted and bounced later.
    huge = _mail("Trop gros", sender=customer)
    huge.set_content("0123456789abcdef\n" * (MAX_BYTES // 17 + 100))
    with pytest.raises(AssertionError, match="552"):
        pf.send(huge, ["support@example.com"], customer)
    # Postfix counts its envelope too, so whatever it accepts fits mailgate's limit:
    # a mail just under it is stored, not bounced.
    subject = f"Presque trop gros {uuid.uuid4().hex[:6]}"
    msg = _mail(subject, sender=customer)
    # 18 bytes a line on the wire (CRLF)
    msg.set_content("0123456789abcdef\n" * ((MAX_BYTES - 1500 - len(msg.as_bytes())) // 18))
    assert MAX_BYTES - 1700 < len(crlf(msg.as_bytes())) < MAX_BYTES - 1400
    qid = pf.send(msg, ["support@example.com"], customer)
    pf.wait_log(rf"{qid}: to=<support@example\.com>.*status=sent")
    assert len(_tickets(lmtp_desk.db, subject)) == 1


def test_mailgate_stopped_during_a_burst_postfix_defers_and_redelivers(lmtp_desk: LmtpDesk):
    pf = lmtp_desk.postfix
    mails = [
        _mail(f"Pendant l'arrêt {i} {uuid.uuid4().hex[:6]}", headers={"X-Test-Hold": "yes"})
        for i in range(20)
    ]
    for m in mails:  # accepted while mailgate (and its socketmap) answers, kept on hold
        pf.send(m, ["support@example.com"], addr(str(m["From"])))
    ids = {_mid(m) for m in mails}
    wait_until(lambda: pf.queue_json().count('"queue_name": "hold"') >= 20, 30, "20 held")
    pf.release_held()
    pf.flush()  # Postfix starts delivering the burst ...
    wait_until(lambda: _db_messages(lmtp_desk.db, ids), 30, "the first of the burst stored")
    lmtp_desk.stop()  # ... and mailgate stops under it (finishing what it has in hand)
    # With mailgate gone, new mail waits at the sender: the socketmap cannot answer.
    assert pf.rcpt_reply("support@example.com")[0] == 451

    # Every mail is either stored or waiting in Postfix's queue; none is bounced.
    def settled() -> bool:
        queue = pf.queue()
        tried = all(
            q["queue_name"] == "deferred" and q["recipients"][0].get("delay_reason") for q in queue
        )
        return tried and len(queue) + len(_db_messages(lmtp_desk.db, ids)) == 20

    wait_until(settled, 60, "each mail stored or deferred")
    assert "status=bounced" not in "\n".join(
        line for line in pf.log().splitlines() if "Pendant" in line
    )
    deferred_while_down = len(pf.queue_ids())
    lmtp_desk.start()
    pf.flush()
    wait_until(lambda: len(_db_messages(lmtp_desk.db, ids)) == 20, 60, "all 20 stored")
    pf.wait_empty()
    stored = _db_messages(lmtp_desk.db, ids)
    assert sorted(m.message_id for m in stored) == sorted(ids)  # none lost, none doubled
    assert len({m.ticket_id for m in stored}) == 20
    if deferred_while_down:  # else Postfix was quicker than the stop: nothing to redeliver
        deferred = [line for line in pf.log().splitlines() if "status=deferred" in line]
        assert len(deferred) >= deferred_while_down, deferred
        # Refused while down, or cut mid-session by the stop: a temporary status either way.
        assert all("dsn=4." in line for line in deferred), deferred


# ---------------------------------------------------------------- Postfix -> pipe (deliver)
PIPE_USER = "mailgate"


def _ensure_pipe_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PIPE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                PIPE_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(PIPE_USER)


def _runs_as_pipe_user(path: str) -> bool:
    return subprocess.run(["runuser", "-u", PIPE_USER, "--", "test", "-x", path]).returncode == 0


def _pipe_python(base: Path) -> str:
    """The venv's interpreter when the pipe user can run it. A venv built on a Python only
    root can read (pyenv under /root) cannot be: then a venv on Debian's python3 of the same
    version, seeing the project venv's packages, stands in for it."""
    if _runs_as_pipe_user(os.path.realpath(sys.executable)):
        return sys.executable
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.path.exists(system):
        pytest.skip(f"the pipe user cannot run {sys.executable} and there is no {system}")
    venv = base / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = sysconfig.get_paths()["purelib"]
    purelib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (purelib / "site-packages" / "mailgate-dev.pth").write_text(
        f"import site; site.addsitedir({site!r})\n"
    )
    return str(venv / "bin" / "python")


@dataclass
class PipeDesk:
    postfix: Postfix
    config_path: Path
    db: Database
    uid: int
    gid: int

    def set(self, key: str, value: str) -> None:
        """Change one config key: `deliver` reads the config at each delivery."""
        text = self.config_path.read_text()
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.config_path)


@pytest.fixture(scope="module")
def pipe_python() -> Iterator[str]:
    """An interpreter the pipe user can run, with the project's packages."""
    _ensure_pipe_user()
    base = _private_dir("mgpfy-")
    yield _pipe_python(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pipe_desk(pipe_python: str) -> Iterator[PipeDesk]:
    user = _ensure_pipe_user()
    base = _private_dir("mgpfp-")
    python = pipe_python
    mg_dir = base / "mailgate"
    mg_dir.mkdir()
    url = f"sqlite:///{mg_dir / 'mailgate.db'}"
    config_path = write_config(mg_dir, database_url=url, sink_port=free_port())
    db = Database(url)
    db.upgrade()
    # The pipe runs as the mailgate user: it owns the data, as under systemd. (Reading the
    # database here as root keeps that owner: SQLite gives its -wal/-shm the file's owner.)
    for p in [mg_dir, *mg_dir.rglob("*")]:
        os.chown(p, user.pw_uid, user.pw_gid)
    values = {
        "domain": "example.com",
        "postfix_dir": base / "pf" / "config",
        "max_bytes": MAX_BYTES,
        "mailgate": f"{python} -m mailgate",
        "config": config_path,
    }
    pf = _start_postfix(
        base,
        render(PIPE_MAIN_CF, **values),
        {
            "transport": render(PIPE_TRANSPORT, **values),
            "mailgate_recipients": render(PIPE_RECIPIENTS, **values),
        },
        render(PIPE_MASTER_CF, **values),
        pipe_cmd=python,
    )
    yield PipeDesk(pf, config_path, db, user.pw_uid, user.pw_gid)
    _stop_postfix(pf)
    db.dispose()
    shutil.rmtree(base, ignore_errors=True)


def _pipe_delivered(pf: Postfix, qid: str, count: int = 1) -> None:
    pf.wait_log(rf"{qid}: to=<[^>]+>, relay=mailgate.*status=sent", 60, count)


def test_pipe_delivers_and_a_null_sender_bounce_opens_no_ticket(pipe_desk: PipeDesk):
    pf = pipe_desk.postfix
    customer = _customer()
    subject = f"Par le pipe {uuid.uuid4().hex[:6]}"
    _pipe_delivered(pf, pf.send(_mail(subject, sender=customer), ["support@example.com"], customer))
    (ticket,) = _tickets(pipe_desk.db, subject)
    # A bounce: MAIL FROM:<>, and nothing else marks it (its From is no role address).
    # With null_sender= the pipe passes "" (not MAILER-DAEMON), so mailgate sees a bounce:
    # no ticket, no answer. (With "MAILER-DAEMON" it opened a ticket and answered it.)
    bounce_subject = f"Delivery report {uuid.uuid4().hex[:6]}"
    bounce = _mail(
        bounce_subject,
        sender="Delivery Status <status@mx.sender.test>",
        body="Your message could not be delivered.\n",
    )
    qid = pf.send(bounce, ["support@example.com"], "")
    _pipe_delivered(pf, qid)
    assert not _tickets(pipe_desk.db, bounce_subject)
    assert ticket.id is not None


def test_a_mail_to_two_of_our_addresses_is_one_ticket_through_the_pipe(pipe_desk: PipeDesk):
    pf = pipe_desk.postfix
    subject = f"Deux adresses pipe {uuid.uuid4().hex[:6]}"
    msg = _mail(subject, to="support@example.com, billing+x1@example.com")
    # One recipient per `deliver` (recipient_limit = 1): two runs, one ticket.
    qid = pf.send(msg, ["support@example.com", "billing+x1@example.com"], addr(str(msg["From"])))
    _pipe_delivered(pf, qid, count=2)
    assert len(_tickets(pipe_desk.db, subject)) == 1


def test_a_message_deliver_refuses_bounces_with_one_clean_line(pipe_desk: PipeDesk):
    pf = pipe_desk.postfix
    customer = _customer()
    subject = f"Gros pipe {uuid.uuid4().hex[:6]}"
    msg = _mail(subject, sender=customer)
    msg.set_content("0123456789abcdef\n" * (MAX_BYTES // 2 // 17))
    # As if Postfix's message_size_limit were left above mailgate's: Postfix accepts, then
    # `deliver` refuses (exit 65) and Postfix bounces with mailgate's status.
    pipe_desk.set("max_message_bytes", str(MAX_BYTES // 4))
    try:
        qid = pf.send(msg, ["support@example.com"], customer)
        (line,) = pf.wait_log(
            rf"{qid}: to=<support@example\.com>, relay=mailgate.*status=bounced.*"
        )
    finally:
        pipe_desk.set("max_message_bytes", str(MAX_BYTES))
    (dsn,) = pf.dsn.wait_for(lambda ms: any(customer in m.rcpt_tos for m in ms), 30)[-1:]
    text = dsn.raw.decode(errors="replace")
    assert re.search(r"Status: 5\.\d\.\d", text), text
    # The status the sender reads is mailgate's one line, nothing of its logs.
    assert "mailgate: refused: 552" in line, line
    assert "level=" not in text and "Traceback" not in text, text
    assert not _tickets(pipe_desk.db, subject)


def test_a_database_fault_defers_and_the_retry_delivers_once(pipe_desk: PipeDesk):
    pf = pipe_desk.postfix
    good = _config_url(pipe_desk.config_path)
    pipe_desk.set("url", '"sqlite:////nonexistent-mailgate-dir/mailgate.db"')
    subject = f"Base en panne {uuid.uuid4().hex[:6]}"
    msg = _mail(subject)
    try:
        qid = pf.send(msg, ["support@example.com"], addr(str(msg["From"])))
        (line,) = pf.wait_log(
            rf"{qid}: to=<support@example\.com>, relay=mailgate.*"
            r"status=deferred.*",
            60,
        )
    finally:
        pipe_desk.set("url", f'"{good}"')
    assert "mailgate: temporary failure" in line and "Traceback" not in line, line
    assert qid in pf.queue_ids()
    pf.flush()
    _pipe_delivered(pf, qid)
    pf.wait_empty()
    assert len(_tickets(pipe_desk.db, subject)) == 1
    assert len(_db_messages(pipe_desk.db, {_mid(msg)})) == 1


# ---------------------------------------------------------------- the service user
def _serve_as_pipe_user(python: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "runuser",
            "-u",
            PIPE_USER,
            "--",
            python,
            "-m",
            "mailgate",
            "--config",
            str(config),
            "serve",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_as_a_service_user_names_what_it_cannot_reach(pipe_python: str):
    """Once a misleading "cannot start: Connection refused" or a traceback: now one line
    naming the file or folder and the user."""
    base = _private_dir("mgpfs-")
    try:
        config = write_config(
            base, database_url=f"sqlite:///{base / 'mailgate.db'}", sink_port=free_port()
        )
        (base / "data").mkdir(mode=0o755)  # root's: the service user cannot write it
        proc = _serve_as_pipe_user(pipe_python, config, Path("/"))
        assert proc.returncode == 71, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("mailgate: cannot start: Permission denied: "), line
        assert str(base / "data") in line and f"(as user {PIPE_USER})" in line, line

        # A working directory it cannot enter (serve run from root's home, say): the parse
        # workers start there and died with an EOFError.
        for p in [base, *base.rglob("*")]:
            os.chown(p, pwd.getpwnam(PIPE_USER).pw_uid, pwd.getpwnam(PIPE_USER).pw_gid)
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        proc = _serve_as_pipe_user(pipe_python, config, closed)
        assert proc.returncode == 71, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line == (
            f"mailgate: cannot start: the working directory {closed} cannot be "
            f"entered by user {PIPE_USER}: cd / first"
        ), line
    finally:
        shutil.rmtree(base, ignore_errors=True)
