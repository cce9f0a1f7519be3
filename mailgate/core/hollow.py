"""Big attachment bodies kept out of the MIME parser, so a 25 MB attachment is not held 8 times.

The stdlib parser keeps a body as a list of line strings and joins them, and
`get_payload(decode=True)` splits and joins them again before decoding: a 34 MB base64 body
peaks near 8 times its size. `parse_hollowed` hands the parser (the stdlib stays the parser)
the message with each long run of base64 lines replaced by one stand-in line that
decodes to a marker. A run is found on the bytes alone: base64 alphabet and line ends only,
from the start of a line, at least `min_bytes` long. Such lines cannot be a boundary, a header
field or the blank line that ends a header block, so the parser sees the same structure.

After the parse, each marker must be the whole decoded payload of exactly one attachment; that
payload is then the run decoded in slices, which equals the stdlib's decoding because only
strict base64 (padding at the very end only) is accepted. Anything else (a marker in a text
body, in a forwarded message or a part cut below the depth limit, base64 the stdlib would
repair) and the mail is parsed again whole, as before: the result never depends on the
shortcut. A sender who writes a marker into the mail can only cause that second parse.

The same for a big attachment sent as it is (7bit, 8bit, binary: a log file) or
quoted-printable, where the bytes alone do not tell body from structure: a text run is a
whole part body, from the blank line after a boundary line to the next boundary line, where
a boundary line is "--" and any boundary a Content-Type field of the mail declares (read by
the stdlib: a superset of the parser's boundaries, so no line inside a run can be one; a bare
CR, where the parser would start a line, is refused while decoding). Its stand-in line
carries "=3D": given back as it is, the part was not encoded; given back with "=", it was
quoted-printable, decoded a line at a time as quopri does; both are checked against the
Content-Transfer-Encoding the parser read (`Attachment.transfer_encoding`). If the parse with
text runs does not match, or fails, the base64 runs alone are tried, then the whole mail.

`raw` may be an mmap of the stored mail (the parse worker maps the blob rather than reading
it): every slice the scan and the decoding are done with is then dropped from the process's
pages (madvise DONTNEED; the file's pages stay in the page cache), so a 34 MB mail costs the
worker about one slice of memory, not its size. Only the whole-mail parse of the fallback
reads it whole.
"""

from __future__ import annotations

import binascii
import email
import itertools
import mmap
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from mailgate.core.limits import MAX_HEADER_BYTES
from mailgate.core.mail import (
    Attachment,
    BlobRef,
    InboundMail,
    MailParseError,
    synthesize_message_id,
)

MIN_BYTES = 1 << 20  # runs shorter than this are parsed as usual
MAX_CONTENT_TYPES = 10_000  # more Content-Type fields than this: no text runs
MAX_BOUNDARY = 1000  # longer boundaries are only compared on their start (a superset)
FIELD_REACH = 4096  # a field name ends at its colon: well within this of its start
# The transfer encodings the stdlib decodes (any other: the body as it is).
DECODED = frozenset({"base64", "quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"})
_CONTENT_TYPE = re.compile(rb"(?<![^\r\n])content-type[ \t]*:", re.IGNORECASE)
_NEXT_FIELD = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?=[^ \t])")
SLICE = 1 << 18  # bytes scanned or decoded at a time (under glibc's mmap threshold)

_RUN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n"
_OUTSIDE_RUN = re.compile(rb"[^A-Za-z0-9+/=\r\n]+")


@dataclass(frozen=True)
class Run:
    start: int  # the first byte of a line
    end: int  # just after a line end
    marker: bytes  # what the stand-in line decodes to (base64), or the stand-in line (text)
    kind: str = "base64"  # or "text": a whole part body, sent 7bit/8bit or quoted-printable


Store = Callable[[Iterable[bytes]], bytes | BlobRef]
Raw = bytes | mmap.mmap  # the mail, in memory or mapped from its blob


def release(raw: Raw, stop: int) -> None:
    """Done with raw[:stop] for now: a mapped file's pages leave the process (a later read
    maps them again from the page cache). Everything before `stop`, not only the last slice:
    a read just behind a slice (a look-behind, a find from start - 1) maps again the whole
    large folio around it, pages already let go included. Nothing for bytes."""
    if isinstance(raw, mmap.mmap) and stop > 0:
        raw.madvise(mmap.MADV_DONTNEED, 0, min(stop, len(raw)))


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
        release(raw, stop)


