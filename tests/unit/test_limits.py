"""core/limits.py: the shape of a message measured on its bytes, before the parser sees them.
The scan must never count fewer MIME entities than the stdlib parser builds (it bounds it), and
must cut nesting at MAX_DEPTH so that the parser never recurses deeper."""

from __future__ import annotations

import email
import time
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core import limits
from tests.fuzz.fuzz_ingest import CPYTHON_SEEDS

DATA = Path(__file__).resolve().parents[1] / "data"
HEAD = b"From: a@client.example\r\nTo: support@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def _entities(msg: Message) -> tuple[int, int]:
    """(entities, deepest level) as the stdlib parser built them, without recursion."""
    count, deepest, stack = 0, 0, [(msg, 0)]
    while stack:
        node, depth = stack.pop()
        count, deepest = count + 1, max(deepest, depth)
        payload = node.get_payload()
        if isinstance(payload, list):
            stack.extend((c, depth + 1) for c in payload if isinstance(c, Message))
    return count, deepest


def _corpus() -> list[Path]:
    files = sorted(CPYTHON_SEEDS.glob("msg_*.txt")) if CPYTHON_SEEDS.is_dir() else []
    return files + sorted(DATA.rglob("*.eml"))


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_the_scan_never_counts_fewer_parts_than_the_parser_builds(path: Path):
    raw = path.read_bytes()
    shape = limits.scan(raw)
    try:
        parsed, depth = _entities(email.message_from_bytes(raw))
    except ValueError:
        return  # the stdlib cannot read it at all (the parse says why); the scan could
    assert shape.parts >= parsed
    assert shape.depth >= depth or shape.depth == limits.MAX_DEPTH + 1


# A MIME tree: a leaf (text or an attached message) or a multipart of children.
_trees = st.recursive(
    st.sampled_from(["text", "rfc822"]),
    lambda kids: st.tuples(st.sampled_from(["mixed", "digest"]), st.lists(kids, max_size=4)),
    max_leaves=40,
)


def _render(tree: object, counter: list[int], digest_child: bool = False) -> bytes:
    counter[0] += 1
    if tree == "text":
        ctype = b"" if digest_child else b"Content-Type: text/plain\r\n"
        return ctype + b"\r\ntext %d\r\n" % counter[0]
    if tree == "rfc822":
        inner = b"From: b@client.example\r\nSubject: inner\r\n\r\nattached\r\n"
        return b"Content-Type: message/rfc822\r\n\r\n" + inner
    kind, children = tree  # type: ignore[misc]
    boundary = b"b%d" % counter[0]
    body = b"".join(
        b"--" + boundary + b"\r\n" + _render(c, counter, kind == "digest") for c in children
    )
    head = b"Content-Type: multipart/%s; boundary=\"%s\"\r\n\r\n" % (kind.encode(), boundary)
    return head + b"preamble\r\n" + body + b"--" + boundary + b"--\r\n"


def _deep(levels: int) -> bytes:
    """`levels` multiparts, each holding the next one and a text part, built without recursion."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="d%d"\r\n\r\n--d%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(
        b"\r\n--d%d\r\n\r\ntext\r\n--d%d--\r\n" % (i, i) for i in range(levels - 1, -1, -1)
    )
    return HEAD + opening + b"Content-Type: text/plain\r\n\r\nbottom" + closing


def _nest(tree: object, levels: int) -> object:
    for _ in range(levels):
        tree = ("mixed", [tree, "text"])
    return tree


@settings(max_examples=150, deadline=None)
@given(tree=_trees, padding=st.integers(0, 30))
def test_the_scan_agrees_with_the_parser_on_generated_structures(tree: object, padding: int):
    raw = HEAD + _render(_nest(tree, padding), [0])
    shape = limits.scan(raw)
    parsed, depth = _entities(email.message_from_bytes(limits.bounded_view(raw)))
    assert shape.parts == parsed
    assert min(shape.depth, limits.MAX_DEPTH) == depth
    assert depth <= limits.MAX_DEPTH


def test_nesting_below_max_depth_becomes_one_opaque_part_and_the_raw_is_untouched():
    raw = _deep(10_000)
    view = limits.bounded_view(raw)
    msg = email.message_from_bytes(view)  # the stdlib alone recurses out at ~300 levels
    assert _entities(msg)[1] == limits.MAX_DEPTH
    cut = [p for p in msg.walk() if p.get_content_type() == limits.TRUNCATED_TYPE]
    assert len(cut) == 1
    assert limits.scan(raw).cuts and raw.count(b"multipart/mixed") == 10_000


def test_over_the_limits():
    with pytest.raises(limits.OverLimit, match="more than 1000 header fields"):
        limits.scan(HEAD + b"X-A: b\r\n" * 997 + b"\r\nbody\r\n")
    limits.scan(HEAD + b"X-A: b\r\n" * 996 + b"\r\nbody\r\n")  # 1,000 fields exactly
    with pytest.raises(limits.OverLimit, match="header block over 1024 KiB"):
        limits.scan(HEAD + b"X-A: b\r\n" + b" folded line of the header\r\n" * 40_000 + b"\r\n")
    wide = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    with pytest.raises(limits.OverLimit, match="more than 1000 MIME parts"):
        limits.scan(wide + b"--b\r\n\r\nx\r\n" * 1000 + b"--b--\r\n")
    assert limits.scan(wide + b"--b\r\n\r\nx\r\n" * 999 + b"--b--\r\n").parts == 1000
    # A part's own header block has the same limits.
    with pytest.raises(limits.OverLimit, match="header fields"):
        limits.scan(wide + b"--b\r\n" + b"X-A: b\r\n" * 1001 + b"\r\nx\r\n--b--\r\n")


def test_repeated_and_outer_boundaries_are_read_as_the_parser_reads_them():
    # "--b" twice in a row makes no empty part; an outer boundary ends the inner multipart.
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b'--o\r\n--o\r\nContent-Type: multipart/mixed; boundary="i"\r\n\r\n'
        b"--i\r\n\r\ninner\r\n--o\r\n\r\nafter\r\n--o--\r\n"
    )
    assert limits.scan(raw).parts == _entities(email.message_from_bytes(raw))[0] == 4


def test_the_100000_part_and_10000_deep_messages_are_measured_in_well_under_a_second():
    wide = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    wide += b"--b\r\n\r\nx\r\n" * 100_000 + b"--b--\r\n"
    deep = _deep(10_000)
    started = time.perf_counter()
    with pytest.raises(limits.OverLimit):
        limits.scan(wide)
    wide_s = time.perf_counter() - started
    started = time.perf_counter()
    limits.bounded_view(deep)
    deep_s = time.perf_counter() - started
    print(f"\nscan: 100,000 parts {wide_s * 1000:.0f} ms, 10,000 deep {deep_s * 1000:.0f} ms")
    assert wide_s < 1 and deep_s < 1
