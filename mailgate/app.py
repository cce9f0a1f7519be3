"""The composition root of `serve`: builds every object once and passes it down.

There are no module-level singletons; tests build an App with their own config and clock.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailgate import logs
from mailgate.adapters.scheduler import Scheduler
from mailgate.adapters.sender import Sender
from mailgate.adapters.smtp import InboundHandler, InFlight, LmtpHandler, start_listener
from mailgate.adapters.transports import make_transport
from mailgate.clock import Clock, SystemClock
from mailgate.config import Config
from mailgate.core.addresses import AddressBook
from mailgate.core.tokens import LinkTokens
from mailgate.services.accounts import Accounts
from mailgate.services.ingest import GroupCommitter, Ingestor
from mailgate.services.jobs import Jobs
from mailgate.services.outbox import Mailer, MailSettings, OutboxQueue, Transport
from mailgate.services.render import MailRenderer
from mailgate.services.tickets import Conversations
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass
class App:
    config: Config
    clock: Clock
    db: Database
    blobs: BlobStore
    renderer: MailRenderer
    mailer: Mailer
    links: LinkTokens
    accounts: Accounts
    conversations: Conversations
    committer: GroupCommitter
    ingestor: Ingestor
    outbox: OutboxQueue
    transport: Transport
    sender: Sender
    jobs: Jobs
    listeners: dict[str, tuple[str, int]] = field(default_factory=dict)


def build(config: Config, clock: Clock | None = None, transport: Transport | None = None) -> App:
    clock = clock or SystemClock()
    secret = config.secret()
    db = Database(config.database.url)
    blobs = BlobStore(config.data_dir / "blobs")
    renderer = MailRenderer(TEMPLATES, config.mailgate.default_locale)
    out = config.outbound
    settings = MailSettings(
        hostname=config.mailgate.hostname,
        support_address=config.support_address,
        from_name=out.from_name,
        base_url=config.portal.base_url,
        auto_per_hour=out.auto_per_hour,
        auto_per_day=out.auto_per_day,
        max_attempts=out.max_attempts,
        retry_base_seconds=out.retry_base_seconds,
        retry_max_seconds=out.retry_max_seconds,
    )
    mailer = Mailer(settings, renderer, clock)
    links = LinkTokens(secret, clock.now)
    accounts = Accounts(mailer, links, clock, config.mailgate.default_locale)
    addresses = AddressBook(config.support_address, dict(config.addresses.categories))
    conversations = Conversations(
        accounts=accounts,
        mailer=mailer,
        blobs=blobs,
        addresses=addresses,
        secret=secret,
        clock=clock,
    )
    committer = GroupCommitter(db)
    ingestor = Ingestor(
        db=db,
        blobs=blobs,
        conversations=conversations,
        addresses=addresses,
        secret=secret,
        hostname=config.mailgate.hostname,
        clock=clock,
        max_message_bytes=config.inbound.max_message_bytes,
        max_received_headers=config.inbound.max_received_headers,
        committer=committer,
    )
    outbox = OutboxQueue(db, settings, clock)
    transport = transport or make_transport(out.transport, config.mailgate.hostname)
    jobs = Jobs(
        db, conversations, config.tickets.auto_resolve_after_days, config.tickets.close_after_days
    )
    return App(
        config=config,
        clock=clock,
        db=db,
        blobs=blobs,
        renderer=renderer,
        mailer=mailer,
        links=links,
        accounts=accounts,
        conversations=conversations,
        committer=committer,
        ingestor=ingestor,
        outbox=outbox,
        transport=transport,
        sender=Sender(outbox, transport),
        jobs=jobs,
    )


async def serve(
    app: App,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[App], None] | None = None,
    install_signals: bool = True,
) -> None:
    """Every listener, the sender and the scheduler on one loop, until `stop` or SIGTERM."""
    cfg = app.config
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(app.db.upgrade)
    app.committer.start()
    inflight = InFlight()
    wake_sender = app.sender.wakeup.set
    servers: list[asyncio.AbstractServer] = []
    for name, listen, lmtp in (
        ("smtp", cfg.inbound.smtp_listen, False),
        ("lmtp", cfg.inbound.lmtp_listen, True),
    ):
        if not listen:
            continue
        handler_cls = LmtpHandler if lmtp else InboundHandler
        server = await start_listener(
            listen,
            handler_cls(app.ingestor, name, inflight, wake_sender),
            lmtp=lmtp,
            hostname=cfg.mailgate.hostname,
            max_bytes=cfg.inbound.max_message_bytes,
        )
        servers.append(server)
        sock = server.sockets[0].getsockname()
        app.listeners[name] = (sock[0], sock[1]) if isinstance(sock, tuple) else (str(sock), 0)
        logs.info(
            "listener.started",
            name=name,
            address=f"{app.listeners[name][0]}:{app.listeners[name][1]}",
        )
    tasks = [
        asyncio.create_task(app.sender.run(stop), name="sender"),
        asyncio.create_task(Scheduler(app.jobs, app.clock).run(stop), name="scheduler"),
    ]
    logs.info("serve.ready", listeners=",".join(app.listeners))
    if on_ready is not None:
        on_ready(app)
    await stop.wait()
    logs.info("serve.stopping", inflight=inflight.count)
    for server in servers:
        server.close()  # stop accepting; sessions in DATA finish below
    await inflight.idle.wait()
    await asyncio.to_thread(app.committer.stop)
    await asyncio.gather(*tasks, return_exceptions=True)
    app.db.dispose()
    logs.info("serve.stopped")
