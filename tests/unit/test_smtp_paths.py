"""The shortcut for `<local@domain>` in MAIL FROM / RCPT TO gives what aiosmtpd's own parser
gives, and leaves everything else to it."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP

from mailgate.adapters.smtp import MailgateSMTP, plain_path

EVERYDAY = [
    "<alice@example.com>",
    "<alice@example.com> SIZE=5000",
    "<alice@example.com> SIZE=5000 BODY=8BITMIME",
    "<a.b+tag@sub.example.co.uk>",
    "<support+Xy_9-z.TOKEN@mail.example>",
    "<o'brien@example.ie> SMTPUTF8",
    "<alice@example.com>\tSIZE=1",
    "<alice@example.com>   ",
    "<x!#$%&'*+/=?^_`{|}~-y@example.com>",
]
OTHERS = [
    "<>",
    "<> SIZE=10",
    " <alice@example.com>",
    "<alice@[127.0.0.1]>",
    '<"quoted local"@example.com>',
    "<.alice@example.com>",
    "<alice.@example.com>",
    "<alice..b@example.com>",
    "<@relay.example:alice@example.com>",
    "<alice@example.com",
    "alice@example.com",
    "<alice(comment)@example.com>",
    "<élise@example.fr>",
    "<alice@exa_mple.com>",
    "",
    "<alice@example.com>(comment) SIZE=1",
    "<alice@example.com> (comment) SIZE=1",
    "<alice@example.com>SIZE=1",
]


def server(cls: type[SMTP], **options: object) -> SMTP:
    """A protocol object, never connected: only its address parsing is used."""
    loop = asyncio.new_event_loop()
    try:
        return cls(object(), loop=loop, **options)  # type: ignore[arg-type]
    finally:
        loop.close()


def theirs(arg: str) -> tuple[str | None, str | None]:
    return server(SMTP)._getaddr(arg)


def ours(arg: str) -> tuple[str | None, str | None]:
    return server(MailgateSMTP)._getaddr(arg)


@pytest.mark.parametrize("arg", EVERYDAY)
def test_everyday_paths_take_the_shortcut_and_agree(arg: str) -> None:
    assert plain_path(arg) is not None
    assert ours(arg) == theirs(arg)


@pytest.mark.parametrize("arg", OTHERS)
def test_other_paths_go_to_aiosmtpd(arg: str) -> None:
    assert plain_path(arg) is None
    assert ours(arg) == theirs(arg)


def test_local_part_limit_still_applies() -> None:
    limited = server(MailgateSMTP)
    limited.local_part_limit = 5
    assert limited._getaddr("<abcdef@example.com>") == (None, None)
    assert limited._getaddr("<abcde@example.com>") == ("abcde@example.com", "")
