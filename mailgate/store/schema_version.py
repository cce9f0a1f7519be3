"""Which schema revision this code needs, known without importing Alembic.

`serve` and `mailgate db upgrade` migrate; `deliver` and the other CLI commands only compare
the database's `alembic_version` with the head revision found here (issue 11: importing Alembic
and running the upgrade cost ~0.5 s per mail). The head is read from the migration files
themselves (their `revision = ...` / `down_revision = ...` lines, as Alembic's template writes
them), so adding a migration bumps nothing by hand; tests/unit/test_cli_schema.py checks this
reading against Alembic's own.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from mailgate.errors import TempFailure

VERSIONS = Path(__file__).with_name("migrations") / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default; env.py does not change it
UPGRADE_HINT = "database schema is not current: run `mailgate db upgrade`"

_ASSIGNMENT = r"^{name}\b[^=\n]*=\s*(.+)$"  # `revision = "0002"`, `revision: str = "0002"`
_REVISION = re.compile(_ASSIGNMENT.format(name="revision"), re.MULTILINE)
_DOWN = re.compile(_ASSIGNMENT.format(name="down_revision"), re.MULTILINE)
_QUOTED = re.compile(r"""["']([^"']+)["']""")


class SchemaNotCurrent(TempFailure):
    """The database is not at this code's head revision. A TempFailure: `deliver` exits 75 and
    the MTA retries once someone has run `mailgate db upgrade` (nothing is lost meanwhile)."""

    def __init__(self, found: str | None, head: str) -> None:
        detail = f"it has {found or 'no schema'}, this mailgate needs {head}"
        super().__init__(f"{UPGRADE_HINT} ({detail})")
        self.found = found
        self.head = head


@cache
def head_revision(versions: Path = VERSIONS) -> str:
    """The one revision no other migration names as its down_revision."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        if found is None:
            continue
        revisions.update(_QUOTED.findall(found.group(1))[:1])
        down = _DOWN.search(text)
        if down is not None:
            parents.update(_QUOTED.findall(down.group(1)))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise RuntimeError(f"migrations in {versions} have {len(heads)} heads: {heads}")
    return heads[0]
