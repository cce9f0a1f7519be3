"""MailgateSMTP's idle timeout keeps one timer and moves its deadline: it closes a session
exactly when aiosmtpd's timer (a new one per command) would, and never before."""

from __future__ import annotations

from collections.abc import Callable

from mailgate.adapters.smtp import MailgateSMTP


class Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when, self.callback, self._cancelled = when, callback, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class Loop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(when, callback)
        self.timers.append(handle)
        return handle

    def run_until(self, now: float) -> None:
        """Run the timers due by `now`, in order, as the loop would."""
        while True:
            due = [h for h in self.timers if not h.cancelled() and h.when() <= now]
            if not due:
                break
            handle = min(due, key=Handle.when)
            self.timers.remove(handle)
            self.now = handle.when()
            handle.callback()
        self.now = now


def session(loop: Loop, timed_out: list[float]) -> MailgateSMTP:
    smtp = MailgateSMTP.__new__(MailgateSMTP)  # the timer's state only: no transport
    smtp.loop = loop  # type: ignore[assignment]
    smtp._timeout_duration = 10.0
    smtp._timeout_handle = None
    smtp._timeout_cb = lambda: timed_out.append(loop.now)  # type: ignore[method-assign]
    return smtp


def test_commands_push_the_deadline_back_with_one_timer():
    loop, timed_out = Loop(), []
    smtp = session(loop, timed_out)
    for t in (0.0, 3.0, 9.5):  # a command at each
        loop.run_until(t)
        smtp._reset_timeout()
    assert len(loop.timers) == 1  # no timer made (nor cancelled) per command
    loop.run_until(19.4)
    assert timed_out == []
    loop.run_until(30.0)
    assert timed_out == [19.5]  # 10 s after the last command, as aiosmtpd's timer


def test_an_idle_session_times_out_once():
    loop, timed_out = Loop(), []
    smtp = session(loop, timed_out)
    smtp._reset_timeout()
    loop.run_until(100.0)
    assert timed_out == [10.0]


def test_a_shorter_timeout_and_a_cancelled_timer_get_a_new_one():
    loop, timed_out = Loop(), []
    smtp = session(loop, timed_out)
    smtp._reset_timeout()
    smtp._reset_timeout(2.0)  # (aiosmtpd's PROXY wait): sooner than the pending timer
    loop.run_until(5.0)
    assert timed_out == [2.0]
    loop2, timed_out2 = Loop(), []
    smtp = session(loop2, timed_out2)
    smtp._reset_timeout()
    assert smtp._timeout_handle is not None
    smtp._timeout_handle.cancel()  # connection_lost
    smtp._reset_timeout()
    loop2.run_until(50.0)
    assert timed_out2 == [10.0]
