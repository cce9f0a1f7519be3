"""Engines, transactions and schema upgrades.

SQLite: WAL, synchronous=FULL (a 250 must survive a power cut), a busy timeout, foreign keys,
and `BEGIN IMMEDIATE` for writes so two writers queue on the lock instead of failing halfway.
PostgreSQL (postgresql+psycopg://) gets ordinary transactions; rows are claimed with
`FOR UPDATE SKIP LOCKED` where several instances share work.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Integer,
    Table,
    create_engine,
    event,
    insert,
    inspect,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import configure_mappers
from sqlmodel import Session, SQLModel

from mailgate.errors import TempFailure
from mailgate.store import clean
from mailgate.store.compiled import (
    Binder,
    bind_converters,
    dbapi_cursor,
    forget_cursor,
    session_connection,
)
from mailgate.store.schema_version import VERSION_TABLE, SchemaNotCurrent, head_revision

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key: two processes creating or migrating the schema take turns.
# (SQLite needs none: the upgrade's transaction begins IMMEDIATE, taking the write lock.)
SCHEMA_LOCK = 0x6D61696C67617465  # "mailgate"


def _sqlite_engine(url: str, *, writer: bool, busy_timeout_ms: int) -> Engine:
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        # BEGIN IMMEDIATE serialises writers in SQLite itself; a few connections let the
        # sender and the portal write while the group-commit thread holds one.
        pool_size=4 if writer else 5,
        max_overflow=0 if writer else 10,
        pool_timeout=busy_timeout_ms / 1000,
        # The connection used last, first: SQLite drops a connection's page cache whenever
        # another connection wrote since its last transaction, so handing the group commit the
        # pool's connections in turn (FIFO) made each batch read its pages back from the WAL
        # (~40 reads a batch). LIFO gives it the same connection, its cache warm.
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # A SAVEPOINT keeps the pages it changes in a sub-journal: by default a temporary file
        # once over 64 KiB, so the group commit (a SAVEPOINT per job) created one per batch and
        # wrote ~70 pages a mail into it. In memory, the file and those writes are gone.
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
    error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # On the DBAPI cursor, as the savepoints (fast_savepoints): exec_driver_sql's execution
        # context cost ~20 µs a transaction, and the group commit begins one per batch. An
        # error (busy past the timeout, a lost connection) is SQLAlchemy's, as before.
        run_text(conn, begin, error)

    return engine


class Database:
    """The one place that owns engines. `write()` and `read()` are transactions."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.write_engine = _sqlite_engine(url, writer=True, busy_timeout_ms=busy_timeout_ms)
            self.read_engine = _sqlite_engine(url, writer=False, busy_timeout_ms=busy_timeout_ms)
        else:
            # LIFO as for SQLite: the connection used last keeps its prepared statements warm.
            self.write_engine = create_engine(
                url, pool_pre_ping=True, pool_size=10, pool_use_lifo=True
            )
            self.read_engine = self.write_engine
        # Every writer gets text the database accepts (NUL, lone surrogates): see store/clean.
        for engine in dict.fromkeys((self.write_engine, self.read_engine)):
            clean.install(engine)
            fast_savepoints(engine.dialect)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; database faults surface as TempFailure (answer 451)."""
        try:
            with Session(self.write_engine, expire_on_commit=False) as session, session.begin():
                yield session
        except (OperationalError, DBAPIError) as exc:
            if _is_integrity(exc):
                raise
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc
        except PoolTimeout as exc:  # every connection busy for the whole timeout
            raise TempFailure("database busy: no connection available") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with Session(self.read_engine, expire_on_commit=False) as session:
                yield session
        except (OperationalError, DBAPIError) as exc:
            if _is_integrity(exc):
                raise
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc
        except PoolTimeout as exc:
            raise TempFailure("database busy: no connection available") from exc

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest Alembic revision (serve, `db upgrade`)."""
        # Alembic costs ~60 ms to import: only here, never on `deliver`'s path to a current schema.
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.write_engine.connect() as conn:
                # One transaction for the whole upgrade, begun here (SQLite: BEGIN IMMEDIATE,
                # its write lock; PostgreSQL: plus an advisory lock). Alembic then runs every
                # migration inside it (on SQLite it would commit after each one), so a reader
                # sees no schema or all of it, and a concurrent upgrader waits, then finds
                # nothing to do.
                conn.begin()
                if conn.dialect.name == "postgresql":  # held until the commit below
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
        except OperationalError as exc:  # down or locked: `deliver` must say 75, not crash
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc

    def revision(self) -> str | None:
        """The schema's Alembic revision: one SELECT, no Alembic. None when the database has
        no schema yet (no version table, or an empty one)."""
        try:
            with self.read_engine.connect() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return None
                rows = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
        except (OperationalError, DBAPIError) as exc:
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc
        return ",".join(sorted(str(r[0]) for r in rows)) or None

    def require_current(self, *, create: bool = False) -> None:
        """Raise SchemaNotCurrent unless the schema is at this code's head revision.

        With `create`, a database with no schema at all gets one (under upgrade()'s lock):
        a fresh install whose MTA delivers before anyone ran `mailgate db upgrade` then just
        works. A schema at another revision is never migrated here: that is `db upgrade`'s
        job (or serve's), run by an operator who can take a backup and restart serve."""
        head = head_revision()
        found = self.revision()
        if found == head:
            return
        if found is None and create:
            self.upgrade()  # a concurrent creator holds the lock first: this then does nothing
            return
        raise SchemaNotCurrent(found, head)

    def ping(self) -> None:
        with self.read() as session:
            session.connection().exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def run_text(conn: Connection, sql: str, error: type[Exception]) -> None:
    """A parameterless statement of ours on the connection's kept DBAPI cursor; an `error`
    from the driver is handled as SQLAlchemy handles one (its exception classes,
    `handle_error` listeners, a lost connection invalidated) and the cursor is forgotten."""
    fairy = conn.connection
    cursor = dbapi_cursor(fairy)
    try:
        cursor.execute(sql)
    except error as exc:
        forget_cursor(fairy)
        conn._handle_dbapi_exception(exc, sql, (), cursor, None)  # raises


