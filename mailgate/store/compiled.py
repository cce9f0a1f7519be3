"""Core statements the single writer runs for every mail, compiled once per dialect and run on
the session's own DBAPI connection (in its transaction), as store.db.insert_values runs its
INSERTs: SQLAlchemy's execution around a statement this small (its context, events, cursor
result) cost the writer more than the statement itself.

What a statement run through SQLAlchemy gets, these get too: the columns' bind and result
converters (SQLite's datetimes), bound strings cleaned (store/clean.py) and database errors
raised as SQLAlchemy's exceptions (IntegrityError, OperationalError...). Only for statements
with plain named parameters (no IN lists, no SQL-side defaults to fetch)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Boolean, Connection, Dialect
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.session import SessionTransactionState
from sqlalchemy.sql.expression import Executable
from sqlmodel import Session

from mailgate.store import clean

_CURSOR = "mailgate.cursor"
_ACTIVE = SessionTransactionState.ACTIVE


def session_connection(session: Session) -> Connection:
    """session.connection(), answered directly when its transaction (or savepoint) already
    holds its connection and is active: what session.connection() checks and returns then,
    for a tenth of its cost (the writer asks ten times a mail). Anything else (no transaction
    yet, a savepoint not begun yet, one deactivated by a failed flush, a closed context) goes
    to session.connection(), which begins what is missing or raises as it always does."""
    trans = session._transaction
    bind = session.bind
    if trans is not None and trans._state is _ACTIVE and bind is not None:
        context = session._trans_context_manager
        if context is None or context._transaction_is_active():
            kept = trans._connections.get(bind)
            if kept is not None:
                return kept[0]
    return session.connection()


def dbapi_cursor(fairy: Any) -> Any:
    """The cursor these statements run on, for the pooled connection `fairy`
    (Connection.connection): made once per DBAPI connection and kept in its pool record's
    `info`, where a new DBAPI connection (after an invalidation) finds none of its own. One
    per statement cost psycopg a new adapters map and every parameter's dumper looked up
    again. Statements here fetch every row they return, leaving nothing in progress on it."""
    dbapi = fairy.dbapi_connection
    kept = fairy.info.get(_CURSOR)
    if kept is not None and kept[0] is dbapi:
        return kept[1]
    cursor = dbapi.cursor()
    fairy.info[_CURSOR] = (dbapi, cursor)
    return cursor


def forget_cursor(fairy: Any) -> None:
    """After an error on it: the next statement gets a new cursor."""
    kept = fairy.info.pop(_CURSOR, None)
    if kept is not None:
        with contextlib.suppress(Exception):  # a connection lost may refuse even this
            kept[1].close()


def bind_converters(compiled: Any, dialect: Dialect) -> dict[str, Callable[[Any], Any]]:
    """The converters SQLAlchemy applies to a compiled statement's parameters, by name (its
    `_bind_processors`: private but long-standing; test_binder compares the values with what
    SQLAlchemy binds), two of them made faster to the same values: SQLite's DATETIME in its
    default storage format (a first contact binds ten datetimes) and Boolean's."""
    convert: dict[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
    faster: dict[str, set[Any]] = {}
    for bind, name in compiled.bind_names.items():
        if name in convert:
            faster.setdefault(name, set()).add(_faster(bind.type.dialect_impl(dialect)))
    for name, found in faster.items():
        make = found.pop() if len(found) == 1 else None  # one name, several types: as it is
        if make is not None:
            convert[name] = make(convert[name])
    return convert


def _faster(impl: Any) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]] | None:
    if type(impl) is SQLITE_DATETIME and impl._storage_format == SQLITE_DATETIME._storage_format:
        return sqlite_datetime
    if type(impl) is Boolean:
        return _boolean
    return None


# The last datetime sqlite_datetime converted, and its text: one tuple, replaced whole (a
# thread sharing it never sees one's value with another's text).
_last_datetime: tuple[Any, str] = (object(), "")


