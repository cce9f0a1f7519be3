"""The composition root of `serve`: builds every object once and passes it down.

There are no module-level singletons; tests build an App with their own config and clock.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from mailgate import cli_warm, cli_warm_server, logs
from mailgate.adapters.file_links import file_link_routes
from mailgate.adapters.health import health_routes
from mailgate.adapters.httpserver import HttpServer
from mailgate.adapters.imap import ImapPoller, mailbox_key
from mailgate.adapters.oauth_tokens import mailbox_tokens, outbound_tokens
from mailgate.adapters.oidc_client import OidcClient, read_secret
from mailgate.adapters.parsing import ParseWorkers
from mailgate.adapters.portal import PortalSettings, create_app
from mailgate.adapters.postfix_map import PostfixMap
from mailgate.adapters.scheduler import Scheduler
from mailgate.adapters.sender import Sender
from mailgate.adapters.sender_process import SenderProcess
from mailgate.adapters.smtp import (
    DataBudget,
    InboundHandler,
    InFlight,
    LmtpHandler,
    start_listener,
)
from mailgate.adapters.smtp.front import SmtpFronts
from mailgate.adapters.systemd import Notifier
from mailgate.adapters.transports import make_transport
from mailgate.clock import Clock, SystemClock
from mailgate.config import (
    DEFAULT_CUSTOMER_ID_FORMAT,
    DEFAULT_CUSTOMER_ID_PATTERN,
    Config,
    Localized,
    localized,
)
from mailgate.core.addresses import AddressBook
from mailgate.core.language_detect import parser_for
from mailgate.core.tokens import LinkTokens
from mailgate.core.verification import DEFAULT_RULES
from mailgate.keys import Keys, Purpose, load_secret
from mailgate.metrics import Metrics
from mailgate.services.accounts import Accounts
from mailgate.services.article_match import suggester
from mailgate.services.assemble import MailAssembler
from mailgate.services.captcha import Captcha
from mailgate.services.commit import GroupCommitter
from mailgate.services.health import HealthProbe
from mailgate.services.helpcentre import build_help
from mailgate.services.helpcentre_search import counter_figures
from mailgate.services.imap_state import ImapState
from mailgate.services.ingest import Ingestor
from mailgate.services.jobs import JOB_NAMES, Jobs
from mailgate.services.leases import LeaseKeeper, Leases, default_instance_id
from mailgate.services.oidc import OidcSignIn, Provider
from mailgate.services.outbox import Mailer, Transport
from mailgate.services.outbox_queue import OutboxQueue
from mailgate.services.portal import Portal, PortalAccounts
from mailgate.services.portal_tickets import PortalTickets, TicketRules
from mailgate.services.ratelimit import RateLimiter
from mailgate.services.render import MailRenderer
from mailgate.services.tickets import Conversations
from mailgate.services.websessions import WebSessions
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database
from mailgate.wiring import blob_store, mail_settings, sender_verifier

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass
class App:
    config: Config
    keys: Keys
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
    metrics: Metrics
    health: HealthProbe
    imap_state: ImapState
    portal: Portal
    parsers: ParseWorkers
    leases: Leases  # what this instance holds: jobs, IMAP mailboxes (several instances)
    listeners: dict[str, tuple[str, int]] = field(default_factory=dict)
    mailboxes: dict[str, str] = field(default_factory=dict)  # IMAP mailbox -> its state
    # IMAP mailbox -> last login, last poll, token expiry, error (/healthz "mailboxes")
    mailbox_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Built from the config alone (no test clock or transport): `serve` may then run the
    # sender in a process of its own, which builds the same App.
    sender_process: bool = False


def build(config: Config, clock: Clock | None = None, transport: Transport | None = None) -> App:
    sender_process = clock is None and transport is None
    clock = clock or SystemClock()
    keys = app_keys(config)
    db = Database(config.database.url)
    blobs = blob_store(config)  # [blobs] url: a local folder or an S3-compatible store
    renderer = MailRenderer(
        TEMPLATES, config.mailgate.default_locale, config.mailgate.default_timezone
    )
    settings = mail_settings(config)
    mailer = Mailer(settings, renderer, clock)
    links = LinkTokens(keys.key(Purpose.LINKS), clock.now)
    accounts = Accounts(mailer, links, clock, config.mailgate.default_locale)
    addresses = AddressBook(config.support_address, dict(config.addresses.categories))
    conversations = Conversations(
        accounts=accounts,
        mailer=mailer,
        blobs=blobs,
        addresses=addresses,
        reply_key=keys.key(Purpose.REPLY),
        clock=clock,
        articles_in_confirmation=config.helpcentre.suggest_in_confirmation,
    )
    committer = GroupCommitter(db)
    # With the blob store, workers write big attachments themselves and read big mails from
    # it: serve never receives, unpickles or holds a 25 MB attachment.
    parsers = ParseWorkers(
        config.inbound.parse_workers,
        config.inbound.parse_timeout_seconds,
        parse=parser_for(renderer.locales),  # with the language of the text (issue 15)
        blobs=blobs,
    )
    ingestor = Ingestor(
        db=db,
        blobs=blobs,
        conversations=conversations,
        addresses=addresses,
        reply_key=keys.key(Purpose.REPLY),
        hostname=config.mailgate.hostname,
        clock=clock,
        max_message_bytes=config.inbound.max_message_bytes,
        max_received_headers=config.inbound.max_received_headers,
        committer=committer,
        parse=parsers,
        authserv_id=config.security.authserv_id,
        require_dmarc_for_threading=config.security.require_dmarc_for_threading,
        verifier=sender_verifier(config),
        verification_rules=DEFAULT_RULES.with_extra(
            config.security.verification_senders,
            config.security.verification_phrases,
            config.security.hold_verification_mail,
        ),
    )
    instance = config.instance.id or default_instance_id()
    leases = Leases(db, clock, instance, config.instance.lease_seconds)
    metrics = Metrics()
    outbox = OutboxQueue(
        db, settings, clock, lease_seconds=config.outbound.lease_seconds, instance=instance,
        on_in_doubt=metrics.outbound_in_doubt.inc,
    )  # fmt: skip
    metrics.read_holds(instance, lease_names(config), leases.holds)
    health = HealthProbe(db, clock)
    metrics.read_figures(lambda: {**health.figures(), **counter_figures(db)})
    transport = transport or make_transport(
        config.outbound.transport,
        config.mailgate.hostname,
        config.outbound.connections,
        tokens=outbound_tokens(config.outbound),
    )
    jobs = Jobs(
        db, conversations, config.tickets.auto_resolve_after_days, config.tickets.close_after_days
    )
    # The sender renders each mail from its parameters, reading attachments from the blob
    # store and the articles a confirmation suggests from the help centre.
    assembler = MailAssembler(renderer, blobs, suggester(db, mailer.url))
    return App(
        config=config,
        keys=keys,
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
        # With several instances on PostgreSQL, outcomes are recorded every 20 mails: what an
        # instance dying mid-batch leaves sent-but-unrecorded (sent again) stays small.
        sender=Sender(
            outbox,
            transport,
            metrics=metrics,
            assemble=assembler.assemble,
            settle_every=None if db.is_sqlite else 20,
        ),
        jobs=jobs,
        metrics=metrics,
        health=health,
        imap_state=ImapState(ingestor),
        portal=build_portal(config, keys, clock, db, blobs, accounts, conversations, committer),
        parsers=parsers,
        leases=leases,
        sender_process=sender_process,
    )


def lease_names(config: Config) -> list[str]:
    """Everything one instance at a time may do: each scheduled job, each IMAP mailbox."""
    return [f"job:{name}" for name in JOB_NAMES] + [
        f"imap:{mailbox_key(box)}" for box in config.imap.mailboxes
    ]


def app_keys(config: Config) -> Keys:
    """Every key, derived from the one secret (created in data_dir on first start)."""
    return Keys(load_secret(config.mailgate.secret_key, config.secret_file))


def _canonical(config: Config, value: Localized) -> str:
    """A per-locale value's text in the default language: what is stored and checked."""
    default = config.mailgate.default_locale
    return localized(value, default, default)


