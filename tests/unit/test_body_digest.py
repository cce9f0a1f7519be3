"""services/ingest.py body_digest: hashed a slice at a time, it must equal the digest of the
whole body normalised at once (the dedupe key of every mail ever received depends on it)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.services.ingest import body_digest, count_received


def reference(raw: bytes) -> str:
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    cut = min((i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0), default=len(raw))
    return hashlib.sha256(raw[cut:].replace(b"\r\n", b"\n").rstrip()).hexdigest()


PIECES = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b" ", b"\t", b"a", b"\xe9", b"."]))


@settings(max_examples=400)
@given(head=PIECES, body=PIECES, slice_bytes=st.integers(1, 9))
def test_sliced_digest_equals_the_whole_one(head: list[bytes], body: list[bytes], slice_bytes: int):
    raw = b"".join(head) + b"\r\n\r\n" + b"".join(body)
    assert body_digest(raw, slice_bytes) == reference(raw)
    assert body_digest(b"".join(body), slice_bytes) == reference(b"".join(body))


@pytest.mark.parametrize("slice_bytes", [1, 2, 3, 7, 1 << 20])
def test_a_crlf_across_a_slice_edge_is_one_line_end(slice_bytes: int):
    raw = b"Subject: x\r\n\r\nline one\r\nline two\r\n\r\n \r\n"
    assert body_digest(raw, slice_bytes) == reference(raw)


def test_received_lines_are_counted_in_the_header_only():
    raw = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n"
    assert count_received(raw) == 2
    assert count_received(b"Received: a\n\nReceived: body\n") == 1
