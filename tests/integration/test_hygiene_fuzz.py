"""Issue 4, fuzzing: mutated real messages (CPython's test_email corpus and ours) through the
whole ingest path on a real SQLite database. Anything but mailgate's own errors is a failure,
and so is a crash the ingest path counted quietly. `make fuzz` runs the same harness under
atheris for longer."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.fuzz.fuzz_ingest import (
    CPYTHON_SEEDS,
    build_ingestor,
    ingest_one,
    mutate,
    mutations,
    seed_corpus,
)

SEEDS = seed_corpus()


def test_the_seed_corpus_has_cpythons_messages_or_their_copies():
    names = {p.name for p in CPYTHON_SEEDS.glob("msg_*.txt")} if CPYTHON_SEEDS.is_dir() else set()
    assert len(names) >= 40 or len(SEEDS) >= 30


def test_every_seed_goes_through_ingest_unmutated(tmp_path: Path):
    ingestor = build_ingestor(tmp_path)
    for i, seed in enumerate(SEEDS):
        ingest_one(ingestor, seed, i)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutations(SEEDS))
def test_mutated_mail_never_raises_anything_but_mailgates_own_errors(
    tmp_path_factory, case  # type: ignore[no-untyped-def]
):
    ingestor = _ingestor(tmp_path_factory)
    seed, edits, which = case
    ingest_one(ingestor, mutate(seed, edits), which)


_INGESTORS: dict[int, object] = {}


def _ingestor(factory):  # type: ignore[no-untyped-def]
    # One database for the whole run: hypothesis calls the test once per example.
    key = id(factory)
    if key not in _INGESTORS:
        _INGESTORS[key] = build_ingestor(factory.mktemp("fuzz"))
    return _INGESTORS[key]