def build_portal(
    config: Config,
    keys: Keys,
    clock: Clock,
    db: Database,
    blobs: BlobStore,
    accounts: Accounts,
    conversations: Conversations,
    committer: GroupCommitter,
) -> Portal:
    """The portal's use cases; they write through the committer, like mail ingestion."""
    limiter = RateLimiter(clock)
    captcha = Captcha(keys.key(Purpose.CAPTCHA), clock)
    rules = TicketRules(
        customer_id_pattern=config.portal.customer_id_pattern,
        # Kept and checked in the default language; shown in each visitor's (issue 15).
        problems=tuple(_canonical(config, v) for v in config.portal.problem_categories),
        broadcasters=tuple(_canonical(config, v) for v in config.portal.broadcasters),
        max_upload_bytes=config.inbound.max_message_bytes,
        hostname=config.mailgate.hostname,
    )
    return Portal(
        accounts=PortalAccounts(
            db=db,
            write=committer.run,
            accounts=accounts,
            sessions=WebSessions(clock, key=keys.key(Purpose.SESSIONS)),
            limiter=limiter,
            captcha=captcha,
            agents_password=config.auth.agents_password,
        ),
        tickets=PortalTickets(
            db=db,
            write=committer.run,
            conversations=conversations,
            blobs=blobs,
            limiter=limiter,
            clock=clock,
            rules=rules,
        ),
        captcha=captcha,
        help=build_help(db, committer.run, conversations, clock, blobs),
        oidc=build_oidc(config, keys, clock, db, accounts, committer),
    )


