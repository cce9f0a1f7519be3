"""Limits checked on the raw bytes before the MIME parser sees them.

The stdlib parser recurses once per nesting level (a 10,000-deep message is a RecursionError)
and builds every part in memory (100,000 parts take seconds), so the shape of a message is
measured first, with regular expressions over the bytes and no recursion:

- a header block (the message's or a part's) over MAX_HEADER_BYTES or MAX_HEADER_FIELDS, or
  more than MAX_PARTS MIME entities within the kept depth: OverLimit, the mail is quarantined;
- nesting deeper than MAX_DEPTH is not an error: `bounded_view` relabels the entity at that
  depth as TRUNCATED_TYPE, so the parser reads it as one opaque leaf and the deeper structure
  stays only in the raw message (which is stored unchanged).

The scan follows the stdlib feedparser's rules (boundary lines, multipart/digest children,
message/* bodies parsed as messages) closely enough to bound it; where it could disagree, the
parse still runs under the caller's deadline.
"""

from __future__ import annotations

import email
import functools
import re
from dataclasses import dataclass

MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_FIELDS = 1000
MAX_DEPTH = 20
MAX_PARTS = 1000
CACHED_FIELD_BYTES = 200  # Content-Type fields up to this long are remembered (256 of them)
TRUNCATED_TYPE = "application/x-mailgate-truncated"

_FIELD = rb"[\x21-\x39\x3b-\x7e]+[ \t]*:"
_EOL = rb"(?:\r\n|\r(?!\n)|\n)"  # one line end, whichever convention
# A whole header block in one C-level match: field lines, continuations, an mbox From_ line.
_HEADER_BLOCK = re.compile(rb"(?:(?:" + _FIELD + rb"|[ \t]|From )[^\r\n]*(?:" + _EOL + rb"|\Z))*+")
_FIELD_START = re.compile(rb"(?<![^\r\n])[^ \t\r\n]")
_CONTENT_TYPE = re.compile(rb"(?<![^\r\n])content-type[ \t]*:", re.IGNORECASE)
_NEXT_FIELD = re.compile(_EOL + rb"(?=[^ \t])")
_BLANK_LINE = re.compile(_EOL)
_DS_BLOCK = re.compile(_EOL + rb"[ \t]*" + _EOL)


class OverLimit(ValueError):
    """The message is over one of the limits; the text says which, for the quarantine."""


@dataclass(frozen=True)
class Shape:
    parts: int  # MIME entities the parser will build, the message itself included
    depth: int  # deepest nesting level seen (MAX_DEPTH + 1 when something was cut)
    cuts: tuple[tuple[int, int, bytes], ...]  # (start, end, replacement) for bounded_view


@dataclass
class _Frame:
    boundary: bytes
    depth: int
    child_type: str  # the default type of a child without Content-Type


@dataclass
class _Entity:
    body: int  # offset where the body starts
    ctype: str
    boundary: bytes | None
    cut: tuple[int, int, bytes] | None


def body_start(raw: bytes) -> int:
    """Where the body begins: just after the first blank line (CRLF or LF), else the end.
    An index, not a split: a 34 MB message is not copied to find its header."""
    crlf = raw.find(b"\r\n\r\n")
    if crlf < 0:
        lf = raw.find(b"\n\n")
        return lf + 2 if lf >= 0 else len(raw)
    # Only a "\n\n" ending before the CRLF one can come first: no need to scan the whole
    # (CRLF) body for one (a "\n\n" search costs ~4 us per 5 KB, and this runs 3 times a mail).
    lf = raw.find(b"\n\n", 0, crlf + 4)
    return lf + 2 if 0 <= lf and lf + 2 < crlf + 4 else crlf + 4


def _header_block(raw: bytes, pos: int, stop: re.Pattern[bytes] | None) -> tuple[int, int]:
    """(end of the header block, start of the body); raises OverLimit. A boundary line of an
    open multipart ends a part's header block, as it does in the parser."""
    end = _HEADER_BLOCK.match(raw, pos).end()  # type: ignore[union-attr]  # *+ always matches
    if stop is not None and (delimiter := stop.search(raw, pos, end)) is not None:
        return delimiter.start(), delimiter.start()
    if end - pos > MAX_HEADER_BYTES:
        raise OverLimit(f"header block over {MAX_HEADER_BYTES // 1024} KiB")
    fields = 0
    for _ in _FIELD_START.finditer(raw, pos, end):
        fields += 1
        if fields > MAX_HEADER_FIELDS:
            raise OverLimit(f"more than {MAX_HEADER_FIELDS} header fields")
    blank = _BLANK_LINE.match(raw, end)  # the empty line between header and body
    return end, blank.end() if blank else end


def _entity(
    raw: bytes, pos: int, default_type: str, cut: bool, stop: re.Pattern[bytes] | None
) -> _Entity:
    end, body = _header_block(raw, pos, stop)
    found = _CONTENT_TYPE.search(raw, pos, end)
    if found is None:
        ctype, boundary, field = default_type, None, (end, end)
    else:
        after = _NEXT_FIELD.search(raw, found.start(), end)
        field = (found.start(), after.start() + len(after.group()) if after else end)
        ctype, boundary = _content_type(raw[field[0] : field[1]], default_type)
    nesting = ctype.startswith("multipart/") or (
        ctype.startswith("message/") and ctype != "message/delivery-status"
    )
    replacement = None
    if cut and nesting:
        eol = b"\r\n" if raw[field[1] - 2 : field[1]] == b"\r\n" else b"\n"
        replacement = (field[0], field[1], b"Content-Type: " + TRUNCATED_TYPE.encode() + eol)
        ctype, boundary = TRUNCATED_TYPE, None
    return _Entity(body, ctype, boundary, replacement)


