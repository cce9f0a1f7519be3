"""The service-level tier: the App in process (tests/support/inprocess.py), no `serve`.

`service` is the InProcess (ingest, drain, run_jobs, clock, cli); `desk` the socket-level
Desk's API on top of it. Both run on SQLite, and on PostgreSQL too when
MAILGATE_TEST_DATABASE_URL is set."""

from tests.support.inprocess import (  # noqa: F401 (fixtures)
    pg_schema,
    service_database_url,
    service_desk_fixture,
    service_dir,
    service_fixture,
    sqlite_schema,
)
