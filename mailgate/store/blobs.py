"""Raw mail and attachments, stored by the sha256 of their bytes.

Names from a mail never touch the file system: the path is derived from the hash only.
Writes go to a temporary file, are fsync'd, renamed into place and the folder fsync'd, so a
blob that exists is complete, and a 250 said after `put` survives a power cut.

Big payloads need not be in memory whole: `writer()` takes them piece by piece (the parse
worker decodes a 25 MB attachment into one), and `put` of a `BlobRef` (a blob written so) only
checks that it is there. `spool()` is scratch space on the same disk for a DATA too big to
hold in memory while it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from mailgate.core.mail import BlobRef
from mailgate.errors import TempFailure

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SPOOL_BUFFER = 1 << 20  # write a spooled DATA in 1 MiB system calls, not 8 KiB ones


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes | BlobRef) -> str:
        """Store `data`; its digest. A BlobRef is already stored: it is only checked."""
        if isinstance(data, BlobRef):
            if not self.path(data.sha256).exists():  # removed since the worker wrote it
                raise TempFailure("blob store: a blob written while parsing is missing")
            return data.sha256
        digest = hashlib.sha256(data).hexdigest()
        if self.path(digest).exists():
            return digest
        with self.writer() as writer:
            writer.write(data)
            return writer.commit().sha256

    def writer(self) -> BlobWriter:
        """A blob written piece by piece: `with store.writer() as w: w.write(...); w.commit()`.
        Left without commit() (an exception), nothing is stored."""
        return BlobWriter(self)

    def spool(self) -> IO[bytes]:
        """An unnamed temporary file next to the blobs (O_TMPFILE: nothing is left behind,
        even by a crash), buffered for large writes."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return tempfile.TemporaryFile(dir=self.root, buffering=SPOOL_BUFFER)
        except OSError as exc:
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()


class BlobWriter:
    """A temporary file in the store's root, hashed as it is written; commit() fsyncs it and
    renames it to its digest's path (unless that blob exists: then it is dropped)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.size = 0
        self._hash = hashlib.sha256()
        self._tmp = ""
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> BlobWriter:
        try:
            self.store.root.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=self.store.root, prefix=".tmp-")
        except OSError as exc:  # disk full, read-only, permissions: try again later
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc
        self._fh = os.fdopen(fd, "wb")
        return self

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "use BlobWriter in a with block"
        self._hash.update(data)
        self.size += len(data)
        try:
            self._fh.write(data)
        except OSError as exc:
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc

    def commit(self) -> BlobRef:
        assert self._fh is not None, "use BlobWriter in a with block"
        digest = self._hash.hexdigest()
        target = self.store.path(digest)
        fh, self._fh = self._fh, None
        try:
            if target.exists():
                fh.close()
                os.unlink(self._tmp)
            else:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._tmp, target)
                _fsync_dir(target.parent)
        except OSError as exc:  # disk full, read-only, permissions: try again later
            fh.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            raise TempFailure(f"blob store: {exc.strerror or exc}") from exc
        self._tmp = ""
        return BlobRef(digest, self.size)

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = ""


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
