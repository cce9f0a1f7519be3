"""The fault barriers (smtp.crashed, deliver.crashed, sender.crashed) promise a traceback."""

from __future__ import annotations

import pytest

from mailgate import logs


@pytest.mark.xfail(
    strict=True,
    reason="mailgate/logs.py:61 passes exc_info by keyword to event(), whose exc_info is "
    "positional-only: it lands in **fields (printed as exc_info=True) and no traceback is logged",
)
def test_error_with_exc_info_logs_the_traceback(capsys: pytest.CaptureFixture[str]):
    logs.setup()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.error("test.crashed", exc_info=True)
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err, err
