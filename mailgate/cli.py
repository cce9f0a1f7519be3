"""The `mailgate` command (see CONTRACT.md). Builds what a command needs and calls services;
prints tables or JSON; exits non-zero with one clear line on standard error.

Each command imports what it uses inside its handler, and builds no more than it needs: the
database alone for listings, mailgate.wiring's ingest core for commands that write tickets,
the whole App (app.build) only for serve, `outbox send` and check-config. A Postfix pipe runs
`deliver` once per mail and every import here is paid per mail (issue 11). Only `serve` and
`db upgrade` migrate; the rest check the schema revision with one SELECT.
Log records (level info) go to stderr only with --verbose (serve always logs). A listing
piped into `head` ends quietly (exit 141, as if killed by SIGPIPE, with no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailgate import config as config_mod
from mailgate import logs
from mailgate.errors import ConfigError, MailgateError, NotFound, TempFailure

if TYPE_CHECKING:
    from mailgate.store.db import Database
    from mailgate.store.models import Account
    from mailgate.wiring import Core

EX_OK, EX_USAGE, EX_DATAERR, EX_SOFTWARE, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 70, 75, 78
EX_OSERR = 71
EX_SIGPIPE = 128 + 13  # what a shell reports for a writer killed by SIGPIPE
VERBOSE_HELP = "log every event on stderr (default: warnings and errors only)"
JSON_HELP = "print JSON instead of a table"
STATUSES = ("new", "open", "pending", "solved", "closed")


class BadArgument(MailgateError):
    """A value on the command line that cannot be used (exit EX_USAGE)."""


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(_cell(r.get(c)).ljust(widths[c]) for c in columns).rstrip())


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _output(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=2))
    elif isinstance(data, list) and columns:
        _print_table(data, columns)
    elif isinstance(data, dict):
        for key, value in data.items():
            if key not in ("messages", "outbox", "collaborators", "headers"):
                shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
                print(f"{key}: {shown}")
        for m in data.get("messages", []):
            flag = " (internal)" if m.get("internal") else ""
            if m.get("unverified_sender"):
                flag += " (UNVERIFIED SENDER: From could not be shown to be theirs)"
            print(f"\n--- #{m['id']} {m['role']} {m['author']} {m['created_at']}{flag}")
            print(m["body_text"])
            for a in m.get("attachments", []):
                print(f"    [{a['filename']} {a['content_type']} {a['size']} bytes]")
        if "headers" in data:
            print("\n" + data["headers"])
    else:
        print(data)


def _app(args: argparse.Namespace) -> Any:
    """Everything serve builds (Starlette, the portal, the sender...): only where needed."""
    from mailgate.app import build

    app = build(config_mod.load(args.config))
    app.db.require_current()
    return app


def _database(args: argparse.Namespace) -> Database:
    from mailgate.store.db import Database

    db = Database(config_mod.load(args.config).database.url)
    db.require_current()
    return db


def _core(args: argparse.Namespace, *, create: bool = False) -> Core:
    """What ingest and the ticket services need; `create`: give a new database its schema."""
    from mailgate.wiring import build_for_ingest

    core = build_for_ingest(config_mod.load(args.config))
    core.db.require_current(create=create)
    return core


def _whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def describe_error(exc: BaseException) -> str:
    """One line naming what stopped start-up, with the user it ran as (a service user often
    cannot read what root set up: the venv's interpreter, data_dir, the working directory)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename} (as user {_whoami()})"
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _preflight() -> str | None:
    """What would make serve's parse workers die at birth with a misleading error: they are
    started from sys.executable and chdir into our working directory."""
    if not os.access(sys.executable, os.X_OK):
        return (
            f"the Python interpreter {os.path.realpath(sys.executable)} cannot be run by user "
            f"{_whoami()}: build the venv on a Python every service user can read"
        )
    cwd = os.getcwd()
    if not os.access(cwd, os.X_OK):
        return f"the working directory {cwd} cannot be entered by user {_whoami()}: cd / first"
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from mailgate import gctune
    from mailgate.app import build, serve

    cfg = config_mod.load(args.config)
    problem = _preflight()
    if problem:
        print(f"mailgate: cannot start: {problem}", file=sys.stderr)
        return EX_OSERR
    try:
        app = build(cfg)
        # Its own process: the collector set once everything is built (in-process test
        # serves keep the test runner's).
        asyncio.run(serve(app, on_ready=lambda _app: gctune.settle()))
    except (OSError, EOFError) as exc:  # a listener cannot bind, a file cannot be read: one line
        print(f"mailgate: cannot start: {describe_error(exc)}", file=sys.stderr)
        return EX_OSERR
    return EX_OK


def cmd_deliver(args: argparse.Namespace) -> int:
    from mailgate.deliver import run  # its own module: what it may import is kept small

    return run(args)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from mailgate.keys import load_secret
    from mailgate.store.db import Database

    cfg = config_mod.load(args.config)
    # The install step also makes (or checks) the secret, as building the App used to.
    load_secret(cfg.mailgate.secret_key, cfg.secret_file)
    db = Database(cfg.database.url)
    try:
        db.upgrade()
    finally:
        db.dispose()
    print(f"database at head: {_safe_url(db.url)}")
    return EX_OK


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_ticket_list(args: argparse.Namespace) -> int:
    from mailgate.services.ticket_views import list_tickets

    with _database(args).read() as session:
        rows = list_tickets(session, args.status)
    columns = ("id", "status", "requester", "assignee", "category", "subject", "updated_at")
    _output(args, rows, columns)
    return EX_OK


def cmd_ticket_show(args: argparse.Namespace) -> int:
    from mailgate.services.ticket_views import show_ticket

    with _database(args).read() as session:
        data = show_ticket(session, args.id)
    if data is None:
        raise NotFound(f"no ticket {args.id}")
    _output(args, data)
    return EX_OK


def cmd_account_list(args: argparse.Namespace) -> int:
    from sqlmodel import col, select

    from mailgate.store.models import Account

    with _database(args).read() as session:
        rows = [
            {
                "id": a.id,
                "email": a.email,
                "name": a.name,
                "role": a.role,
                "active": a.password_hash is not None or a.activated_at is not None,
                "locale": a.locale,
                "disabled": a.disabled_at is not None,
            }
            for a in session.exec(select(Account).order_by(col(Account.id)))
        ]
    _output(args, rows, ("id", "email", "name", "role", "active", "disabled"))
    return EX_OK


def cmd_agent_add(args: argparse.Namespace) -> int:
    """An agent, and the way to set their first password: an activation mail, or with
    --print-link the link itself on stdout (alone, for scripts) and no mail."""
    from mailgate.config import ADDR_RE

    if not ADDR_RE.match(args.email):
        raise BadArgument(f"not an e-mail address: {args.email!r}")
    core = _core(args)
    link = None
    with core.db.write() as session:
        agent = core.accounts.add_agent(session, args.email, args.name, args.locale)
        who = f"agent {agent.id} {agent.email} ({agent.name})"
        if agent.password_hash is not None:
            done = f"{who}: already active, signs in with their password"
        elif args.print_link:
            link = core.accounts.activation_url(agent)
            done = f"{who}: activation link printed, no mail queued"
        else:
            core.accounts.queue_activation(session, agent, requested=True)
            done = f"{who}: activation mail queued"
    if not args.print_link:
        print(done)
    elif link is not None:
        print(link)
    else:  # nothing to print on stdout: the account has a password already
        print(f"mailgate: {done}: no activation link", file=sys.stderr)
    return EX_OK


def cmd_agent_list(args: argparse.Namespace) -> int:
    from sqlalchemy import func, or_
    from sqlmodel import col, select

    from mailgate.core.enums import Role, TicketStatus
    from mailgate.services.ticket_views import iso
    from mailgate.store.models import Account, Ticket

    with _database(args).read() as session:
        assigned = dict(
            session.exec(
                select(Ticket.assignee_id, func.count())
                .where(col(Ticket.assignee_id).is_not(None), Ticket.status != TicketStatus.CLOSED)
                .group_by(col(Ticket.assignee_id))
            ).all()
        )
        # Removed agents too (`agent remove` is what disables an account): role customer.
        query = select(Account).where(
            or_(col(Account.role) == Role.AGENT, col(Account.disabled_at).is_not(None))
        )
        rows = [
            {
                "id": a.id,
                "email": a.email,
                "name": a.name,
                "role": a.role,
                "active": a.password_hash is not None or a.activated_at is not None,
                "locale": a.locale,
                "disabled": a.disabled_at is not None,
                "disabled_at": iso(a.disabled_at),
                "assigned": assigned.get(a.id, 0),  # tickets not closed
            }
            for a in session.exec(query.order_by(col(Account.id)))
        ]
    _output(args, rows, ("id", "email", "name", "active", "disabled", "assigned"))
    return EX_OK


def _operator() -> Account:
    """Who acts at the command line: no account. AgentDesk.assign records `actor.id` (None
    here, as the jobs record None); this Account is never added to a session."""
    from mailgate.store.models import Account

    return Account(id=None, email="", name="mailgate CLI")


def cmd_agent_remove(args: argparse.Namespace) -> int:
    """Unassigns the agent's tickets (an `assign` event each), then disables the account."""
    from sqlmodel import col, select

    from mailgate.core.enums import Role
    from mailgate.store.models import Ticket

    core = _core(args)
    with core.db.write() as session:
        account = core.accounts.find(session, args.email)
        if account is None or (account.role != Role.AGENT and account.disabled_at is None):
            raise NotFound(f"no agent {args.email}")
        if account.disabled_at is not None:
            done = f"agent {account.email} was removed already"
        else:
            tickets = session.exec(
                select(Ticket).where(Ticket.assignee_id == account.id).order_by(col(Ticket.id))
            ).all()
            now = core.clock.now()
            for ticket in tickets:
                core.conversations.agents.assign(session, ticket, _operator(), None)
                ticket.updated_at = now
                session.add(ticket)
            core.accounts.disable(session, account)
            numbers = ", ".join(f"#{t.id}" for t in tickets)
            done = f"agent {account.email} removed: {len(tickets)} tickets unassigned"
            done += f" ({numbers})" if tickets else ""
    print(done)
    return EX_OK


def cmd_ticket_status(args: argparse.Namespace) -> int:
    from mailgate.core.commands import STATUS_VALUES
    from mailgate.store.models import Ticket

    status = args.status.strip().lower()
    if status not in STATUS_VALUES:  # what an agent's `#status` accepts: never back to new
        raise BadArgument(f"not a status: {args.status!r} (one of {', '.join(STATUS_VALUES)})")
    core = _core(args)
    with core.db.write() as session:
        ticket = session.get(Ticket, args.id)
        if ticket is None:
            raise NotFound(f"no ticket {args.id}")
        old = ticket.status
        if old != status:
            core.conversations.set_status(session, ticket, status, None)
    print(f"ticket {args.id}: {old} -> {status}" if old != status else f"ticket {args.id}: {old}")
    return EX_OK


def cmd_ticket_assign(args: argparse.Namespace) -> int:
    from mailgate.core.enums import Role
    from mailgate.store.models import Ticket

    unassign = args.email.strip().lower() == "none"
    core = _core(args)
    with core.db.write() as session:
        ticket = session.get(Ticket, args.id)
        if ticket is None:
            raise NotFound(f"no ticket {args.id}")
        target = None if unassign else core.accounts.find(session, args.email)
        if not unassign and (target is None or target.role != Role.AGENT):
            raise BadArgument(f"{args.email} is not an agent (see `mailgate agent list`)")
        if ticket.assignee_id != (target.id if target is not None else None):
            core.conversations.agents.assign(session, ticket, _operator(), target)
            ticket.updated_at = core.clock.now()
            session.add(ticket)
        done = f"assigned to {target.email}" if target is not None else "unassigned"
    print(f"ticket {args.id}: {done}")
    return EX_OK


def cmd_ticket_attachment(args: argparse.Namespace) -> int:
    """Every attachment of the ticket, in message order, under names that cannot leave DIR
    nor overwrite anything there."""
    from pathlib import Path

    from sqlmodel import col, select

    from mailgate.store.db import Database
    from mailgate.store.models import Attachment, Message, Ticket
    from mailgate.wiring import blob_store

    cfg = config_mod.load(args.config)
    db = Database(cfg.database.url)
    db.require_current()
    with db.read() as session:
        if session.get(Ticket, args.id) is None:
            raise NotFound(f"no ticket {args.id}")
        found = session.exec(
            select(Attachment.filename, Attachment.sha256)
            .join(Message, col(Message.id) == Attachment.message_pk)
            .where(Message.ticket_id == args.id)
            .order_by(col(Message.id), col(Attachment.id))
        ).all()
    folder = Path(args.out)
    blobs = blob_store(cfg)
    missing = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for filename, sha256 in found:
            try:
                data = blobs.get(sha256)
            except (OSError, ValueError):
                missing += 1
                print(
                    f"mailgate: ticket {args.id}: {filename!r} is missing from the blob store "
                    f"({sha256})",
                    file=sys.stderr,
                )
                continue
            print(_write_new(folder, safe_filename(filename), data))
    except OSError as exc:  # DIR not writable, disk full: one line
        raise MailgateError(f"cannot write attachments: {describe_error(exc)}") from None
    if not found:
        print(f"mailgate: ticket {args.id} has no attachments", file=sys.stderr)
    return 1 if missing else EX_OK


NAME_BYTES = 200  # room for " (NN)" under the usual 255-byte limit of a file name


def safe_filename(name: str) -> str:
    """A customer's file name as a plain name in one folder: no separator, no control or
    invisible formatting character (RTL override), no leading dot (`..`, hidden files)."""
    cleaned = "".join(c for c in name if c.isprintable() and c not in "/\\")
    cleaned = cleaned.strip().lstrip(".").strip()
    if len(cleaned.encode()) > NAME_BYTES:  # keep the extension, cut the stem
        stem, dot, ext = cleaned.rpartition(".")
        ext = dot + ext if stem and len(ext) <= 16 else ""
        stem = cleaned[: len(cleaned) - len(ext)]
        while len((stem + ext).encode()) > NAME_BYTES:
            stem = stem[:-1]
        cleaned = stem.rstrip() + ext
    return cleaned or "attachment"


def _write_new(folder: Path, name: str, data: bytes) -> Path:
    """Writes `data` to folder/name, or "name (2).ext", "(3)"...: the first that does not exist.
    O_EXCL: nothing is overwritten, and a symbolic link planted there is not followed."""
    import itertools

    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, dot + ext) if stem else (name, "")
    for n in itertools.count(1):
        path = folder / (name if n == 1 else f"{stem} ({n}){ext}")
        try:
            fh = open(path, "xb")  # closed below; removed again if the write fails
        except FileExistsError:
            continue
        try:
            with fh:
                fh.write(data)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        return path
    raise AssertionError("unreachable")


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from sqlmodel import col, select

    from mailgate.clock import as_utc
    from mailgate.store.models import Outbox

    with _database(args).read() as session:
        query = select(Outbox).order_by(col(Outbox.id).desc())
        if args.status:
            query = query.where(Outbox.status == args.status)
        rows = [
            {
                "id": o.id,
                "to": o.to_addr,
                "subject": o.subject,
                "kind": o.kind,
                "status": o.status,
                "attempts": o.attempts,
                "ticket_id": o.ticket_id,
                "last_error": o.last_error or None,
                # Why it waits (queued) or was never sent (failed with 0 attempts).
                "reason": o.reason or None,
                "first_contact": o.first_contact,
                "next_attempt_at": as_utc(o.next_attempt_at).isoformat(),
            }
            for o in session.exec(query)
        ]
    _output(
        args, rows, ("id", "status", "kind", "to", "attempts", "ticket_id", "subject", "reason")
    )
    return EX_OK


