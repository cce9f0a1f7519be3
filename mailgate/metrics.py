"""Prometheus metrics, in a registry of their own (not prometheus_client's global one), so two
Apps in one process (tests) never share or collide on counters.

Adapters count what they see (messages received, mail sent); figures that live in the
database (tickets, queue depth, quarantine) are read at scrape time through a callback the
composition root provides, so they are right across restarts and never drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Ingest is a parse plus one fsync'd commit: milliseconds, up to seconds for 40 MiB mails.
INGEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# name -> (kind, help) for the figures read from the database at scrape time.
FIGURES: dict[str, tuple[str, str]] = {
    "tickets_created": ("counter", "Tickets created since the database was made"),
    "outbound_queued": ("gauge", "Outbound mails waiting to be sent"),
    "outbound_oldest_queued_seconds": ("gauge", "Age of the oldest unsent outbound mail"),
    "quarantine_held": ("gauge", "Mails held in quarantine"),
    # The help centre (issue 13): read from its counters table, so they add up across
    # instances and restarts.
    "helpcentre_search": ("counter", "Help-centre searches"),
    "helpcentre_search_empty": ("counter", "Help-centre searches that found no article"),
    "helpcentre_suggestion_shown": ("counter", "Article suggestion lists shown"),
    "helpcentre_suggestion_clicked": ("counter", "Suggested articles opened"),
    "helpcentre_solved_by_article": ("counter", "Problems solved by an article"),
    "helpcentre_solved_by_customer": ("counter", "Requests marked answered by the customer"),
}
# name -> (kind, help, label) for figures read as {label value: number}.
LABELLED_FIGURES: dict[str, tuple[str, str, str]] = {
    "outbox_delayed": (
        "gauge",
        "Outbound mails held back by a limit: first_contact (waits for the hourly window), "
        "digest (agent notifications waiting for their digest)",
        "reason",
    ),
    "outbox_not_sent": (
        "counter",
        "Outbound mails recorded but never sent: auto_reply_cap (RFC 3834 per-address caps), "
        "suppressed (address hard-bounced)",
        "reason",
    ),
}

Figures = Callable[[], Mapping[str, float | Mapping[str, float] | None]]


class _FiguresCollector(Collector):
    def __init__(self, source: Figures) -> None:
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            values = self.source()
            up = 1.0
        except Exception:  # a scrape must still answer when the database is down
            values, up = {}, 0.0
        yield GaugeMetricFamily(
            "mailgate_database_up", "1 when the database answered this scrape", value=up
        )
        for name, (kind, help_text) in FIGURES.items():
            value = values.get(name)
            if value is None or isinstance(value, Mapping):
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"mailgate_{name}", help_text, value=float(value))
        for name, (kind, help_text, label) in LABELLED_FIGURES.items():
            by_label = values.get(name)
            if not isinstance(by_label, Mapping):
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            metric = family(f"mailgate_{name}", help_text, labels=[label])
            for label_value, number in sorted(by_label.items()):
                metric.add_metric([label_value], float(number))
            yield metric


class _HoldsCollector(Collector):
    """Which leases (jobs, IMAP mailboxes) this instance holds, read at scrape time."""

    def __init__(self, instance: str, wanted: Iterable[str], holds: Callable[[], Iterable[str]]):
        self.instance = instance
        self.wanted = list(wanted)
        self.holds = holds

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "mailgate_instance_info", "This instance's id (several on one database)",
            labels=["instance"],
        )  # fmt: skip
        info.add_metric([self.instance], 1.0)
        yield info
        held = set(self.holds())
        family = GaugeMetricFamily(
            "mailgate_lease_held",
            "1 while this instance holds the lease (job:NAME, imap:MAILBOX)",
            labels=["name"],
        )
        for name in sorted(set(self.wanted) | held):
            family.add_metric([name], 1.0 if name in held else 0.0)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "mailgate_messages_received",
            "Inbound messages by channel (smtp, lmtp, imap, ...) and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "mailgate_ingest_seconds",
            "Time from having the bytes to the committed ingest",
            ["channel"],
            buckets=INGEST_BUCKETS,
            registry=r,
        )
        self.outbound = Counter(
            "mailgate_outbound",
            "Outbound delivery attempts by result (sent, failed, retried)",
            ["result"],
            registry=r,
        )
        self.imap_connected = Gauge(
            "mailgate_imap_connected",
            "1 while the IMAP mailbox is connected",
            ["mailbox"],
            registry=r,
        )
        # Per mailbox (issue 16): when it last logged in and finished a pass, when its OAuth2
        # access token expires, and why logins failed.
        self.imap_last_login = Gauge(
            "mailgate_imap_last_login_timestamp_seconds",
            "When the IMAP mailbox last logged in successfully (Unix time)",
            ["mailbox"],
            registry=r,
        )
        self.imap_last_poll = Gauge(
            "mailgate_imap_last_poll_timestamp_seconds",
            "When the IMAP mailbox last finished a pass over its folder (Unix time)",
            ["mailbox"],
            registry=r,
        )
        self.imap_token_expiry = Gauge(
            "mailgate_imap_token_expiry_timestamp_seconds",
            "When the OAuth2 access token of the IMAP mailbox expires (Unix time)",
            ["mailbox"],
            registry=r,
        )
        self.imap_auth_failures = Counter(
            "mailgate_imap_auth_failures",
            "Failed IMAP logins by stage: token_endpoint (no token), token (the server refused "
            "it), login (password refused)",
            ["mailbox", "stage"],
            registry=r,
        )

        # Several instances (issue 17): job runs here, and mails taken over in doubt.
        self.job_runs = Counter(
            "mailgate_job_runs",
            "Scheduled job runs by this instance (it held the job's lease)",
            ["job"],
            registry=r,
        )
        self.outbound_in_doubt = Counter(
            "mailgate_outbound_in_doubt",
            "Outbound mails leased by an instance that died before recording them, taken over "
            "and sent again (the first attempt may have reached the smarthost)",
            registry=r,
        )

    def read_holds(
        self, instance: str, wanted: Iterable[str], holds: Callable[[], Iterable[str]]
    ) -> None:
        """Expose the instance id and the leases it holds, read on every scrape."""
        self.registry.register(_HoldsCollector(instance, wanted, holds))

    def message(self, channel: str, outcome: str, seconds: float | None = None) -> None:
        self.received.labels(channel=channel, outcome=outcome).inc()
        if seconds is not None:
            self.ingest_seconds.labels(channel=channel).observe(seconds)

    def outbound_result(self, result: str) -> None:
        self.outbound.labels(result=result).inc()

    def read_figures(self, source: Figures) -> None:
        """Expose database figures (see FIGURES), read on every scrape."""
        self.registry.register(_FiguresCollector(source))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
