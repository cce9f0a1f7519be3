"""Big base64 bodies kept out of the MIME parser, so a 25 MB attachment is not held 8 times.

The stdlib parser keeps a body as a list of line strings and joins them, and
`get_payload(decode=True)` splits and joins them again before decoding: a 34 MB base64 body
peaks near 8 times its size. `parse_hollowed` hands the parser (mail-parser and the stdlib stay
the parsers) the message with each long run of base64 lines replaced by one stand-in line that
decodes to a marker. A run is found on the bytes alone: base64 alphabet and line ends only,
from the start of a line, at least `min_bytes` long. Such lines cannot be a boundary, a header
field or the blank line that ends a header block, so the parser sees the same structure.

After the parse, each marker must be the whole decoded payload of exactly one attachment; that
payload is then the run decoded in slices, which equals the stdlib's decoding because only
strict base64 (padding at the very end only) is accepted. Anything else (a marker in a text
body, in a forwarded message or a part cut below the depth limit, base64 the stdlib would
repair) and the mail is parsed again whole, as before: the result never depends on the
shortcut. A sender who writes a marker into the mail can only cause that second parse. One
difference remains: `defects` may lack a CharsetDecodeDefect mail-parser would have found
decoding the big payload as text; no code reads non-structural defects.

`raw` may be an mmap of the stored mail (the parse worker maps the blob rather than reading
it): every slice the scan and the decoding are done with is then dropped from the process's
pages (madvise DONTNEED; the file's pages stay in the page cache), so a 34 MB mail costs the
worker about one slice of memory, not its size. Only the whole-mail parse of the fallback
reads it whole.
"""

from __future__ import annotations

import binascii
import itertools
import mmap
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from mailgate.core.mail import Attachment, BlobRef, InboundMail, synthesize_message_id

MIN_BYTES = 1 << 20  # runs shorter than this are parsed as usual
SLICE = 1 << 18  # bytes scanned or decoded at a time (under glibc's mmap threshold)

_RUN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n"
_OUTSIDE_RUN = re.compile(rb"[^A-Za-z0-9+/=\r\n]+")


@dataclass(frozen=True)
class Run:
    start: int  # the first byte of a line
    end: int  # just after a line end
    marker: bytes  # what the stand-in line decodes to


Store = Callable[[Iterable[bytes]], bytes | BlobRef]
Raw = bytes | mmap.mmap  # the mail, in memory or mapped from its blob


def release(raw: Raw, start: int, stop: int) -> None:
    """Done with raw[start:stop] for now: a mapped file's pages leave the process (a later
    read maps them again from the page cache). Nothing for bytes."""
    if isinstance(raw, mmap.mmap) and stop > start:
        first = start - start % mmap.PAGESIZE
        raw.madvise(mmap.MADV_DONTNEED, first, stop - first)


def whole(raw: Raw) -> bytes:
    """The mail as bytes, for the parser (a mapped one is read once)."""
    return raw if isinstance(raw, bytes) else raw[:]


def join_store(pieces: Iterable[bytes]) -> bytes:
    """Keep a decoded payload in memory (no blob store at hand)."""
    return b"".join(pieces)


def base64_runs(raw: Raw, min_bytes: int = MIN_BYTES) -> list[tuple[int, int]]:
    """(start, end) of each run of whole base64 lines of at least `min_bytes`, leading blank
    lines left out (one may end a header block)."""
    found: list[tuple[int, int]] = []
    if len(raw) < min_bytes:
        return found
    begin = 0
    for gap in itertools.chain(_gaps(raw), [None]):  # lazily: text has millions of gaps
        stop = gap.start() if gap is not None else len(raw)
        if stop - begin >= min_bytes:
            # `begin` follows a byte outside the alphabet, mid-line, unless it is 0.
            start = begin if begin == 0 else raw.find(b"\n", begin, stop) + 1
            while 0 < start < stop and raw[start] in b"\r\n":
                start += 1
            end = raw.rfind(b"\n", start, stop) + 1
            if start > 0 or begin == 0:
                if end - start >= min_bytes:
                    found.append((start, end))
        begin = gap.end() if gap is not None else len(raw)
    return found


