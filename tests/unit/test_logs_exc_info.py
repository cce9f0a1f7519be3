"""The fault barriers (smtp.crashed, deliver.crashed, sender.crashed) promise a traceback."""

from __future__ import annotations

import pytest

from mailgate import logs


def test_error_with_exc_info_logs_the_traceback(capsys: pytest.CaptureFixture[str]):
    logs.setup()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.error("test.crashed", exc_info=True)
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err, err
