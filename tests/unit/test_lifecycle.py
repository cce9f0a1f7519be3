"""Ticket statuses as functions of events and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailgate.core import lifecycle

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("before", "after"),
    [("new", "new"), ("open", "open"), ("pending", "open"), ("solved", "open"),
     ("closed", "closed")],
)
def test_customer_reply(before: str, after: str) -> None:
    assert lifecycle.after_customer_reply(before) == after


@pytest.mark.parametrize(
    ("before", "after"),
    [("new", "pending"), ("open", "pending"), ("pending", "pending"), ("solved", "pending"),
     ("closed", "closed")],
)
def test_agent_reply(before: str, after: str) -> None:
    assert lifecycle.after_agent_reply(before) == after


def test_auto_resolve_at_day_seven_not_before() -> None:
    def due(now: datetime) -> bool:
        return lifecycle.due_for_auto_resolve("pending", T0, False, now, 7)

    assert not due(T0 + 6 * DAY)
    assert not due(T0 + 7 * DAY - SECOND)
    assert due(T0 + 7 * DAY)
    assert due(T0 + 30 * DAY)  # a job that did not run for weeks catches up


@pytest.mark.parametrize("status", ["new", "open", "solved", "closed"])
def test_only_pending_tickets_auto_resolve(status: str) -> None:
    assert not lifecycle.due_for_auto_resolve(status, T0, False, T0 + 30 * DAY, 7)


def test_paused_or_unknown_start_never_auto_resolves() -> None:
    assert not lifecycle.due_for_auto_resolve("pending", T0, True, T0 + 30 * DAY, 7)
    assert not lifecycle.due_for_auto_resolve("pending", None, False, T0 + 30 * DAY, 7)


def test_close_after_days() -> None:
    assert not lifecycle.due_for_close("solved", T0, T0 + 28 * DAY - SECOND, 28)
    assert lifecycle.due_for_close("solved", T0, T0 + 28 * DAY, 28)
    assert not lifecycle.due_for_close("open", T0, T0 + 60 * DAY, 28)
    assert not lifecycle.due_for_close("solved", None, T0 + 60 * DAY, 28)


def test_days_setting_is_honoured() -> None:
    assert lifecycle.due_for_auto_resolve("pending", T0, False, T0 + 3 * DAY, 3)
    assert not lifecycle.due_for_auto_resolve("pending", T0, False, T0 + 3 * DAY, 4)
