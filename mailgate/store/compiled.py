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
from typing import Any

from sqlalchemy import Connection, Dialect
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


class Binder:
    """A compiled statement's parameters as its driver takes them, from a dict by name: in
    order (a tuple, for a positional paramstyle: SQLite's qmark) or by name (a dict), each not
    None through its column's converter (SQLite's datetimes to text...), and their strings
    cleaned (store/clean.py). The positions and converters are worked out once."""

    def __init__(self, order: tuple[str, ...] | None, convert: dict[str, Callable[[Any], Any]]):
        self.order = order
        self.convert = tuple(convert.items())
        self.at = tuple((i, convert[k]) for i, k in enumerate(order or ()) if k in convert)

    def __call__(self, values: dict[str, Any]) -> Any:
        if self.order is None:
            bound = dict(values) if self.convert else values
            for k, convert in self.convert:
                v = bound.get(k)
                if v is not None:
                    bound[k] = convert(v)
            return clean.clean_params(bound)
        params = [values[k] for k in self.order]
        for i, convert in self.at:
            v = params[i]
            if v is not None:
                params[i] = convert(v)
        return clean.clean_params(tuple(params))


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
        self.convert: dict[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
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
            rows = cursor.fetchall() if cursor.description is not None else []
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