def _gaps(raw: Raw) -> Iterator[re.Match[bytes]]:
    """The stretches of bytes outside the runs' alphabet, in order. A slice with none is
    skipped with one C-level translate(), four times faster than the regular expression."""
    for start in range(0, len(raw), SLICE):
        stop = min(start + SLICE, len(raw))
        if raw[start:stop].translate(None, _RUN_BYTES):
            yield from _OUTSIDE_RUN.finditer(raw, start, stop)  # type: ignore[call-overload]
        release(raw, start, stop)


def hollow(raw: Raw, min_bytes: int = MIN_BYTES) -> tuple[bytes, list[Run]]:
    """`raw` with each base64 run replaced by one stand-in line; the runs, with their markers."""
    spans = base64_runs(raw, min_bytes)
    if not spans:
        return whole(raw), []
    pieces: list[bytes] = []
    runs: list[Run] = []
    pos = 0
    for i, (start, end) in enumerate(spans):
        marker = b"mailgate-hollowed-run-%011d" % i  # 33 bytes: base64 without padding
        eol = b"\r\n" if raw[end - 2 : end] == b"\r\n" else b"\n"
        pieces += [raw[pos:start], binascii.b2a_base64(marker, newline=False), eol]
        runs.append(Run(start, end, marker))
        pos = end
    pieces.append(raw[pos:])
    return b"".join(pieces), runs


def decode_run(raw: Raw, run: Run) -> Iterator[bytes]:
    """The run's bytes decoded, slice by slice. ValueError unless the run, line ends removed,
    is strict base64 (padding only at its very end): then this equals what the stdlib's
    `get_payload(decode=True)` gives for the body, and any other case is left to it."""
    carry = b""
    pos = run.start
    while pos < run.end:
        cut = raw.find(b"\n", min(pos + SLICE, run.end) - 1, run.end) + 1 or run.end
        text = carry + raw[pos:cut].translate(None, b"\r\n")
        release(raw, pos, cut)
        pos = cut
        last = pos >= run.end
        keep = len(text) if last else len(text) - len(text) % 4
        text, carry = text[:keep], text[keep:]
        if (not last and b"=" in text) or len(text) % 4:
            raise ValueError("not strict base64")
        try:  # strict: only the alphabet, padding only at the end
            yield binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error as exc:
            raise ValueError(f"not strict base64: {exc}") from exc


def parse_hollowed(
    raw: Raw,
    parse: Callable[[bytes], InboundMail],
    store: Store = join_store,
    min_bytes: int = MIN_BYTES,
) -> InboundMail:
    """parse(raw), with big base64 runs decoded outside the parser into `store` (which may
    keep them as bytes, or write them as blobs and give BlobRefs)."""
    view, runs = hollow(raw, min_bytes)
    if not runs:
        return parse(view)  # `raw` itself, as bytes
    mail = parse(view)  # MailParseError: the same for the whole mail (structure is the same)
    by_marker = {run.marker: run for run in runs}
    matched = [
        by_marker.get(a.payload) if isinstance(a.payload, bytes) else None for a in mail.attachments
    ]
    if sorted(r.start for r in matched if r is not None) != [r.start for r in runs]:
        return parse(whole(raw))  # a marker elsewhere, or twice: the parser saw something else
    attachments: list[Attachment] = []
    try:
        for part, run in zip(mail.attachments, matched, strict=True):
            attachments.append(
                part if run is None else replace(part, payload=store(decode_run(raw, run)))
            )
    except ValueError:
        return parse(whole(raw))
    if mail.message_id_synthesized:  # made from the bytes: from the real ones
        mail = replace(mail, message_id=synthesize_message_id(raw))
        release(raw, 0, len(raw))
    return replace(mail, attachments=tuple(attachments))