def text_runs(
    raw: Raw, min_bytes: int = MIN_BYTES, taken: Sequence[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """(start, end) of each big part body that is not a base64 run (`taken`): from just after
    the first blank line following a boundary line (or the message's start) to the next
    one. A boundary line here is any line made of "--" and a boundary some Content-Type field
    of the mail declares (a superset of the parser's); no line inside a run can be one, and a
    bare CR, after which the parser would start a line, is refused when it is decoded. That
    the parser saw each run as one attachment's whole body is checked after the parse."""
    found: list[tuple[int, int]] = []
    if len(raw) < min_bytes:
        return found
    boundaries = _boundaries(raw)
    if boundaries is None:
        return found
    begin = 0
    for stop in itertools.chain(_boundary_lines(raw, boundaries), [len(raw)]):
        if stop - begin >= min_bytes:
            head_end = min(stop, begin + 2 * MAX_HEADER_BYTES)  # a longer header is refused
            blanks = [raw.find(eol, begin, head_end) for eol in (b"\n\r\n", b"\n\n")]
            release(raw, head_end)
            blank = min((b + 1 for b in blanks if b >= 0), default=-1)
            if blank > 0:
                start = blank + (2 if raw[blank : blank + 2] == b"\r\n" else 1)
                overlaps = any(s < stop and start < e for s, e in taken)
                if stop - start >= min_bytes and raw[stop - 1] == 10 and not overlaps:
                    found.append((start, stop))
        begin = stop
    return found


def _boundaries(raw: Raw) -> set[bytes] | None:
    """The boundary of every Content-Type field in the mail, read by the stdlib as the parser
    reads it; None if there are too many fields to read them all."""
    found: set[bytes] = set()
    fields = 0
    for start in range(0, len(raw), SLICE):
        stop = min(start + SLICE, len(raw))
        # A field name ends at its colon (the parser's rule), so a field that starts in this
        # slice ends its name within FIELD_REACH bytes past it.
        reach = min(stop + FIELD_REACH, len(raw))
        for field in _CONTENT_TYPE.finditer(raw, start, reach):  # type: ignore[call-overload]
            if field.start() >= stop:
                break
            fields += 1
            if fields > MAX_CONTENT_TYPES:
                return None
            after = _NEXT_FIELD.search(raw, field.end())
            value = raw[field.start() : after.start() if after else len(raw)]
            try:
                boundary = email.message_from_bytes(value + b"\n\n").get_boundary()
            except Exception:  # the parser fails on it too: the mail is parsed whole
                return None
            if boundary is not None:
                found.add(boundary.encode("utf-8", "surrogateescape"))
        release(raw, stop)
    return found


def _boundary_lines(raw: Raw, boundaries: set[bytes]) -> Iterator[int]:
    """The start of every line made of "--" and one of `boundaries` (and maybe more), in
    order."""
    for start in range(0, len(raw), SLICE):
        stop = min(start + SLICE, len(raw))
        # "\n--" at pos in [start - 1, stop - 2]: the line starts in this slice.
        pos = raw.find(b"\n--", max(start - 1, 0), stop + 1)
        while pos >= 0:
            line = raw[pos + 3 : pos + 3 + MAX_BOUNDARY]
            if any(line.startswith(b[:MAX_BOUNDARY]) for b in boundaries):
                yield pos + 1
            pos = raw.find(b"\n--", pos + 1, stop + 1)
        release(raw, stop)


def hollow(raw: Raw, min_bytes: int = MIN_BYTES, text: bool = False) -> tuple[bytes, list[Run]]:
    """`raw` with each base64 run (and, with `text`, each other big part body) replaced by
    one stand-in line; the runs, with their markers."""
    spans = [(start, end, "base64") for start, end in base64_runs(raw, min_bytes)]
    if text:
        taken = [(start, end) for start, end, _ in spans]
        spans = sorted(spans + [(s, e, "text") for s, e in text_runs(raw, min_bytes, taken)])
    if not spans:
        return whole(raw), []
    pieces: list[bytes] = []
    runs: list[Run] = []
    pos = 0
    for i, (start, end, kind) in enumerate(spans):
        eol = b"\r\n" if raw[end - 2 : end] == b"\r\n" else b"\n"
        if kind == "base64":
            marker = b"mailgate-hollowed-run-%011d" % i  # 33 bytes: base64 without padding
            standin = binascii.b2a_base64(marker, newline=False)
        else:  # the body as the parser gives it back: "=3D" tells quoted-printable apart
            marker = standin = b"mailgate-hollowed-txt-%011d=3D" % i
        pieces += [raw[pos:start], standin, eol]
        runs.append(Run(start, end, marker, kind))
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
        release(raw, cut)
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


def decode_text(raw: Raw, run: Run, quoted_printable: bool) -> Iterator[bytes]:
    """A text run as the stdlib's `get_payload(decode=True)` gives its part's body: the line
    end before the boundary left out, then as it is (7bit, 8bit, binary) or quoted-printable
    decoded (what quopri does, a line at a time). ValueError on a bare CR: the parser ends a
    line there, so a boundary could have hidden behind it."""
    end = run.end - (2 if raw[run.end - 2 : run.end] == b"\r\n" else 1)
    pos = run.start
    while pos < end:
        cut = raw.find(b"\n", min(pos + SLICE, end) - 1, end) + 1 or end
        piece = raw[pos:cut]
        release(raw, cut)
        if b"\r" in piece.replace(b"\r\n", b""):
            raise ValueError("a bare CR")
        pos = cut
        yield binascii.a2b_qp(piece) if quoted_printable else piece


def parse_hollowed(
    raw: Raw,
    parse: Callable[[bytes], InboundMail],
    store: Store = join_store,
    min_bytes: int = MIN_BYTES,
) -> InboundMail:
    """parse(raw), with big base64 runs and big 7bit/8bit/quoted-printable attachment bodies
    decoded outside the parser into `store` (which may keep them as bytes, or write them as
    blobs and give BlobRefs)."""
    try:
        mail = _shortcut(raw, parse, store, min_bytes, text=True)
    except MailParseError:
        mail = None  # perhaps the text runs' doing: the base64 runs alone say for sure
    if mail is None:
        mail = _shortcut(raw, parse, store, min_bytes, text=False)
    return mail if mail is not None else parse(whole(raw))


def _shortcut(
    raw: Raw,
    parse: Callable[[bytes], InboundMail],
    store: Store,
    min_bytes: int,
    text: bool,
) -> InboundMail | None:
    """The mail parsed with its runs hollowed out, or None when the parser did not see each
    run as one attachment's whole body (or a run does not decode as the stdlib would)."""
    view, runs = hollow(raw, min_bytes, text)
    if not runs:
        if text:
            return None  # the base64 pass below parses it
        return parse(view)  # `raw` itself, as bytes
    if text and all(run.kind == "base64" for run in runs):
        return None  # the same as the base64 pass
    mail = parse(view)  # MailParseError: the same for the whole mail (structure is the same)
    expected: dict[tuple[bytes, str], Run] = {}
    for run in runs:
        if run.kind == "base64":
            expected[run.marker, "base64"] = run
        else:  # "=3D" in the stand-in: quoted-printable gives "=", the rest as it is
            expected[run.marker[:-3] + b"=", "quoted-printable"] = run
            expected[run.marker, ""] = run
    matched: list[tuple[Run, str] | None] = []
    for a in mail.attachments:
        how = a.transfer_encoding if a.transfer_encoding in DECODED else ""
        run = expected.get((a.payload, how)) if isinstance(a.payload, bytes) else None
        matched.append(None if run is None else (run, how))
    if sorted(m[0].start for m in matched if m is not None) != [r.start for r in runs]:
        return None  # a marker elsewhere, or twice: the parser saw something else
    attachments: list[Attachment] = []
    try:
        for part, found in zip(mail.attachments, matched, strict=True):
            if found is None:
                attachments.append(part)
                continue
            run, how = found
            if how == "base64":
                pieces = decode_run(raw, run)  # strict base64: as the stdlib, or ValueError
            else:
                pieces = decode_text(raw, run, how == "quoted-printable")
            attachments.append(replace(part, payload=store(pieces)))
    except ValueError:
        return None
    if mail.message_id_synthesized:  # made from the bytes: from the real ones
        mail = replace(mail, message_id=synthesize_message_id(raw))
        release(raw, len(raw))
    return replace(mail, attachments=tuple(attachments))