def cmd_outbox_send(args: argparse.Namespace) -> int:
    app = _app(args)
    n = app.sender.run_once()
    print(f"attempted {n}")
    return EX_OK


def cmd_jobs_run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from mailgate.services.jobs import Jobs

    core = _core(args)
    tickets = core.config.tickets
    jobs = Jobs(
        core.db, core.conversations, tickets.auto_resolve_after_days, tickets.close_after_days
    )
    now = datetime.now(UTC)
    if args.now:
        try:
            now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--now: not an ISO 8601 time: {args.now!r}") from None
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    report = jobs.run_all(now)
    _output(
        args,
        {"now": now.isoformat(), "auto_resolved": report.auto_resolved, "closed": report.closed},
    )
    return EX_OK


def cmd_blobs_migrate(args: argparse.Namespace) -> int:
    """Copy every blob of `[blobs] url` to --to URL (e.g. a local folder to an object store),
    checking each copy's sha256; blobs already there are skipped, so a re-run copies nothing."""
    from pathlib import Path

    from mailgate.store.blobs import copy_all, open_store
    from mailgate.wiring import blob_store

    cfg = config_mod.load(args.config)
    source = blob_store(cfg)
    to = args.to
    if to.startswith("file:") and not Path(to[len("file:") :]).is_absolute():
        to = f"file:{Path.cwd() / to[len('file:') :]}"
    try:
        target = open_store(to, cfg.data_dir / "blob-cache")
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    if target.describe() == source.describe():
        raise ConfigError("--to: that is the store [blobs] url already names")
    ensure = getattr(target, "ensure_bucket", None)
    if ensure is not None:
        ensure()
    try:
        report = copy_all(source, target)
    except ValueError as exc:
        print(f"mailgate: blobs migrate: {exc}", file=sys.stderr)
        return EX_DATAERR
    _output(
        args,
        {"from": source.describe(), "to": target.describe(), "copied": report.copied,
         "already_there": report.present, "bytes": report.bytes},
    )  # fmt: skip
    return EX_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    from mailgate.services.quarantine import QuarantineService

    service = QuarantineService(_core(args).ingestor)
    if args.action == "list":
        _output(args, service.list(args.all), ("id", "received_at", "reason", "recipient", "size"))
    elif args.action == "show":
        _output(args, service.show(args.id))
    elif args.action == "reprocess":
        _output(args, service.reprocess(args.id))
    elif args.action == "delete":
        service.delete(args.id)
        print(f"deleted {args.id}")
    return EX_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    print(f"ok   config {cfg.path}")
    from mailgate.app import build

    app = build(cfg)  # everything serve would build: that is what is being checked
    failures = 0
    checks = [
        ("database", lambda: (app.db.ping(), _safe_url(app.db.url))[1]),
        ("schema", lambda: (app.db.require_current(), f"at {app.db.revision()}")[1]),
        ("outbound", app.transport.check),
    ]
    from mailgate.adapters.imap import mailbox_key

    checks += [(f"imap {mailbox_key(box)}", _imap_check(app, box)) for box in cfg.imap.mailboxes]
    # [[auth.oidc]]: each provider's discovery document and keys (issue 14).
    oidc = app.portal.oidc.providers.values() if app.portal.oidc is not None else ()
    checks += [(f"oidc {p.name}", _oidc_check(p.client)) for p in oidc]
    for name, check in checks:
        try:
            print(f"ok   {name} {check()}")
        except Exception as exc:
            failures += 1
            print(f"FAIL {name} {exc}")
    return EX_OK if failures == 0 else EX_CONFIG


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mailgate.services.importer import Importer, ImportReport

    app = _core(args, create=True)
    if args.recipient and app.ingestor.addresses.resolve(args.recipient) is None:
        raise ConfigError(f"--recipient {args.recipient} is not one of our [addresses]")
    tty = sys.stderr.isatty()

    def progress(r: ImportReport) -> None:
        if tty or r.done % 100 == 0 or r.done == r.total:
            end = "" if tty and r.done < r.total else "\n"
            print(
                f"\rimport {r.done}/{r.total}: {r.imported} imported, {r.duplicates} "
                f"duplicates, {r.quarantined} quarantined",
                end=end,
                file=sys.stderr,
            )

    try:
        report = Importer(app.ingestor).run(Path(args.path), args.recipient, progress)
    finally:
        app.db.dispose()
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(
            f"imported {report.imported}, duplicates {report.duplicates}, "
            f"quarantined {report.quarantined}, skipped {report.skipped} (own mail, bounces), "
            f"refused {report.refused}, failed {report.failed}, of {report.total} messages"
        )
    return EX_OK