def fast_savepoints(dialect: Dialect) -> None:
    """SAVEPOINT, RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT run as their text on the DBAPI
    cursor, not as statements SQLAlchemy compiles and wraps in an execution context each time
    (its savepoint clauses are never cached): the group commit opens one per job, and that
    cost ~80 µs of the single writer's CPU a job on SQLite, against ~1 µs this way.

    Only how the statement is sent changes: the Session's nested transactions (begin_nested:
    the ORM state kept and restored on rollback), the engine's savepoint events and the SQL
    are SQLAlchemy's. An error is handled as SQLAlchemy handles one (its exception classes,
    `handle_error` listeners, a lost connection invalidated). Not sent through
    `before_cursor_execute` listeners: these statements have no parameters to clean."""
    preparer = dialect.identifier_preparer
    error = dialect.loaded_dbapi.Error

    @functools.lru_cache(maxsize=256)
    def quoted(name: str) -> str:
        return preparer.format_savepoint(None, name)

    def do_savepoint(conn: Connection, name: str) -> None:
        run_text(conn, f"SAVEPOINT {quoted(name)}", error)

    def do_release_savepoint(conn: Connection, name: str) -> None:
        run_text(conn, f"RELEASE SAVEPOINT {quoted(name)}", error)

    def do_rollback_to_savepoint(conn: Connection, name: str) -> None:
        run_text(conn, f"ROLLBACK TO SAVEPOINT {quoted(name)}", error)

    # Instance attributes: this engine's dialect only, called as dialect.do_savepoint(conn, name).
    dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]