def build_oidc(
    config: Config,
    keys: Keys,
    clock: Clock,
    db: Database,
    accounts: Accounts,
    committer: GroupCommitter,
) -> OidcSignIn:
    """Sign-in with the `[[auth.oidc]]` providers (none: no buttons, the routes answer 404).
    Sessions are the password sign-in's own (same table, same key)."""
    base = config.portal.base_url.rstrip("/")
    providers = [
        Provider(
            name=p.name,
            label=p.label,
            client=OidcClient(p, read_secret(p), f"{base}/auth/{p.name}/callback", clock),
            allowed_domains=tuple(p.allowed_domains),
            customers="customers" in p.users,
            agents="agents" in p.users,
        )
        for p in config.auth.oidc
    ]
    return OidcSignIn(
        db=db,
        write=committer.run,
        accounts=accounts,
        sessions=WebSessions(clock, key=keys.key(Purpose.SESSIONS)),
        clock=clock,
        providers=providers,
        agents_password=config.auth.agents_password,
    )


def portal_asgi(app: App) -> Starlette:
    cfg = app.config
    settings = PortalSettings(
        base_url=cfg.portal.base_url,
        site_name=cfg.outbound.from_name,
        default_locale=cfg.mailgate.default_locale,
        customer_id_label=cfg.portal.customer_id_label,
        customer_id_format=cfg.portal.customer_id_format
        or (
            DEFAULT_CUSTOMER_ID_FORMAT
            if cfg.portal.customer_id_pattern == DEFAULT_CUSTOMER_ID_PATTERN
            else ""
        ),
        labels={
            _canonical(cfg, v): v
            for v in [*cfg.portal.problem_categories, *cfg.portal.broadcasters]
        },
        # Room for the attachments the same mail could carry, plus the form around them.
        max_body_bytes=cfg.inbound.max_message_bytes + 1024 * 1024,
        csrf_key=app.keys.key(Purpose.CSRF),
        templates=TEMPLATES / "portal",
        timezone=cfg.mailgate.default_timezone,
    )
    # /healthz and /metrics live on the portal unless [metrics] listen gives them their own.
    extra = [] if cfg.metrics.listen else health_routes(app)
    extra += file_link_routes(app.db, app.blobs, app.links)
    return create_app(app.portal, settings, extra_routes=extra, wake_sender=app.sender.wakeup.set)


