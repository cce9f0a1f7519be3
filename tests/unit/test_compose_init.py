"""core/compose.Outgoing's own __init__ (its fields stored at once) takes exactly the
dataclass's fields, in order, with their defaults, and makes the same frozen value."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime

import pytest

from mailgate.core.compose import Outgoing


def test_the_signature_is_the_fields():
    params = list(inspect.signature(Outgoing.__init__).parameters.values())[1:]
    fields = dataclasses.fields(Outgoing)
    assert [(p.name, p.default, p.kind) for p in params] == [
        (
            f.name,
            inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        for f in fields
    ]
    assert all(f.default_factory is dataclasses.MISSING for f in fields)


def test_the_same_value_by_position_keyword_or_replace():
    date = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(Outgoing)}
    values.update(date=date, ticket_id=7, references=("a@b",), attachments=(), html=None)
    by_keyword = Outgoing(**values)
    by_position = Outgoing(*values.values())
    assert by_keyword == by_position and hash(by_keyword) == hash(by_position)
    assert {f.name: getattr(by_keyword, f.name) for f in dataclasses.fields(Outgoing)} == values
    assert dataclasses.replace(by_keyword, subject="other").subject == "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_keyword.subject = "changed"  # type: ignore[misc]
    # __post_init__ still runs: a lone surrogate becomes U+FFFD.
    assert dataclasses.replace(by_keyword, text="a\udce9b").text == "a\ufffdb"
