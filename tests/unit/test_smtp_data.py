"""DATA read in runs of lines (adapters/smtp/data.py) gives what reading it a line at a time
gives (RFC 5321 4.5.2: lines end at CRLF, a lone dot ends the data, a leading dot is
dropped), however the bytes arrive, and reads nothing past the lone dot."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.adapters.smtp.data import data_pieces

NEXT_COMMAND = b"RSET\r\nMAIL FROM:<a@b.example>\r\n"


def line_by_line(stream: bytes) -> tuple[bytes, bytes]:
    """(the data, what follows the lone dot): the rule, one CRLF-ended line at a time."""
    kept, start = [], 0
    while True:
        end = stream.index(b"\r\n", start) + 2
        line = stream[start:end]
        start = end
        if line == b".\r\n":
            return b"".join(kept), stream[start:]
        kept.append(line[1:] if line.startswith(b".") else line)


async def read_in(stream: bytes, cuts: list[int], limit: int) -> tuple[bytes, bytes]:
    """data_pieces over `stream` arriving in pieces cut at `cuts`, with a stream buffer of
    `limit` bytes (aiosmtpd's is 1001): (the data, what is left in the stream)."""
    reader = asyncio.StreamReader(limit=limit)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]

    async def arrive() -> None:
        for start, end in itertools.pairwise(bounds):
            reader.feed_data(stream[start:end])
            await asyncio.sleep(0)  # the reader takes what is there so far
        reader.feed_eof()

    feeding = asyncio.create_task(arrive())
    pieces = [piece async for piece in data_pieces(reader)]
    await feeding
    return b"".join(pieces), await reader.read()


async def read_each(
    stream: bytes, cut_lists: list[list[int]], limit: int
) -> list[tuple[bytes, bytes]]:
    """read_in for each list of cuts, in one event loop (one asyncio.run per cut made the
    test of every cut of an 8 KB stream take 20 s)."""
    return [await read_in(stream, cuts, limit) for cuts in cut_lists]


def check(stream: bytes, cuts: list[int], limit: int) -> None:
    assert asyncio.run(read_in(stream, cuts, limit)) == line_by_line(stream)


# Lines made of the bytes that matter: dots, bare CRs and LFs, and some text.
LINES = st.lists(
    st.lists(st.sampled_from([b".", b"\r", b"\n", b"a", b"bc", b"x" * 40]), max_size=12).map(
        b"".join
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(
    lines=LINES,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    limit=st.sampled_from([8, 16, 64, 1001]),
)
def test_any_data_in_any_pieces_reads_as_line_by_line(
    lines: list[bytes], cuts: list[int], limit: int
) -> None:
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + NEXT_COMMAND
    check(stream, cuts, limit)


def test_the_cases_that_need_a_byte_read_alone() -> None:
    for data in [
        b"",  # the lone dot at once
        b"\r\n",  # an empty line, then the dot
        b"\r\n\r\n",
        b".\r\n",  # a line of one dot: unstuffed to an empty line
        b"..\r\n",
        b"\r\r\n",  # a line that is a CR
        b"\r.\r\n",
        b"a\r\n.b\r\n",
        b"a\r\n\r\n.b\r\n",
        b"abc\n.\r\n",  # a bare LF ends no line: ".\r\n" there is text
        b"abc\r.\r\n",
        b"x" * 5000 + b"\r\n",
        b"x" * 5000 + b"\r\n.." + b"y" * 3000 + b"\r\n",
        b"Subject: hi\r\n\r\n.hidden\r\n..two\r\nend\r\n",
    ]:
        stream = data + b".\r\n" + NEXT_COMMAND
        expected = line_by_line(stream)
        for limit in (4, 8, 1001):
            every_cut = [[cut] for cut in range(len(stream) + 1)]
            a_byte_at_a_time = list(range(len(stream)))
            assert asyncio.run(read_each(stream, [*every_cut, a_byte_at_a_time], limit)) == [
                expected
            ] * (len(every_cut) + 1)


def test_a_5kb_mail_in_one_piece_takes_a_few_reads() -> None:
    mail = b"".join(b"Line %d of the mail, dot-free.\r\n" % i for i in range(160))

    async def count() -> int:
        reader = asyncio.StreamReader(limit=1001)
        reader.feed_data(mail + b".\r\n" + NEXT_COMMAND)
        return len([piece async for piece in data_pieces(reader)])

    assert asyncio.run(count()) <= 3