def _is_integrity(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import IntegrityError

    return isinstance(exc, IntegrityError)


M = TypeVar("M", bound=SQLModel)


class _RowInsert:
    """One table's INSERT ... RETURNING id for one dialect: compiled once to the driver's SQL,
    its parameters' order and converters (SQLite's datetimes to text...), and its columns'
    Python defaults. Run on the session's own DBAPI connection (same transaction): the
    SQLAlchemy execution context around it cost twice the statement itself.

    On SQLite, where `id` is an INTEGER PRIMARY KEY (the rowid itself), a plain INSERT and
    the cursor's lastrowid (sqlite3_last_insert_rowid of that INSERT): the same id, without
    RETURNING's result row (2.3 -> 0.9 µs a row)."""

    def __init__(self, model: type[SQLModel], dialect: Dialect) -> None:
        configure_mappers()  # a snapshot reads its fields through the mapped attributes
        table: Table = model.__table__  # type: ignore[attr-defined]
        fields = model.model_fields
        self.columns = frozenset(
            c.name for c in table.columns if c.name != "id" and c.name in fields
        )
        self.defaults = {
            name: fields[name].default
            for name in self.columns
            if fields[name].default is not PydanticUndefined
        }
        self.lastrowid = dialect.name == "sqlite" and _is_rowid(table)
        statement = insert(table) if self.lastrowid else insert(table).returning(table.c.id)
        compiled = statement.compile(dialect=dialect, column_keys=sorted(self.columns))
        self.sql = compiled.string
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        # The same converters SQLAlchemy applies to these columns' values (test_store_rows
        # reads back what this writes).
        self.convert = bind_converters(compiled, dialect)
        self.bind = Binder(self.order, self.convert)
        self.error = dialect.loaded_dbapi.Error
        self.fields = _plain_fields(model)
        if any(
            not f.is_required() and name != "id" and name not in self.defaults
            for name, f in fields.items()
        ):
            self.fields = None  # a default the INSERT's row lacks: model_construct adds it
        # The row laid out in the fields' order (the id first, None until the INSERT gives
        # it), for a model whose fields are its columns: the snapshot's fields are then that
        # row itself, not a copy. Used when every column without a default is given.
        self.template: dict[str, Any] | None = None
        self.required = self.columns - self.defaults.keys()
        if self.fields is not None and set(self.fields) == self.columns | {"id"}:
            self.template = {name: self.defaults.get(name) for name in self.fields}

    def snapshot(self, model: type[M], values: dict[str, Any]) -> M:
        """model_construct(**values), without its per-field alias and default work where the
        model has none to do: `values` then holds every field with a default (the INSERT's
        row: the model's defaults, the caller's values, the id). A test compares the two."""
        if self.fields is None:
            return model.model_construct(**values)
        fields = {name: values[name] for name in self.fields if name in values}
        return self.adopt(model, fields)

    def adopt(self, model: type[M], fields: dict[str, Any]) -> M:
        """A snapshot whose fields are `fields` (in the model's order), that dict itself."""
        snapshot = model.__new__(model)  # SQLModel's: no extra, no private attributes
        object.__setattr__(snapshot, "__dict__", fields)
        object.__setattr__(snapshot, "__pydantic_fields_set__", set(fields))
        return snapshot

    def run(self, conn: Connection, row: dict[str, Any]) -> int:
        params = self.bind(row)
        fairy = conn.connection
        cursor = dbapi_cursor(fairy)
        try:
            cursor.execute(self.sql, params)
            if self.lastrowid:
                row_id = cursor.lastrowid
            else:
                (row_id,) = cursor.fetchall()[0]  # every row: the INSERT is done
        except self.error as exc:  # as SQLAlchemy reports it: IntegrityError, OperationalError...
            forget_cursor(fairy)
            raise DBAPIError.instance(self.sql, None, exc, self.error) from exc
        return int(row_id)


def _is_rowid(table: Table) -> bool:
    """Is `id` the table's rowid (SQLite): its one INTEGER primary key, of a rowid table."""
    id_column = table.c.get("id")
    return (
        id_column is not None
        and list(table.primary_key.columns) == [id_column]
        and type(id_column.type) is Integer
        and table.dialect_options["sqlite"].get("with_rowid") is not False
    )


def _plain_fields(model: type[SQLModel]) -> tuple[str, ...] | None:
    """The model's fields in order when model_construct does nothing but copy given values
    (no alias, no default factory, no post-init hook, no extra fields kept); else None."""
    fields = model.__pydantic_fields__
    plain = (
        not model.__pydantic_root_model__
        and model.__pydantic_post_init__ is None
        and model.model_config.get("extra") != "allow"
        and all(
            f.alias is None and f.validation_alias is None and f.default_factory is None
            for f in fields.values()
        )
    )
    return tuple(fields) if plain else None


_INSERTS: dict[tuple[type[SQLModel], str], _RowInsert] = {}


def insert_values(session: Session, model: type[M], **values: Any) -> M:
    """INSERT one row of `model` from plain values (the model's defaults fill the rest) with one
    statement compiled once, and return a read-only snapshot of it with its id.

    For rows the single writer adds and never changes in the same transaction (accounts and
    tickets a first contact makes, messages, attachments, outbox rows): no model validation,
    no unit of work, no flush (~0.2 ms a row the ORM's way, ~0.04 ms this way). The snapshot
    is not in the session: its fields read as a row's do, and setting one raises
    (AttributeError) rather than being silently lost. Load the row (`session.get`) to change
    it. Strings are cleaned as on every statement (store/clean.py)."""
    conn = session_connection(session)
    spec = _INSERTS.get((model, conn.dialect.name))
    if spec is None:
        spec = _INSERTS[(model, conn.dialect.name)] = _RowInsert(model, conn.dialect)
    unknown = values.keys() - spec.columns
    if unknown:
        raise TypeError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    if spec.template is not None and values.keys() >= spec.required:
        row = {**spec.template, **values}  # the fields' order kept: the snapshot's own
        row["id"] = spec.run(conn, row)
        return spec.adopt(model, row)
    row = {**spec.defaults, **values}
    row_id = spec.run(conn, row)
    row["id"] = row_id
    return spec.snapshot(model, row)