def sqlite_datetime(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite DATETIME's converter `process` for a plain datetime done by isoformat: the same
    text ("%04d-%02d-%02d %02d:%02d:%02d.%06d" of its fields, its zone left out: the first 26
    characters of isoformat with microseconds, which only appends the offset) in about 2/3 of
    the time. Anything else (a date, a subclass, a wrong type) goes to `process`.

    The last datetime converted is kept with its text, for every column: a row binds the same
    `now` to several (a ticket's created_at, updated_at and last_exchange_at and its first
    message's; an outbox row's created_at and next_attempt_at). A datetime cannot change: the
    same object is the same text."""

    def convert(value: Any) -> Any:
        global _last_datetime
        kept = _last_datetime
        if value is kept[0]:
            return kept[1]
        if value.__class__ is datetime:
            text = value.isoformat(" ", "microseconds")[:26]
            _last_datetime = (value, text)
            return text
        return process(value)

    return convert


def _boolean(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Boolean's converter `process`, its answers for True and False worked out once."""
    true, false = process(True), process(False)

    def convert(value: Any) -> Any:
        if value is True:
            return true
        if value is False:
            return false
        return process(value)  # None, or refused as SQLAlchemy refuses it

    return convert


class Binder:
    """A compiled statement's parameters as its driver takes them, from a dict by name: in
    order (a tuple, for a positional paramstyle: SQLite's qmark) or by name (a dict), each not
    None through its column's converter (SQLite's datetimes to text...), and their strings
    cleaned (store/clean.py). The positions and converters are worked out once."""

    def __init__(self, order: tuple[str, ...] | None, convert: dict[str, Callable[[Any], Any]]):
        self.order = order
        self.convert = tuple(convert.items())
        self.at = tuple((i, convert[k]) for i, k in enumerate(order or ()) if k in convert)
        # The values in order, picked in C (a tuple even for one name or none).
        names = order or ()
        self.pick: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            itemgetter(*names) if len(names) > 1 else lambda values: tuple(values[k] for k in names)
        )

    def __call__(self, values: dict[str, Any]) -> Any:
        if self.order is None:
            bound = dict(values) if self.convert else values
            for k, convert in self.convert:
                v = bound.get(k)
                if v is not None:
                    bound[k] = convert(v)
            return clean.clean_params(bound)
        params = self.pick(values)
        if self.at:
            converted = list(params)
            for i, convert in self.at:
                v = converted[i]
                if v is not None:
                    converted[i] = convert(v)
            params = tuple(converted)
        return clean.clean_params(params)


class _Compiled:
    """One statement for one dialect: its SQL, parameters' order and converters."""

    def __init__(self, statement: Any, dialect: Dialect, column_keys: Sequence[str] | None):
        compiled = statement.compile(
            dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None
        )
        self.sql: str = compiled.string
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        names = set(compiled.bind_names.values())
        binds = [(n, b) for n, b in compiled.binds.items() if n in names]
        if any(b.expanding for _n, b in binds):
            raise ValueError("an IN list's parameters are expanded per call: not compiled once")
        # Values the statement carries itself (`role == "agent"`).
        self.fixed = {n: b.effective_value for n, b in binds if not b.required}
        self.convert = bind_converters(compiled, dialect)
        self.bind = Binder(self.order, self.convert)
        self.keys = tuple(c[0] for c in compiled._result_columns)
        processors = [
            c[3]._cached_result_processor(dialect, None) for c in compiled._result_columns
        ]
        self.results = processors if any(processors) else None
        self.error = dialect.loaded_dbapi.Error

    def execute(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        args = self.bind({**self.fixed, **params} if self.fixed else params)
        fairy = conn.connection
        cursor = dbapi_cursor(fairy)
        try:
            cursor.execute(self.sql, args)
            # Rows only from a statement that returns some (a SELECT, a RETURNING), known
            # from its compiled columns: psycopg builds cursor.description anew, a Column
            # object per column, each time it is read.
            rows = cursor.fetchall() if self.keys else []
        except self.error as exc:  # as SQLAlchemy reports it: IntegrityError, OperationalError...
            forget_cursor(fairy)
            raise DBAPIError.instance(self.sql, None, exc, self.error) from exc
        results = self.results
        if results is None:
            return [tuple(r) for r in rows]
        return [tuple(p(v) if p else v for p, v in zip(results, r, strict=True)) for r in rows]


class Statement:
    """A Core statement to run in a session's transaction, compiled on first use per dialect.

    `statement`: one for every dialect, or one per dialect name (a dialect's own construct,
    such as its INSERT ... ON CONFLICT); `column_keys`: for an INSERT, the columns given (the
    others are left to their defaults)."""

    def __init__(
        self,
        statement: Executable | Mapping[str, Executable],
        column_keys: Sequence[str] | None = None,
    ) -> None:
        self.statement = statement
        self.column_keys = column_keys
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, conn: Connection) -> _Compiled:
        name = conn.dialect.name
        found = self._compiled.get(name)
        if found is None:
            statement = (
                self.statement[name] if isinstance(self.statement, Mapping) else self.statement
            )
            found = self._compiled[name] = _Compiled(statement, conn.dialect, self.column_keys)
        return found

    def rows(self, session: Session, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row the statement returns (none for one that returns nothing)."""
        conn = session_connection(session)
        return self._for(conn).execute(conn, params or {})

    def mappings(
        self, session: Session, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every row as a dict by column name."""
        conn = session_connection(session)
        compiled = self._for(conn)
        return [
            dict(zip(compiled.keys, row, strict=True))
            for row in compiled.execute(conn, params or {})
        ]

    def scalar(self, session: Session, params: dict[str, Any] | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.rows(session, params)
        return rows[0][0] if rows else None
