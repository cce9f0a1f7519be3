"""A local SMTP sink for the benchmarks: where mailgate's outbound mail goes, counted per recipient.

Postfix's `smtp-sink` when it is installed (C, a few microseconds of CPU per mail, so it does not
take the cores mailgate is measured on), else a small asyncio SMTP sink run by this file in a
subprocess (`python bench/sink.py --port P --dump FILE`). Both append every accepted mail to one
dump file, before they answer 250, in smtp-sink's `-D` format:

    X-Client-Addr: 127.0.0.1
    ...
    X-Rcpt-Args: <customer@example.org>        (one line per recipient)
    <the message's header>
    <blank line>
    <body, may be empty>
    <blank line>

`SinkTail` reads that file incrementally and keeps, per recipient, how many mails arrived, the
Message-IDs seen, and per group of recipients when the latest mail was first seen (an upper bound
of its arrival: the dump file's mtime after the read that completed it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SMTP_SINK_PATHS = (
    "/usr/sbin/smtp-sink",
    "/usr/lib/postfix/sbin/smtp-sink",
    "/opt/real-peers/postfix/bin/smtp-sink",  # tools/peers/install-peers.sh unpacks it here
)
RECORD_START = b"X-Client-Addr: "


def find_smtp_sink() -> str | None:
    for path in SMTP_SINK_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("smtp-sink")


def is_listening(port: int) -> bool:
    """True when /proc/net/tcp{,6} shows a socket in LISTEN (0A) on `port` (no probe connection)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            continue
    return False


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# -- reading the dump -----------------------------------------------------------------------


def parse_record(record: bytes) -> tuple[tuple[str, ...], str]:
    head = record.split(b"\n\n", 1)[0]
    rcpts: list[str] = []
    message_id = ""
    for line in head.split(b"\n"):
        if line.startswith(b"X-Rcpt-Args: "):
            rcpts.append(line[13:].split(b" ", 1)[0].strip(b"<>").decode(errors="replace"))
        elif line[:11].lower() == b"message-id:" and not message_id:
            message_id = line[11:].strip().decode(errors="replace")
    return tuple(rcpts), message_id


def _whole(address: str) -> str:
    return address


@dataclass
class SinkTail:
    """Follows the dump. `group` maps a recipient to the group it is counted in (a scenario)."""

    path: Path
    group: Callable[[str], str] = _whole
    offset: int = 0
    pending: bytes = b""
    mails: int = 0
    per_rcpt: Counter[str] = field(default_factory=Counter)
    per_group: Counter[str] = field(default_factory=Counter)
    last_at: dict[str, float] = field(default_factory=dict)  # group -> latest arrival seen
    message_ids: Counter[str] = field(default_factory=Counter)

    def poll(self) -> int:
        """Read what the sink appended since the last call; returns how many mails completed."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
                mtime = os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            return 0
        if not data:
            return 0
        at = min(time.time(), mtime)
        self.offset += len(data)
        buf = self.pending + data
        parts = buf.split(b"\n\n" + RECORD_START)
        # Each part but the last is followed by the next record: complete. The last one is
        # complete when the file ends with its closing blank line (the sinks write a whole
        # record at end-of-data, before the 250).
        if buf.endswith(b"\n\n"):
            done, self.pending = parts, b""
        else:
            done, self.pending = parts[:-1], parts[-1]
        for record in done:
            rcpts, message_id = parse_record(record)
            self.mails += 1
            self.per_rcpt.update(rcpts)
            for rcpt in rcpts:
                name = self.group(rcpt)
                self.per_group[name] += 1
                self.last_at[name] = at
            if message_id:
                self.message_ids[message_id] += 1
        return len(done)


# -- the sink processes ----------------------------------------------------------------------


class Sink:
    """A sink subprocess on 127.0.0.1:port appending to `folder/dump`."""

    def __init__(
        self,
        folder: Path,
        port: int,
        python: str,
        prefer: str = "auto",
        group: Callable[[str], str] = _whole,
    ) -> None:
        self.folder, self.port = folder, port
        self.dump = folder / "dump"
        self.log = folder / "sink.log"
        binary = find_smtp_sink() if prefer in ("auto", "postfix") else None
        if prefer == "postfix" and binary is None:
            where = ", ".join(SMTP_SINK_PATHS)
            raise RuntimeError(f"--sink postfix: smtp-sink not found in {where} or PATH")
        if binary:
            self.kind = f"Postfix smtp-sink ({binary})"
            # As root smtp-sink drops to nobody: the folder and the dump must be writable by it.
            os.chmod(folder, 0o777)
            self.dump.touch(mode=0o666)
            os.chmod(self.dump, 0o666)
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            self.argv = [binary, *user, "-D", str(self.dump), f"127.0.0.1:{port}", "256"]
        else:
            why = "asked for" if prefer == "python" else "smtp-sink not installed"
            self.kind = f"Python asyncio sink (bench/sink.py; {why})"
            self.argv = [python, str(Path(__file__).resolve()), "--port", str(port)]
            self.argv += ["--dump", str(self.dump)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail = SinkTail(self.dump, group)

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not is_listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SMTP sink did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the Python fallback sink ----------------------------------------------------------------


class _SinkSession(asyncio.Protocol):
    """Just enough ESMTP (PIPELINING, 8BITMIME, SMTPUTF8, SIZE) to accept and count mail."""

    def __init__(self, dump_fd: int) -> None:
        self.fd = dump_fd
        self.buf = bytearray()
        self.in_data = False
        self.scanned = 0
        self.rcpts: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 bench-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out: list[bytes] = []
        closing = False
        while not closing:
            if self.in_data:
                if self.buf.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    i = self.buf.find(b"\r\n.\r\n", max(0, self.scanned - 4))
                    if i < 0:
                        self.scanned = len(self.buf)
                        break
                    end, skip = i + 2, i + 5
                self.record(bytes(self.buf[:end]))
                del self.buf[:skip]
                self.in_data, self.scanned, self.rcpts = False, 0, []
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                break
            line = bytes(self.buf[:i])
            del self.buf[: i + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n")
                out.append(b"250-SMTPUTF8\r\n250 SIZE 104857600\r\n")
            elif verb == b"MAIL":
                self.rcpts = []
                out.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                addr = line.split(b":", 1)[1].strip().split(b" ", 1)[0]
                self.rcpts.append(addr.strip(b"<>"))
                out.append(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if self.rcpts:
                    self.in_data, self.scanned = True, 0
                    out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                else:
                    out.append(b"503 5.5.1 Error: need RCPT command\r\n")
            elif verb in (b"HELO", b"RSET", b"NOOP"):
                if verb == b"RSET":
                    self.rcpts = []
                out.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                closing = True
            else:
                out.append(b"502 5.5.2 Error: command not recognized\r\n")
        assert self.transport is not None
        if out:
            self.transport.write(b"".join(out))
        if closing:
            self.transport.close()

    def record(self, data: bytes) -> None:
        """One record in smtp-sink's -D format, header only, written before the 250."""
        head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
        lines = [b"X-Client-Addr: 127.0.0.1"]
        lines += [b"X-Rcpt-Args: <" + r + b">" for r in self.rcpts]
        os.write(self.fd, b"\n".join(lines) + b"\n" + head + b"\n\n\n")


async def _serve(port: int, dump: Path) -> None:
    fd = os.open(dump, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _SinkSession(fd), "127.0.0.1", port, backlog=256)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description="counting SMTP sink (bench fallback)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dump", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.dump))
    return 0


if __name__ == "__main__":
    sys.exit(main())
