"""The warm command process binds its socket even when serve's data folder does not exist yet
(PostgreSQL, no blob written so far): it used to fail at the bind and be restarted by serve,
with backoff, until something else made the folder."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from mailgate.cli_warm_server import WarmServer


def test_the_socket_is_bound_in_a_data_folder_that_did_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "data" / "cli.sock"
    server = WarmServer(path)
    listener = server._bind()
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(os.fspath(path))  # it listens
    finally:
        listener.close()
        os.close(server.wake_r)
        os.close(server.wake_w)
