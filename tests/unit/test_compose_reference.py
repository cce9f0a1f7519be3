"""core/compose: the thread headers and mailboxes written by the quicker code are the ones
the straightforward code wrote (kept here as the reference)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.header import Header
from email.utils import formataddr

from mailgate.core.compose import (
    _UTF8,
    Outgoing,
    _addr_spec,
    _encoded_word,
    _mailbox,
    _thread,
    one_line,
)


def _thread_reference(out: Outgoing) -> list[tuple[str, str]]:
    headers = []
    if out.in_reply_to:
        headers.append(("In-Reply-To", f"<{out.in_reply_to}>"))
    refs = list(dict.fromkeys(r for r in out.references if r))
    if out.in_reply_to and out.in_reply_to not in refs:
        refs.append(out.in_reply_to)
    if refs:
        headers.append(("References", " ".join(f"<{r}>" for r in refs[-20:])))
    return headers


def _mailbox_reference(addr_spec: str, display_name: str, name: str) -> str | Header:
    spec = _addr_spec(addr_spec)
    shown = one_line(display_name, 100)
    if not shown:
        return spec
    if shown.isascii():
        return formataddr((shown, spec))
    word = _encoded_word(shown)
    if word is not None:
        return f"{word} <{spec}>"
    mailbox = Header(shown, _UTF8, header_name=name)
    mailbox.append(f"<{spec}>", "us-ascii")
    return mailbox


def _out(in_reply_to: str | None, references: tuple[str, ...]) -> Outgoing:
    return Outgoing(kind="confirmation", to_addr="a@b.example", subject="s", text="t",
                    from_addr="s@x.example", from_name="S", message_id="m@x.example",
                    date=datetime(2026, 1, 5, tzinfo=UTC), hostname="x.example",
                    in_reply_to=in_reply_to, references=references)  # fmt: skip


def test_thread_headers_are_the_reference_s():
    ids = ["", "a@c.example", "b@c.example", "a@c.example"]
    cases = [(irt, ()) for irt in (None, "", "a@c.example", "z@c.example")]
    for size in range(1, 4):
        for refs in itertools.product(ids, repeat=size):
            for irt in (None, "", "a@c.example", "z@c.example"):
                cases.append((irt, refs))
    many = tuple(f"r{i}@c.example" for i in range(25))
    cases += [(None, many), ("r3@c.example", many), ("new@c.example", many + many[:3])]
    for irt, refs in cases:
        out = _out(irt, refs)
        assert _thread(out) == _thread_reference(out), (irt, refs)


def test_mailboxes_are_the_reference_s():
    names = ["", "  ", "Support", "Support Exemple", 'Dupont, "Jo"', "a\\b", "Jérôme Dupont",
             "\r\nBcc: x@y", "é" * 80, "Support\x00 (x)", "a;b:c<>", "x" * 120]  # fmt: skip
    for spec, shown in itertools.product(["a@b.example", "support+t12.abc@example.com"], names):
        for _ in range(2):  # the second time from the cache
            ours = _mailbox(spec, shown, "Reply-To")
            reference = _mailbox_reference(spec, shown, "Reply-To")
            if isinstance(reference, Header):
                assert isinstance(ours, Header) and str(ours) == str(reference)
                assert ours.encode() == reference.encode()
            else:
                assert ours == reference, (spec, shown)