def _oidc_check(client: Any) -> Any:
    import asyncio

    return lambda: asyncio.run(client.check())


def _imap_check(app: Any, box: Any) -> Any:
    from mailgate.adapters.imap import check_mailbox
    from mailgate.adapters.oauth_tokens import mailbox_tokens

    def check() -> str:
        address = box.address or app.config.support_address
        if app.ingestor.addresses.resolve(address) is None:
            raise ValueError(f"address {address} is not one of ours ([addresses])")
        # OAuth2: a token first (TokenError: what the endpoint said), then the login with it.
        return check_mailbox(box, mailbox_tokens(box))

    return check


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command; with only="deliver", that one alone (a Postfix pipe starts us once per
    mail, and building the thirty other subparsers costs more than parsing its arguments)."""
    p = argparse.ArgumentParser(prog="mailgate", description="An email-first helpdesk.")
    p.add_argument(
        "--config", help="config file (default: $MAILGATE_CONFIG or config/mailgate.toml)"
    )
    p.add_argument(
        "--log-format",
        choices=("kv", "json"),
        default="kv",
        help="log lines as key=value (default) or one JSON object each",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log every event on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help)
        sp.set_defaults(func=func)
        sp.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument(
            "--log-format",
            choices=("kv", "json"),
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        # Accepted after the command too, as --config is; the top-level default stands.
        sp.add_argument(
            "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
        return sp

    if only != "deliver":
        add("serve", cmd_serve, "run listeners, sender, scheduler and portal")
    d = add("deliver", cmd_deliver, "ingest one message from standard input")
    # Postfix expands ${recipient} to every recipient of the delivery: "--recipient a b".
    d.add_argument(
        "--recipient", nargs="+", action="extend", help="envelope recipient(s) (repeatable)"
    )
    d.add_argument("--sender", default=None, help="envelope sender (Postfix ${sender})")
    d.add_argument(
        "--in-process",
        action="store_true",
        help="store the message in this process even when serve's LMTP listener answers",
    )
    if only == "deliver":
        return p
    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    add("upgrade", cmd_db_upgrade, "create or migrate the schema", db)

    ticket = sub.add_parser("ticket", help="tickets").add_subparsers(dest="sub", required=True)
    tl = add("list", cmd_ticket_list, "list tickets, newest first", ticket)
    tl.add_argument("--status", choices=STATUSES, help="only tickets in this status")
    tl.add_argument("--json", action="store_true", help=JSON_HELP)
    ts = add("show", cmd_ticket_show, "one ticket with its messages", ticket)
    ts.add_argument("id", type=int, help="ticket number")
    ts.add_argument("--json", action="store_true", help=JSON_HELP)
    tst = add("status", cmd_ticket_status, "set a ticket's status, as an agent would", ticket)
    tst.add_argument("id", type=int, help="ticket number")
    tst.add_argument("status", help="open, pending, solved or closed")
    tas = add("assign", cmd_ticket_assign, "assign a ticket to an agent", ticket)
    tas.add_argument("id", type=int, help="ticket number")
    tas.add_argument("email", help="the agent's address, or none to unassign")
    tat = add("attachment", cmd_ticket_attachment, "write a ticket's attachments to files", ticket)
    tat.add_argument("id", type=int, help="ticket number")
    tat.add_argument(
        "--out", default=".", help="folder to write them to (default: the current folder)"
    )

    account = sub.add_parser("account", help="accounts").add_subparsers(dest="sub", required=True)
    add("list", cmd_account_list, "list accounts", account).add_argument(
        "--json", action="store_true", help=JSON_HELP
    )
    agent = sub.add_parser("agent", help="agents").add_subparsers(dest="sub", required=True)
    aa = add("add", cmd_agent_add, "make an agent and mail them an activation link", agent)
    aa.add_argument("email", help="the agent's address")
    aa.add_argument("--name", required=True, help="the name customers see on replies")
    aa.add_argument(
        "--locale",
        choices=config_mod.mail_locales(),
        help="the language of the agent's mail (default: default_locale, or their choice)",
    )
    aa.add_argument(
        "--print-link",
        action="store_true",
        help="print the activation link on stdout instead of mailing it",
    )
    al = add("list", cmd_agent_list, "list agents, removed ones included", agent)
    al.add_argument("--json", action="store_true", help=JSON_HELP)
    ar = add("remove", cmd_agent_remove, "deactivate an agent and unassign their tickets", agent)
    ar.add_argument("email", help="the agent's address")

    outbox = sub.add_parser("outbox", help="outbound mail").add_subparsers(
        dest="sub", required=True
    )
    ol = add("list", cmd_outbox_list, "outbound mail and its state", outbox)
    ol.add_argument("--json", action="store_true", help=JSON_HELP)
    ol.add_argument(
        "--status", choices=("queued", "sent", "failed"), help="only mail in this state"
    )
    add("send", cmd_outbox_send, "send what is due now, once", outbox)

    jobs = sub.add_parser("jobs", help="scheduled jobs").add_subparsers(dest="sub", required=True)
    jr = add("run", cmd_jobs_run, "run every job once", jobs)
    jr.add_argument("--now", help="ISO 8601 time to run as")
    jr.add_argument("--json", action="store_true", help="print the report as JSON")

    blobs = sub.add_parser("blobs", help="raw mail and attachments").add_subparsers(
        dest="sub", required=True
    )
    bm = add("migrate", cmd_blobs_migrate, "copy every blob to another store, verified", blobs)
    bm.add_argument("--to", required=True, help='"file:PATH" or "s3://BUCKET/PREFIX?endpoint=..."')
    bm.add_argument("--json", action="store_true", help="print the report as JSON")

    q = sub.add_parser("quarantine", help="mail kept aside").add_subparsers(
        dest="action", required=True
    )
    ql = add("list", cmd_quarantine, "held mail", q)
    ql.add_argument("--json", action="store_true", help=JSON_HELP)
    ql.add_argument("--all", action="store_true", help="include reprocessed mail")
    for action in ("show", "reprocess", "delete"):
        qa = add(action, cmd_quarantine, f"{action} one item", q)
        qa.add_argument("id", type=int, help="quarantine item number")
        qa.add_argument("--json", action="store_true", help="print the result as JSON")
    add("check-config", cmd_check_config, "validate config and reach every peer")
    imp = add("import", cmd_import, "load an mbox file or a Maildir as tickets, mailing no one")
    imp.add_argument("path", help="mbox file or Maildir folder")
    imp.add_argument("--recipient", help="treat every message as sent to this address of ours")
    imp.add_argument("--json", action="store_true", help="the summary as JSON")
    from mailgate import cli_articles  # help-centre articles (issue 13)

    cli_articles.register(sub, add, JSON_HELP)
    from mailgate import cli_oauth  # OAuth2 mailboxes and smarthost (issue 16)

    cli_oauth.register(sub, add)
    return p


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named on a command line, skipping the options before it."""
    words = command_words(argv)
    return words[0] if words else None


