"""Every command in its own process builds the whole command line first (`mailgate ticket
list` with serve stopped, `deliver` behind a Postfix pipe): what registering the commands
imports is paid by every call (issue 11). Each command imports what it uses in its handler."""

from __future__ import annotations

import json
import subprocess
import sys

# Libraries a command loads only when it runs: the database layer, the web stack, the SMTP
# server, the migrations, HTTP clients and servers (`oauth authorize` alone listens), the
# language detector, the templates.
ONLY_WHEN_USED = (
    "sqlalchemy", "sqlmodel", "pydantic", "alembic", "starlette", "uvicorn", "aiosmtpd",
    "httpx", "http.server", "lingua", "jinja2",
)
BUILD_PARSER = """
import json, sys
from mailgate import cli
cli.parser(None)
print(json.dumps(sorted(sys.modules)))
"""


def test_building_the_command_line_imports_no_library_a_command_may_not_use() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BUILD_PARSER], capture_output=True, check=True, text=True
    )
    loaded = set(json.loads(out.stdout))
    assert "mailgate.cli_oauth" in loaded  # `oauth authorize` is registered…
    assert [name for name in ONLY_WHEN_USED if name in loaded] == []  # …its listener is not