def _warm_commands(app: App, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The warm process that runs admin commands (cli_warm.py), with the sender's condition:
    a test clock or transport is this process's alone."""
    cfg = app.config
    path = cli_warm.socket_path(cfg.data_dir)
    if not (cfg.mailgate.warm_commands and app.sender_process):
        return []
    if not cli_warm.path_fits(path):
        logs.warning("cli_warm.off", reason="socket path longer than 107 bytes", socket=str(path))
        return []
    return [asyncio.create_task(cli_warm_server.keep_warm(path, stop), name="cli_warm")]


async def serve(
    app: App,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[App], None] | None = None,
    install_signals: bool = True,
    notifier: Notifier | None = None,
) -> None:
    """Every listener, the sender and the scheduler on one loop, until `stop` or SIGTERM."""
    cfg = app.config
    notifier = notifier or Notifier.from_environ(os.environ)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    # A session preparing a message holds a worker thread (the parse hand-off, sender checks);
    # IMAP pollers and the sender's requests use them too: more than the default (cores+4).
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="mailgate"))
    await asyncio.to_thread(app.db.upgrade)
    app.committer.start()
    await asyncio.to_thread(app.parsers.start)  # parses get a deadline from here on
    if app.ingestor.verifier is not None:  # the public suffix list, before the first mail
        await asyncio.to_thread(app.ingestor.verifier.warm)
    inflight = InFlight()
    # One memory budget for the DATA of both listeners together (adapters/smtp.py).
    data_budget = DataBudget(cfg.inbound.max_inflight_bytes)
    wake_sender = app.sender.wakeup.set
    servers: list[asyncio.AbstractServer] = []
    # SMTP/LMTP sessions in child processes (adapters/smtp/front.py); like the sender's, they
    # build the App from the config, so not with a test's clock or transport.
    fronts = None
    if cfg.inbound.smtp_processes and app.sender_process:
        fronts = SmtpFronts(build, cfg, app.ingestor, app.metrics, wake_sender,
                            count=cfg.inbound.smtp_processes)  # fmt: skip
    for name, listen, lmtp in (
        ("smtp", cfg.inbound.smtp_listen, False),
        ("lmtp", cfg.inbound.lmtp_listen, True),
    ):
        if not listen:
            continue
        if fronts is not None:
            app.listeners[name] = fronts.listen(name, listen, lmtp=lmtp)
            host, port = app.listeners[name]
            logs.info("listener.started", name=name, address=f"{host}:{port}", fronts=fronts.count)
            continue
        handler_cls = LmtpHandler if lmtp else InboundHandler
        server = await start_listener(
            listen,
            handler_cls(
                app.ingestor,
                name,
                inflight,
                wake_sender,
                metrics=app.metrics,
                max_recipients=cfg.inbound.max_recipients,
                budget=data_budget,
            ),
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
    if fronts is not None and fronts.listeners:
        await fronts.start()  # ready once each front accepts
    postfix_map = PostfixMap(lambda address: app.ingestor.addresses.resolve(address) is not None)
    if cfg.inbound.postfix_map_listen:  # Postfix asks it which recipients are ours
        map_server = await postfix_map.start(cfg.inbound.postfix_map_listen)
        sock = map_server.sockets[0].getsockname()
        app.listeners["postfix_map"] = (
            (sock[0], sock[1]) if isinstance(sock, tuple) else (str(sock), 0)
        )
        logs.info("listener.started", name="postfix_map", address=cfg.inbound.postfix_map_listen)
    http_servers: list[HttpServer] = []
    if cfg.metrics.listen:  # /healthz and /metrics alone, away from the portal
        metrics_http = HttpServer(Starlette(routes=health_routes(app)), cfg.metrics.listen)
        await metrics_http.start()
        http_servers.append(metrics_http)
        app.listeners["metrics"] = metrics_http.address
        host, port = metrics_http.address
        logs.info("listener.started", name="metrics", address=f"{host}:{port}")
    if cfg.portal.listen:
        portal_http = HttpServer(portal_asgi(app), cfg.portal.listen)
        await portal_http.start()
        http_servers.append(portal_http)
        app.listeners["portal"] = portal_http.address
        host, port = portal_http.address
        logs.info("listener.started", name="portal", address=f"{host}:{port}")
    # Jobs and mailboxes: taken (or waited for) before the pollers and the scheduler start.
    keeper = LeaseKeeper(app.leases, lease_names(cfg))
    await asyncio.to_thread(keeper.start)
    pollers = [
        ImapPoller(
            box,
            app.ingestor,
            app.imap_state,
            app.metrics,
            recipient=box.address or cfg.support_address,
            status=app.mailboxes,
            on_stored=lambda: loop.call_soon_threadsafe(wake_sender),
            tokens=mailbox_tokens(box),
            details=app.mailbox_details,
            lease=functools.partial(app.leases.held, f"imap:{mailbox_key(box)}"),
        )
        for box in cfg.imap.mailboxes
    ]
    for poller in pollers:
        poller.start()
    # The sender in a process of its own (rendering and sending get the other core), its
    # leases and records in the committer's group commits; a test clock or transport cannot
    # cross to another process, so with them it runs here.
    if app.sender_process:
        sender = SenderProcess(build, cfg, app.sender.wakeup, app.metrics, queue=app.outbox,
                               write=app.committer.run).run(stop)  # fmt: skip
    else:
        sender = app.sender.run(stop)
    tasks = [
        asyncio.create_task(sender, name="sender"),
        *_warm_commands(app, stop),
        asyncio.create_task(
            Scheduler(app.jobs, app.clock, leases=app.leases, metrics=app.metrics).run(stop),
            name="scheduler",
        ),
        asyncio.create_task(notifier.watchdog(stop), name="watchdog"),
    ]
    logs.info("serve.ready", listeners=",".join(app.listeners))
    notifier.ready(f"listening: {','.join(app.listeners) or 'none'}")
    if on_ready is not None:
        on_ready(app)
    await stop.wait()
    notifier.stopping()
    logs.info("serve.stopping", inflight=inflight.count)
    # Pollers first: each finishes the message in hand (its ingest needs the committer).
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in pollers))
    for http in http_servers:
        await http.stop()
    for server in servers:
        server.close()  # stop accepting; sessions in DATA finish below
    if fronts is not None and fronts.listeners:
        await fronts.stop()  # each finishes its DATA in flight: serve still commits them
    await postfix_map.stop()
    await inflight.idle.wait()
    await asyncio.to_thread(app.committer.stop)
    await asyncio.to_thread(app.parsers.stop)
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(keeper.stop)  # released: another instance takes over at once
    app.db.dispose()
    logs.info("serve.stopped")