def command_words(argv: Sequence[str]) -> list[str]:
    """The command line's words that are not options (nor the values of the global ones)."""
    words, tokens = [], iter(argv)
    for token in tokens:
        if _takes_value(token):
            next(tokens, None)
        elif not token.startswith("-"):
            words.append(token)
    return words


def _takes_value(token: str) -> bool:
    return (
        len(token) > 2
        and "=" not in token
        and any(option.startswith(token) for option in ("--config", "--log-format"))
    )


def _config_path(argv: Sequence[str]) -> Path:
    """The config file this command line names, as config.load would choose it."""
    chosen = None
    tokens = iter(argv)
    for token in tokens:
        name, eq, value = token.partition("=")
        if len(name) > 2 and "--config".startswith(name):
            chosen = value if eq else next(tokens, None)
    return Path(chosen or os.environ.get("MAILGATE_CONFIG") or config_mod.DEFAULT_CONFIG)


def _run_warm(argv: Sequence[str]) -> int | None:
    """The command's exit status when serve's warm process ran it (mailgate/cli_warm.py);
    None: this process runs it."""
    from mailgate import cli_warm

    if not cli_warm.warm_eligible(command_words(argv)):
        return None
    path = _config_path(argv)
    try:
        cfg = config_mod.load(path)
    except (ConfigError, OSError):
        return None  # said properly when this process runs the command
    landmarks = [path, cfg.data_dir]
    if cfg.database.url.startswith("sqlite:///"):
        landmarks.append(Path(cfg.database.url.removeprefix("sqlite:///")).parent)
    request = cli_warm.request_for(argv, landmarks)
    return cli_warm.run_warm(cli_warm.socket_path(cfg.data_dir), request)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's exit status. A command line of our own process (argv None) may be
    run by serve's warm process; a list given here (tests, that process) runs here."""
    if argv is not None:
        return _run(list(argv))
    argv = sys.argv[1:]
    code = _run_warm(argv)
    if code is not None:
        return code
    from mailgate import gctune

    gctune.for_command()
    try:
        return _run(argv)
    finally:
        gctune.before_exit()


def _run(argv: list[str]) -> int:
    args = parser("deliver" if _command_word(argv) == "deliver" else None).parse_args(argv)
    # A command's output is its result; its log records only with --verbose. serve's log is
    # its output (journald).
    quiet = not args.verbose and args.func is not cmd_serve
    logs.setup(args.log_format, logging.WARNING if quiet else logging.INFO)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit: a reader gone is then caught below
        return code
    except BrokenPipeError:
        # `mailgate ticket list | head`: the reader left. Say nothing (Python's recipe: the
        # interpreter's own flush at exit would fail again, so stdout goes to devnull).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_SIGPIPE
    except BadArgument as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return EX_USAGE
    except ConfigError as exc:
        print(f"mailgate: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except NotFound as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 1
    except TempFailure as exc:
        print(f"mailgate: temporary failure: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except MailgateError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
