"""Issue 11: `deliver` and the CLI compare the database's revision with the head revision read
from the migration files, without importing Alembic. That reading must agree with Alembic's."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from mailgate.store.db import MIGRATIONS
from mailgate.store.schema_version import UPGRADE_HINT, SchemaNotCurrent, head_revision


def test_the_head_revision_is_the_one_alembic_finds():
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [head_revision()]


def _migration(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(f'"""{name}\n\nRevises: x\n"""\n{text}\n')


def test_typed_assignments_and_merge_revisions_are_read(tmp_path: Path):
    _migration(tmp_path, "a", 'revision: str = "a1"\ndown_revision: str | None = None')
    _migration(tmp_path, "b", "revision = 'b2'\ndown_revision = 'a1'")
    _migration(tmp_path, "c", 'revision = "c3"\ndown_revision = "a1"')
    _migration(tmp_path, "m", 'revision = "m4"\ndown_revision = ("b2", "c3")')
    assert head_revision(tmp_path) == "m4"


def test_two_heads_are_refused(tmp_path: Path):
    _migration(tmp_path, "a", 'revision = "a1"\ndown_revision = None')
    _migration(tmp_path, "b", 'revision = "b2"\ndown_revision = None')
    with pytest.raises(RuntimeError, match="2 heads"):
        head_revision(tmp_path)


def test_the_error_says_what_to_run():
    err = SchemaNotCurrent("0001", "0004")
    assert str(err).startswith(UPGRADE_HINT)
    assert "0001" in str(err) and "0004" in str(err)
    assert "no schema" in str(SchemaNotCurrent(None, "0004"))