def _content_type(field: bytes, default_type: str) -> tuple[str, bytes | None]:
    """The parser's own reading of one Content-Type field: the type and boundary it will use.
    Short fields are remembered: most mail repeats a few ("text/plain; charset=utf-8"), and a
    parse of one costs more than the rest of the scan of a small mail."""
    if len(field) <= CACHED_FIELD_BYTES:
        return _cached_content_type(field, default_type)
    return _parsed_content_type(field, default_type)


def _parsed_content_type(field: bytes, default_type: str) -> tuple[str, bytes | None]:
    try:
        parsed = email.message_from_bytes(field.rstrip(b"\r\n") + b"\n\n")
        parsed.set_default_type(default_type)
        ctype = parsed.get_content_type()
        value = parsed.get_boundary() if ctype.startswith("multipart/") else None
    except Exception:  # the stdlib fails on this field (a NUL in an RFC 2231 charset ...):
        return "application/octet-stream", None  # so will the parse proper, with a reason
    return ctype, value.encode("utf-8", "surrogateescape") if value is not None else None


_cached_content_type = functools.lru_cache(maxsize=256)(_parsed_content_type)


def _delimiters(stack: list[_Frame]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(f.boundary) for f in reversed(stack))
    return re.compile(rb"(?<![^\r\n])--(" + alternatives + rb")(--)?[ \t]*(?=\r|\n|\Z)")


def scan(raw: bytes) -> Shape:
    """The message's shape; raises OverLimit."""
    parts, deepest = 1, 0
    cuts: list[tuple[int, int, bytes]] = []
    stack: list[_Frame] = []
    pos, depth, default = 0, 0, "text/plain"
    while True:
        # One entity starts at `pos`: read its header, then go down into it or past it.
        while True:
            deepest = max(deepest, depth)
            stop = _delimiters(stack) if stack else None
            entity = _entity(raw, pos, default, depth >= MAX_DEPTH, stop)
            if entity.cut is not None:
                cuts.append(entity.cut)
                deepest = MAX_DEPTH + 1
            pos = entity.body
            if entity.ctype.startswith("message/") and entity.ctype != "message/delivery-status":
                parts, depth, default = parts + 1, depth + 1, "text/plain"
                if parts > MAX_PARTS:
                    raise OverLimit(f"more than {MAX_PARTS} MIME parts")
                continue  # the body is a message: its header block starts right here
            if entity.ctype == "message/delivery-status":
                # Parsed as a list of header blocks, each one a part one level down.
                parts += sum(1 for _ in _DS_BLOCK.finditer(raw, pos, _next_end(raw, pos, stack)))
                deepest = max(deepest, depth + 1)
            elif entity.ctype.startswith("multipart/") and entity.boundary is not None:
                child = "message/rfc822" if entity.ctype == "multipart/digest" else "text/plain"
                stack.append(_Frame(entity.boundary, depth, child))
            break
        if parts > MAX_PARTS:
            raise OverLimit(f"more than {MAX_PARTS} MIME parts")
        # Find the next boundary line of any open multipart (an outer one ends the inner ones).
        while stack:
            found = _delimiters(stack).search(raw, pos)
            if found is None:
                return Shape(parts, deepest, tuple(cuts))
            level = max(i for i, f in enumerate(stack) if f.boundary == found.group(1))
            del stack[level + 1 :]
            pos = found.end()
            if found.group(2):  # the close delimiter: the multipart is over
                stack.pop()
                continue
            pos = _past_repeats(raw, pos, stack[-1].boundary)
            frame = stack[-1]
            parts, depth, default = parts + 1, frame.depth + 1, frame.child_type
            break
        else:
            return Shape(parts, deepest, tuple(cuts))


def _past_repeats(raw: bytes, pos: int, boundary: bytes) -> int:
    """Past the end of a delimiter line and any boundary lines right after it: the parser
    makes no part out of `--b` twice in a row."""
    again = re.compile(rb"--" + re.escape(boundary) + rb"(?:--)?[ \t]*(?=\r|\n|\Z)")
    while True:
        line_end = _BLANK_LINE.match(raw, pos)
        pos = line_end.end() if line_end else pos
        repeat = again.match(raw, pos)
        if repeat is None:
            return pos
        pos = repeat.end()


def _next_end(raw: bytes, pos: int, stack: list[_Frame]) -> int:
    if not stack:
        return len(raw)
    found = _delimiters(stack).search(raw, pos)
    return found.start() if found else len(raw)


def bounded_view(raw: bytes) -> bytes:
    """What the parser may read: `raw` when within MAX_DEPTH, else with the entities at that
    depth relabelled as opaque leaves. Raises OverLimit."""
    shape = scan(raw)
    if not shape.cuts:
        return raw
    out, last = [], 0
    for start, end, replacement in sorted(shape.cuts):
        out += [raw[last:start], replacement]
        last = end
    out.append(raw[last:])
    return b"".join(out)
