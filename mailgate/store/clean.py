"""Text the database would refuse, made safe in one place: every statement's bound strings.

PostgreSQL refuses NUL in text ("text fields cannot contain NUL (0x00) bytes") and a Python
string holding lone surrogates cannot even be encoded to UTF-8. Mail carries both (a NUL in a
Subject, a filename; surrogate-escaped bytes from a broken header), and refusing it would turn
one odd byte into a 451 the MTA retries for days before bouncing a customer's mail.

Why at the engine, on `before_cursor_execute`: it sees the parameters of every statement,
whoever wrote it (ORM flush, `update()`, `insert()`, raw SQL) and whatever the column (a
TypeDecorator or a flush hook would have to be remembered on each new column or writer).
The same cleaning applies to WHERE parameters, so a lookup by a dirty value finds the row
stored under its cleaned form. Only `str` values change; bytes (the outbox's raw mail, blobs)
pass untouched, and the raw mail itself lives byte-for-byte in the blob store.

What is still refused (a value too long for its VARCHAR, a value out of range) is raised as
`RefusedValue`, a StatementError that is NOT a DBAPIError: no layer turns it into "database
unavailable, try again", since the same value would be refused on every retry.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, DBAPIError, StatementError

REPLACEMENT = "\ufffd"
_REFUSED = re.compile("[\x00\ud800-\udfff]")


class RefusedValue(StatementError):
    """The database refused a value itself (too long, invalid): retrying cannot help."""


def refused_in(value: str) -> bool:
    """Does `value` hold a NUL or a surrogate (what _REFUSED finds), the regex's answer at a
    fraction of its cost: an ASCII string (a flag CPython keeps) can only hold a NUL, found by
    memchr; any other is also tried as UTF-16, which no surrogate, lone or paired, encodes to.
    UTF-16, not UTF-8: for a string of Latin-1 characters (French mail) its encoder is ~10x
    cheaper (it widens the bytes, where UTF-8 branches on each one), for other strings about
    as cheap. A property test compares it with _REFUSED."""
    if "\x00" in value:
        return True
    if value.isascii():
        return False
    try:
        value.encode("utf-16-le")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(value: str) -> str:
    """`value` with NUL and lone surrogates replaced by U+FFFD; a valid pair is joined."""
    if not refused_in(value):  # the common case: no copy
        return value
    value = value.replace("\x00", REPLACEMENT)
    # UTF-16 round trip: a high+low surrogate pair becomes its character, a lone one U+FFFD.
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_params(params: Any) -> Any:
    """Bound parameters (a dict, a tuple/list, or a list of those for executemany), cleaned.

    One statement's parameters (flat: no list, tuple or dict among them) with nothing to
    clean, which is every statement but those carrying odd mail, are given back as they are:
    no copy of the container, no call per value."""
    if isinstance(params, str):
        return clean_text(params)
    if isinstance(params, dict):
        if _all_clean(params.values()):
            return params
        return {k: clean_params(v) for k, v in params.items()}
    if isinstance(params, list | tuple):
        if _all_clean(params):
            return params
        return type(params)(clean_params(v) for v in params)
    return params


_NESTED = (list, tuple, dict)


def _all_clean(values: Any) -> bool:
    """No value to clean: no container among them, and their strings together (one check of
    their concatenation: a NUL or a surrogate is found in it exactly when in one of them)
    hold nothing refused_in finds."""
    texts = []
    for v in values:
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, _NESTED):
            return False
    return not refused_in("".join(texts))


def refused_value(exc: BaseException) -> bool:
    """Is this the database refusing a value (never fixed by retrying), not being down?"""
    if isinstance(exc, DataError | RefusedValue):
        return True
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return isinstance(exc.orig, UnicodeError | ValueError | OverflowError)
    return False


def install(engine: Engine) -> None:
    """Clean every statement's strings on this engine, and name what is still refused."""

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _clean(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> tuple[str, Any]:
        return statement, clean_params(parameters)

    @event.listens_for(engine, "handle_error")
    def _refused(ctx: ExceptionContext) -> None:
        orig = ctx.original_exception
        is_data = isinstance(ctx.sqlalchemy_exception, DataError)
        bad_value = isinstance(orig, UnicodeError | ValueError | OverflowError) and not isinstance(
            ctx.sqlalchemy_exception, DBAPIError
        )
        if is_data or bad_value:
            raise RefusedValue(
                f"the database refused a value: {type(orig).__name__}",
                ctx.statement,
                None,  # the parameters may be the very value refused: kept out of logs
                orig,
            ) from ctx.sqlalchemy_exception or orig
